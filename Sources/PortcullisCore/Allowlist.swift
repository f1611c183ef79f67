/// Networks whose clients are never banned, whatever their lines say (the operator's own
/// addresses, monitoring, loopback).
public struct Allowlist: Sendable, Equatable {
    struct Network: Sendable, Equatable {
        let key: IPAddress
        /// Prefix length over the 128-bit key (IPv4 prefixes are offset by the 96 mapped bits).
        let bits: Int
    }

    private var networks: [Network] = []

    /// Loopback only.
    public static let loopback = try! Allowlist(["127.0.0.0/8", "::1/128"])

    public init(_ cidrs: [String] = []) throws(SettingError) {
        for cidr in cidrs { try add(cidr) }
    }

    public var isEmpty: Bool { networks.isEmpty }

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
        networks.append(Network(key: key.masked(bits: total), bits: total))
    }

    /// Whether `key` lies in one of the networks.
    public func contains(_ key: IPAddress) -> Bool {
        for network in networks where key.masked(bits: network.bits) == network.key { return true }
        return false
    }
}
