/// A client address as the offence table keys it: 16 bytes in network order, IPv4 as the
/// IPv4-mapped IPv6 address `::ffff:a.b.c.d` (so `198.18.0.1` and `::ffff:198.18.0.1` are one client).
public struct AddressKey: Hashable, Sendable {
    /// Bytes 0-7 and 8-15 as they lie in memory (network order), not as numbers.
    public var high: UInt64
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The key of 16 network-order bytes.
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        var key = AddressKey(high: 0, low: 0)
        withUnsafeMutableBytes(of: &key) { $0.copyBytes(from: bytes) }
        self = key
    }

    /// The key of an IPv4 address given as 4 network-order bytes.
    public init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.init(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d])
    }

    /// The 16 bytes in network order.
    public var bytes: [UInt8] { withUnsafeBytes(of: self) { Array($0) } }

    /// Whether this is an IPv4 client (an IPv4-mapped key).
    @inlinable public var isIPv4: Bool {
        withUnsafeBytes(of: self) { raw in
            raw.load(as: UInt64.self) == 0 && raw.load(fromByteOffset: 8, as: UInt16.self) == 0
                && raw.load(fromByteOffset: 10, as: UInt16.self) == 0xffff
        }
    }
}
