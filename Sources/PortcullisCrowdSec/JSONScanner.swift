// SPDX-License-Identifier: Apache-2.0

/// Steps through JSON text in place (RFC 8259's grammar), checking its syntax: what reads a large
/// Local API answer without building a tree of it.
struct JSONScanner {
    let bytes: UnsafeBufferPointer<UInt8>
    var index: Int
    /// Nesting deeper than this is refused (as Foundation's parser does).
    static let maximumDepth = 512

    init(bytes: UnsafeBufferPointer<UInt8>, index: Int = 0) {
        self.bytes = bytes
        self.index = index
    }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// Only white space is left.
    var atEnd: Bool {
        mutating get {
            skipSpace()
            return index == bytes.count
        }
    }

    /// Steps over `byte` if it is next.
    mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    /// Steps over one value. - Returns: false when none begins here, or it is not JSON.
    mutating func skipValue(depth: Int = 0) -> Bool {
        guard let first = peek, depth < Self.maximumDepth else { return false }
        switch first {
        case UInt8(ascii: "\""): return skipString() != nil
        case UInt8(ascii: "["): return skipArray(depth: depth) != nil
        case UInt8(ascii: "{"): return skipObject(depth: depth)
        case UInt8(ascii: "t"): return skipWord("true")
        case UInt8(ascii: "f"): return skipWord("false")
        case UInt8(ascii: "n"): return skipWord("null")
        default: return skipNumber()
        }
    }

    /// Whether the value from `start` to here is `null`.
    func wasNull(from start: Int) -> Bool { index - start == 4 && bytes[start] == UInt8(ascii: "n") }

    /// Steps over a string. - Returns: its range, quotes included; nil when none is here or it is not JSON.
    mutating func skipString() -> Range<Int>? {
        let start = index
        guard take(UInt8(ascii: "\"")) else { return nil }
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""): return start..<index
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { return nil }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    continue
                case UInt8(ascii: "u"):
                    guard index + 4 <= bytes.count, (0..<4).allSatisfy({ Self.hex(bytes[index + $0]) != nil }) else {
                        return nil
                    }
                    index += 4
                default: return nil
                }
            case 0..<0x20: return nil
            default: continue
            }
        }
        return nil
    }

    /// Steps over an array. - Returns: its elements; nil when it is not JSON.
    mutating func skipArray(depth: Int = 0) -> Int? {
        guard take(UInt8(ascii: "[")) else { return nil }
        skipSpace()
        if take(UInt8(ascii: "]")) { return 0 }
        var count = 0
        while true {
            skipSpace()
            guard skipValue(depth: depth + 1) else { return nil }
            count += 1
            skipSpace()
            if take(UInt8(ascii: "]")) { return count }
            guard take(UInt8(ascii: ",")) else { return nil }
        }
    }

    private mutating func skipObject(depth: Int) -> Bool {
        guard take(UInt8(ascii: "{")) else { return false }
        skipSpace()
        if take(UInt8(ascii: "}")) { return true }
        while true {
            skipSpace()
            guard skipString() != nil else { return false }
            skipSpace()
            guard take(UInt8(ascii: ":")) else { return false }
            skipSpace()
            guard skipValue(depth: depth + 1) else { return false }
            skipSpace()
            if take(UInt8(ascii: "}")) { return true }
            guard take(UInt8(ascii: ",")) else { return false }
        }
    }

    private mutating func skipWord(_ word: StaticString) -> Bool {
        let matches = word.withUTF8Buffer { word in
            index + word.count <= bytes.count && (0..<word.count).allSatisfy { bytes[index + $0] == word[$0] }
        }
        if matches { index += word.utf8CodeUnitCount }
        return matches
    }

    /// `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`
    private mutating func skipNumber() -> Bool {
        func digits() -> Int {
            let start = index
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
            return index - start
        }
        _ = take(UInt8(ascii: "-"))
        if take(UInt8(ascii: "0")) {
            // No digits after a leading zero.
        } else {
            guard digits() > 0 else { return false }
        }
        if take(UInt8(ascii: ".")) { guard digits() > 0 else { return false } }
        if take(UInt8(ascii: "e")) || take(UInt8(ascii: "E")) {
            if !take(UInt8(ascii: "+")) { _ = take(UInt8(ascii: "-")) }
            guard digits() > 0 else { return false }
        }
        return true
    }

    func slice(_ from: Int, _ to: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(rebasing: bytes[from..<to])
    }

    /// The text of a string whose syntax was checked (`range` with its quotes), escapes read.
    func text(_ range: Range<Int>) -> String {
        let raw = slice(range.lowerBound + 1, range.upperBound - 1)
        guard raw.contains(UInt8(ascii: "\\")) else { return String(decoding: raw, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var index = 0
        func unit(at index: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 << 4 | UInt32(Self.hex(raw[index + $1]) ?? 0) }
        }
        while index < raw.count {
            let byte = raw[index]
            index += 1
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                continue
            }
            let escaped = raw[index]
            index += 1
            switch escaped {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = unit(at: index)
                index += 4
                // A surrogate pair: \uD8xx\uDCxx.
                if (0xD800..<0xDC00).contains(scalar), index + 6 <= raw.count, raw[index] == UInt8(ascii: "\\"),
                    raw[index + 1] == UInt8(ascii: "u")
                {
                    let low = unit(at: index + 2)
                    if (0xDC00..<0xE000).contains(low) {
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    }
                }
                out += String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8
            default: out.append(escaped)  // " \ /
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}
