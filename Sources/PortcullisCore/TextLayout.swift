// SPDX-License-Identifier: Apache-2.0
extension String {
    /// The string right-aligned in `width` columns (tables of counters).
    public func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }

    /// The string in exactly `width` columns, left-aligned: padded with spaces, or cut (as
    /// Foundation's `padding(toLength:withPad:startingAt:)` with a space does).
    public func padded(to width: Int) -> String {
        count >= width ? String(prefix(width)) : self + String(repeating: " ", count: width - count)
    }
}

extension String {
    /// A 64-bit tag of the text that is the same in every process and build (FNV-1a; Swift's
    /// `hashValue` is seeded per process): for names kept in shared memory and file names.
    public var stableTag: UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return hash
    }
}

/// Text written into raw buffers without allocating (the ban log's lines, `list --json`'s rows).
public enum RawText {
    /// Writes `value` in decimal at `destination` (room for 20 bytes). - Returns: its length.
    @inlinable
    public static func writeDecimal(_ value: UInt64, into destination: UnsafeMutableRawPointer) -> Int {
        var digits = 1
        var rest = value
        while rest >= 10 {
            rest /= 10
            digits += 1
        }
        rest = value
        for position in stride(from: digits - 1, through: 0, by: -1) {
            destination.storeBytes(of: UInt8(ascii: "0") + UInt8(rest % 10), toByteOffset: position, as: UInt8.self)
            rest /= 10
        }
        return digits
    }
}
