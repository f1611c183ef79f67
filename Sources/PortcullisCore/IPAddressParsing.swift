// SPDX-License-Identifier: Apache-2.0
/// Parsing address text without allocating, accepting exactly what glibc's `inet_pton` accepts
/// (IPv4 first, then IPv6): dotted quads without leading zeros; IPv6 groups of 1-4 hex digits, one
/// `::`, an optional dotted-quad tail. Zone ids (`%eth0`), prefixes and surrounding text are not
/// addresses.
extension IPAddress {
    /// Parses any textual form `inet_pton` accepts; nil for anything else.
    public init?(_ text: String) {
        var text = text
        var address = IPAddress(high: 0, low: 0)
        let parsed = text.withUTF8 { utf8 in
            guard let base = utf8.baseAddress else { return false }
            return Self.parse(base, count: utf8.count, into: &address)
        }
        guard parsed else { return nil }
        self = address
    }

    /// Parses `count` bytes at `text`. - Returns: false when they are not an address.
    @inlinable
    public static func parse(_ text: UnsafePointer<UInt8>, count: Int, into key: inout IPAddress) -> Bool {
        if count == 0 || count > 45 { return false }
        var v4: UInt32 = 0
        if parseIPv4(text, count: count, into: &v4) {
            key = IPAddress(ipv4NetworkOrder: v4)
            return true
        }
        return parseIPv6(text, count: count, into: &key)
    }

    /// Parses a dotted quad. `value` receives the 4 bytes in memory (network) order.
    @inlinable
    static func parseIPv4(_ text: UnsafePointer<UInt8>, count: Int, into value: inout UInt32) -> Bool {
        var octets = 0
        var current: UInt32 = 0
        var digits = 0
        var result: UInt32 = 0
        var index = 0
        while index < count {
            let character = text[index]
            index += 1
            if character &- 48 < 10 {
                if digits > 0 && current == 0 { return false }  // leading zero
                current = current * 10 + UInt32(character &- 48)
                if current > 255 { return false }
                digits += 1
            } else if character == 46 {  // '.'
                if digits == 0 || octets == 3 { return false }
                result |= current << (8 * UInt32(octets))
                octets += 1
                current = 0
                digits = 0
            } else {
                return false
            }
        }
        if digits == 0 || octets != 3 { return false }
        value = result | current << 24
        return true
    }

    @inlinable
    static func hexValue(_ character: UInt8) -> Int {
        if character &- 48 < 10 { return Int(character &- 48) }
        let lower = character | 0x20
        if lower &- 97 < 6 { return Int(lower &- 87) }
        return -1
    }

    /// inet_pton6's algorithm (as in glibc), over an explicit length.
    @inlinable
    static func parseIPv6(_ text: UnsafePointer<UInt8>, count: Int, into key: inout IPAddress) -> Bool {
        var bytes: (UInt64, UInt64) = (0, 0)
        let parsed = withUnsafeMutableBytes(of: &bytes) { out -> Bool in
            var position = 0  // next byte of `out` to fill
            var compression = -1  // where "::" stood
            var index = 0
            if text[0] == 58 {  // ':' must start "::"
                if count < 2 || text[1] != 58 { return false }
                index = 1
            }
            var tokenStart = index
            var sawDigit = false
            var digits = 0
            var value = 0
            while index < count {
                let character = text[index]
                index += 1
                let digit = hexValue(character)
                if digit >= 0 {
                    value = value << 4 | digit
                    digits += 1
                    if digits > 4 { return false }
                    sawDigit = true
                    continue
                }
                if character == 58 {  // ':'
                    tokenStart = index
                    if !sawDigit {
                        if compression >= 0 { return false }
                        compression = position
                        continue
                    }
                    if index == count { return false }  // a trailing single ':'
                    if position + 2 > 16 { return false }
                    out[position] = UInt8(value >> 8)
                    out[position + 1] = UInt8(value & 0xff)
                    position += 2
                    sawDigit = false
                    digits = 0
                    value = 0
                    continue
                }
                if character == 46 && position + 4 <= 16 {  // '.': a dotted-quad tail
                    var v4: UInt32 = 0
                    guard parseIPv4(text + tokenStart, count: count - tokenStart, into: &v4) else { return false }
                    Swift.withUnsafeBytes(of: v4) { quad in for byte in 0..<4 { out[position + byte] = quad[byte] } }
                    position += 4
                    sawDigit = false
                    index = count
                    break
                }
                return false
            }
            if sawDigit {
                if position + 2 > 16 { return false }
                out[position] = UInt8(value >> 8)
                out[position + 1] = UInt8(value & 0xff)
                position += 2
            }
            if compression >= 0 {
                if position == 16 { return false }  // "::" must stand for at least one group
                let moved = position - compression
                for offset in stride(from: moved - 1, through: 0, by: -1) {
                    out[16 - moved + offset] = out[compression + offset]
                    out[compression + offset] = 0
                }
                position = 16
            }
            return position == 16
        }
        if parsed { key = IPAddress(high: bytes.0, low: bytes.1) }
        return parsed
    }
}

