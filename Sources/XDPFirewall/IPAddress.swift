import CPortcullis
import Glibc

/// An IPv4 or IPv6 address, held as its network-order bytes.
///
/// IPv4-mapped IPv6 text (`::ffff:198.18.0.1`) is taken as the IPv4 address it maps: packets from
/// such a client arrive as IPv4, and that is the map the XDP program looks in.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public enum Family: Sendable, Equatable {
        case ipv4
        case ipv6
    }

    public let family: Family
    /// The address bytes in network order; for IPv4 only the first 4 bytes are used (rest zero).
    private let high: UInt64
    private let low: UInt64

    /// Parses any textual form `inet_pton` accepts. Zone ids (`fe80::1%eth0`) are not addresses.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ipv4NetworkOrder: v4.s_addr)
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            self.init(ipv6Bytes: v6)
            return
        }
        return nil
    }

    /// Creates an IPv4 address from `in_addr.s_addr` (network byte order in memory).
    public init(ipv4NetworkOrder value: UInt32) {
        var high: UInt64 = 0
        Swift.withUnsafeMutableBytes(of: &high) { $0.storeBytes(of: value, as: UInt32.self) }
        self.init(family: .ipv4, high: high, low: 0)
    }

    /// Creates an address from 16 IPv6 bytes; an IPv4-mapped address becomes IPv4.
    public init(ipv6Bytes value: in6_addr) {
        let raw = Swift.withUnsafeBytes(of: value) { bytes in
            (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        let isMapped = Swift.withUnsafeBytes(of: value) { bytes in
            bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
        }
        if isMapped {
            self.init(ipv4NetworkOrder: Swift.withUnsafeBytes(of: value) { $0.loadUnaligned(fromByteOffset: 12, as: UInt32.self) })
        } else {
            self.init(family: .ipv6, high: raw.0, low: raw.1)
        }
    }

    private init(family: Family, high: UInt64, low: UInt64) {
        self.family = family
        self.high = high
        self.low = low
    }

    /// Calls `body` with the address's network-order bytes: 4 for IPv4, 16 for IPv6.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var raw = (high, low)
        return try Swift.withUnsafeBytes(of: &raw) { bytes in
            try body(UnsafeRawBufferPointer(rebasing: bytes[0..<(family == .ipv4 ? 4 : 16)]))
        }
    }

    /// The canonical text (`inet_ntop`).
    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        withUnsafeBytes { bytes in
            _ = inet_ntop(family == .ipv4 ? AF_INET : AF_INET6, bytes.baseAddress, &text, socklen_t(text.count))
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    var ipv4Key: pc_ipv4_key {
        var key = pc_ipv4_key()
        withUnsafeBytes { source in Swift.withUnsafeMutableBytes(of: &key) { $0.copyMemory(from: source) } }
        return key
    }

    var ipv6Key: pc_ipv6_key {
        var key = pc_ipv6_key()
        withUnsafeBytes { source in Swift.withUnsafeMutableBytes(of: &key) { $0.copyMemory(from: source) } }
        return key
    }

    init(_ key: pc_ipv4_key) {
        self.init(ipv4NetworkOrder: Swift.withUnsafeBytes(of: key) { $0.loadUnaligned(as: UInt32.self) })
    }

    init(_ key: pc_ipv6_key) {
        self.init(ipv6Bytes: Swift.withUnsafeBytes(of: key) { $0.loadUnaligned(as: in6_addr.self) })
    }
}

/// The clock the XDP program reads ban expiries against (`bpf_ktime_get_boot_ns`): it keeps
/// counting through suspend, so a ban's end does not move when the host sleeps.
public enum BootClock {
    /// Nanoseconds of `CLOCK_BOOTTIME` now.
    public static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_BOOTTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
