// SPDX-License-Identifier: Apache-2.0
/// An IPv4 or IPv6 address: the one address type of Portcullis, used by the offence table, the
/// allowlist, the ban maps and the tools.
///
/// Held as 16 bytes in network order; IPv4 as the IPv4-mapped IPv6 address `::ffff:a.b.c.d`, so
/// `198.18.0.1` and `::ffff:198.18.0.1` are one client (packets from such a client arrive as IPv4,
/// and that is the map the XDP program looks in). `high` and `low` are bytes 0-7 and 8-15 as they
/// lie in memory, not as numbers: the offence table hashes and compares them as two words.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable, Equatable {
        case ipv4
        case ipv6
    }

    /// Bytes 0-7 as they lie in memory (network order).
    public var high: UInt64
    /// Bytes 8-15 as they lie in memory (network order).
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The address of 16 network-order bytes (an IPv4-mapped one is IPv4) or of 4 (IPv4).
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16 || bytes.count == 4, "an address has 4 or 16 bytes, not \(bytes.count)")
        if let address = bytes.withContiguousStorageIfAvailable({ IPAddress(raw: UnsafeRawBufferPointer($0)) }) {
            self = address
            return
        }
        self = Array(bytes).withUnsafeBytes { IPAddress(raw: $0) }
    }

    /// The address of the 16 (an IPv4-mapped one is IPv4) or 4 (IPv4) network-order bytes at
    /// `raw` (what the map readers make one of per entry: no copy, no generic code).
    @inlinable public init(raw: UnsafeRawBufferPointer) {
        precondition(raw.count == 16 || raw.count == 4, "an address has 4 or 16 bytes, not \(raw.count)")
        if raw.count == 4 {
            self.init(ipv4NetworkOrder: raw.loadUnaligned(as: UInt32.self))
        } else {
            self.init(
                high: raw.loadUnaligned(as: UInt64.self), low: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
    }

    /// The IPv4 address `a.b.c.d`.
    public init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.init(ipv4NetworkOrder: UInt32(a) | UInt32(b) << 8 | UInt32(c) << 16 | UInt32(d) << 24)
    }

    /// The IPv4 address whose 4 bytes lie in memory as `value` does (`in_addr.s_addr`).
    @inlinable public init(ipv4NetworkOrder value: UInt32) {
        self.init(high: 0, low: UInt64(0xffff_0000) | UInt64(value) << 32)
    }

    /// Whether this is an IPv4 address (an IPv4-mapped one).
    @inlinable public var isIPv4: Bool {
        high == 0 && UInt32(truncatingIfNeeded: low) == 0xffff_0000
    }

    public var family: Family { isIPv4 ? .ipv4 : .ipv6 }

    /// The 4 bytes of an IPv4 address as they lie in memory (`in_addr.s_addr`).
    @inlinable public var ipv4NetworkOrder: UInt32 { UInt32(truncatingIfNeeded: low >> 32) }

    /// The 16 bytes in network order (IPv4 as IPv4-mapped).
    public var mappedBytes: [UInt8] { Swift.withUnsafeBytes(of: self) { Array($0) } }

    /// Calls `body` with the address's network-order bytes: 4 for IPv4, 16 for IPv6.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var copy = self
        return try Swift.withUnsafeBytes(of: &copy) { raw in
            try body(isIPv4 ? UnsafeRawBufferPointer(rebasing: raw[12..<16]) : raw)
        }
    }

    /// The address with all but its first `bits` bits cleared, bits counted over the 128-bit form
    /// (an IPv4 /24 is 96 + 24 bits). No allocation: it runs for every offence line.
    @inline(__always)
    public func masked(bits: Int) -> IPAddress {
        let high = UInt64(bigEndian: self.high)
        let low = UInt64(bigEndian: self.low)
        let highMask: UInt64 = bits >= 64 ? .max : (bits <= 0 ? 0 : .max << UInt64(64 - bits))
        let lowMask: UInt64 = bits >= 128 ? .max : (bits <= 64 ? 0 : .max << UInt64(128 - bits))
        return IPAddress(high: (high & highMask).bigEndian, low: (low & lowMask).bigEndian)
    }
}