/// Formatting, as glibc's `inet_ntop` does: IPv4 as a dotted quad; IPv6 in lower-case hex with the
/// longest run of two or more zero groups (the first of equal runs) as `::`, and `::a.b.c.d` for an
/// IPv4-compatible address.
extension IPAddress {
    /// The longest text an address formats to (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
    public static let maximumTextLength = 45

    /// The canonical text.
    public var description: String {
        String(unsafeUninitializedCapacity: Self.maximumTextLength) { buffer in
            write(into: UnsafeMutableRawPointer(buffer.baseAddress!))
        }
    }

    /// Writes the canonical text at `destination` (room for `maximumTextLength` bytes) without
    /// allocating. - Returns: its length.
    public func write(into destination: UnsafeMutableRawPointer) -> Int {
        let text = destination.assumingMemoryBound(to: UInt8.self)
        if isIPv4 { return Self.writeIPv4(ipv4NetworkOrder, into: text) }
        var words: (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) = (0, 0, 0, 0, 0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &words) { raw in
            raw.storeBytes(of: high, as: UInt64.self)
            raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
        }
        return Swift.withUnsafeBytes(of: &words) { raw -> Int in
            let word = { (index: Int) in
                UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
            }
            var bestStart = -1, bestLength = 0, runStart = -1
            for index in 0...8 {
                if index < 8 && word(index) == 0 {
                    if runStart < 0 { runStart = index }
                } else if runStart >= 0 {
                    if index - runStart > bestLength { (bestStart, bestLength) = (runStart, index - runStart) }
                    runStart = -1
                }
            }
            if bestLength < 2 { bestStart = -1 }
            var length = 0
            var index = 0
            while index < 8 {
                if index == bestStart {
                    text[length] = UInt8(ascii: ":")
                    length += 1
                    index += bestLength
                    if index == 8 {
                        text[length] = UInt8(ascii: ":")
                        length += 1
                    }
                    continue
                }
                if index != 0 {
                    text[length] = UInt8(ascii: ":")
                    length += 1
                }
                if index == 6 && bestStart == 0 && (bestLength == 6 || (bestLength == 5 && word(5) == 0xffff)) {
                    return length
                        + Self.writeIPv4(raw.loadUnaligned(fromByteOffset: 12, as: UInt32.self), into: text + length)
                }
                length += Self.writeHex(word(index), into: text + length)
                index += 1
            }
            return length
        }
    }

    private static func writeIPv4(_ value: UInt32, into text: UnsafeMutablePointer<UInt8>) -> Int {
        var length = 0
        for octet in 0..<4 {
            if octet > 0 {
                text[length] = UInt8(ascii: ".")
                length += 1
            }
            let byte = UInt8(truncatingIfNeeded: value >> (8 * UInt32(octet)))
            if byte >= 100 {
                text[length] = 48 + byte / 100
                length += 1
            }
            if byte >= 10 {
                text[length] = 48 + byte / 10 % 10
                length += 1
            }
            text[length] = 48 + byte % 10
            length += 1
        }
        return length
    }

    private static func writeHex(_ value: UInt16, into text: UnsafeMutablePointer<UInt8>) -> Int {
        let digits = value >= 0x1000 ? 4 : value >= 0x100 ? 3 : value >= 0x10 ? 2 : 1
        for position in 0..<digits {
            let nibble = UInt8(truncatingIfNeeded: value >> (4 * UInt16(digits - 1 - position))) & 0xf
            text[position] = nibble < 10 ? 48 + nibble : 87 + nibble
        }
        return digits
    }
}
