extension String {
    /// The string right-aligned in `width` columns (tables of counters).
    public func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
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
