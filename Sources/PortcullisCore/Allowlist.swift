// SPDX-License-Identifier: Apache-2.0
/// Networks whose clients are never banned, whatever their lines say (the operator's own
/// addresses, monitoring, loopback).
public struct Allowlist: Sendable, Equatable {
    struct Network: Sendable, Equatable {
        let key: IPAddress
        /// Prefix length over the 128-bit key (IPv4 prefixes are offset by the 96 mapped bits).
        let bits: Int
    }

    /// By family: a line's address is compared with its own family's networks only.
    fileprivate(set) var networks4: [Network] = []
    fileprivate(set) var networks6: [Network] = []
    var networks: [Network] { networks4 + networks6 }

    /// No networks.
    public static let none = try! Allowlist([])

    /// Loopback only.
    public static let loopback = try! Allowlist(["127.0.0.0/8", "::1/128"])

    public init(_ cidrs: [String] = []) throws(SettingError) {
        for cidr in cidrs { try add(cidr) }
    }

    public var isEmpty: Bool { networks4.isEmpty && networks6.isEmpty }

    /// Adds `ADDRESS` or `ADDRESS/PREFIX` (IPv4 or IPv6).
    public mutating func add(_ cidr: String) throws(SettingError) {
        let parts = cidr.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        var key = IPAddress(high: 0, low: 0)
        let text = Array(parts[0].utf8)
        let parsed = text.withUnsafeBufferPointer { IPAddress.parse($0.baseAddress!, count: $0.count, into: &key) }
        guard !text.isEmpty, parsed else {
            throw SettingError("--allow \(cidr): '\(parts[0])' is not an IPv4 or IPv6 address")
        }
        let maximum = key.isIPv4 ? 32 : 128
        var bits = maximum
        if parts.count == 2 {
            guard let prefix = Int(parts[1]), (0...maximum).contains(prefix) else {
                throw SettingError("--allow \(cidr): the prefix length must be 0...\(maximum)")
            }
            bits = prefix
        }
        let total = key.isIPv4 ? 96 + bits : bits
        if key.isIPv4 {
            networks4.append(Network(key: key.masked(bits: total), bits: total))
        } else {
            networks6.append(Network(key: key.masked(bits: total), bits: total))
        }
    }

    /// Whether `key` lies in one of the networks.
    @inline(__always)
    public func contains(_ key: IPAddress) -> Bool {
        for network in key.isIPv4 ? networks4 : networks6 where key.masked(bits: network.bits) == network.key {
            return true
        }
        return false
    }
}

extension Allowlist {
    /// The networks `IPAddress.isNeverBannable` covers, for the start-up line.
    public static let neverBannable = [
        "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fe80::/10",
        "ff00::/8",
    ]

    /// Every network of `self` and of `other`.
    public func adding(_ other: Allowlist) -> Allowlist {
        var union = self
        union.networks4 += other.networks4
        union.networks6 += other.networks6
        return union
    }

    /// The networks, each in its family's own prefix length (the driver's allowlist is made of them).
    public var ipNetworks: [IPNetwork] {
        networks.map { IPNetwork(containing: $0.key, length: $0.key.isIPv4 ? $0.bits - 96 : $0.bits) }
    }

    /// The networks as text (`198.18.0.0/15`), for the start-up line.
    public var descriptions: [String] {
        networks.map { network in
            let bits = network.key.isIPv4 ? network.bits - 96 : network.bits
            return "\(network.key)/\(bits)"
        }
    }
}

extension IPAddress {
    /// Whether no offence may get this address banned, whatever the configuration: unspecified and
    /// "this network" (0.0.0.0/8), loopback, multicast, reserved and broadcast (240.0.0.0/4), or
    /// link-local (banning the router's link-local address drops
    /// its router advertisements and neighbour discovery: an IPv6 outage). A few compares: it runs
    /// for every offence line.
    @inlinable public var isNeverBannable: Bool {
        if isIPv4 {
            let value = UInt32(bigEndian: ipv4NetworkOrder)
            let first = value >> 24
            return first == 0 || first == 127 || value >> 16 == 0xA9FE || first >= 0xE0
        }
        let top = UInt64(bigEndian: high)
        if top == 0 { return low == 0 || UInt64(bigEndian: low) == 1 }  // :: and ::1
        return top >> 54 == 0x3FA || top >> 56 == 0xFF  // fe80::/10, ff00::/8
    }
}
