/// Parses IPv4 and IPv6 address text into an `AddressKey` without allocating, accepting exactly
/// what glibc's `inet_pton` accepts (IPv4 first, then IPv6): dotted quads without leading zeros;
/// IPv6 groups of 1-4 hex digits, one `::`, an optional dotted-quad tail. Zone ids (`%eth0`),
/// prefixes and surrounding text are not addresses.
public enum AddressParser {
    /// Parses `count` bytes at `text`. - Returns: false when they are not an address.
    @inlinable
    public static func parse(_ text: UnsafePointer<UInt8>, count: Int, into key: inout AddressKey) -> Bool {
        if count == 0 || count > 45 { return false }
        var v4: UInt32 = 0
        if parseIPv4(text, count: count, into: &v4) {
            key = AddressKey(high: 0, low: UInt64(0xffff_0000) | UInt64(v4) << 32)
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
    static func parseIPv6(_ text: UnsafePointer<UInt8>, count: Int, into key: inout AddressKey) -> Bool {
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
                    withUnsafeBytes(of: v4) { quad in for byte in 0..<4 { out[position + byte] = quad[byte] } }
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
        if parsed { key = AddressKey(high: bytes.0, low: bytes.1) }
        return parsed
    }
}
