// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore

/// The ban maps' keys (`pc_ipv4_key`, `pc_ipv6_key` in portcullis_abi.h: the address bytes in
/// network order) for the one address type.
extension IPAddress {
    @_spi(Testing) public var ipv4Key: pc_ipv4_key {
        var key = pc_ipv4_key()
        Swift.withUnsafeMutableBytes(of: &key) { $0.storeBytes(of: ipv4NetworkOrder, as: UInt32.self) }
        return key
    }

    @_spi(Testing) public var ipv6Key: pc_ipv6_key {
        var key = pc_ipv6_key()
        Swift.withUnsafeMutableBytes(of: &key) { raw in
            raw.storeBytes(of: high, as: UInt64.self)
            raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
        }
        return key
    }

    init(_ key: pc_ipv4_key) {
        self.init(ipv4NetworkOrder: Swift.withUnsafeBytes(of: key) { $0.loadUnaligned(as: UInt32.self) })
    }

    init(_ key: pc_ipv6_key) {
        self.init(ipv6Bytes: Swift.withUnsafeBytes(of: key) { $0.loadUnaligned(as: in6_addr.self) })
    }

    /// The address of 16 IPv6 bytes (`in6_addr`); an IPv4-mapped one is IPv4.
    public init(ipv6Bytes value: in6_addr) {
        let (high, low) = Swift.withUnsafeBytes(of: value) {
            ($0.loadUnaligned(fromByteOffset: 0, as: UInt64.self), $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        }
        self.init(high: high, low: low)
    }
}
