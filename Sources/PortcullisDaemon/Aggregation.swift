// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import Synchronization
import XDPFirewall

/// How a jail bans networks rather than addresses.
public struct Aggregation: Sendable, Equatable {
    /// N distinct bans inside one prefix of `length` within the jail's findtime ban the prefix.
    public struct Rule: Sendable, Equatable {
        public var length: Int
        public var count: Int
        public init(length: Int, count: Int) {
            self.length = length
            self.count = count
        }
    }

    /// IPv6 clients are counted and banned by this prefix (`ipv6-prefix = 64`): three offences from
    /// three addresses of one /64 are three offences of that /64.
    public var ipv6Prefix: Int?
    public var ipv4: Rule?
    public var ipv6: Rule?

    public init() {}

    /// The prefix lengths it bans, by family (each must be one of the maps' fixed lengths).
    var lengths: [(family: IPAddress.Family, length: Int, key: String)] {
        var lengths: [(IPAddress.Family, Int, String)] = []
        if let ipv6Prefix { lengths.append((.ipv6, ipv6Prefix, "ipv6-prefix")) }
        if let ipv4 { lengths.append((.ipv4, ipv4.length, "aggregate-v4")) }
        if let ipv6 { lengths.append((.ipv6, ipv6.length, "aggregate-v6")) }
        return lengths
    }

    /// Checks the lengths against the fixed prefix lengths of the maps.
    func check(jail: String, maps: any BanStore) throws(DaemonError) {
        for (family, length, key) in lengths {
            let configured: [Int]
            do {
                configured = try maps.prefixLengths(family)
            } catch {
                throw .firewall("jail \(jail): read the maps' prefix lengths: \(error)")
            }
            guard configured.contains(length) else {
                throw .invalidSetting(
                    "jail \(jail): \(key) bans /\(length), which is not one of the maps' "
                        + "\(family == .ipv4 ? "IPv4" : "IPv6") prefix lengths ("
                        + configured.map { "/\($0)" }.joined(separator: ", ") + "); use one of them")
            }
        }
    }

    /// The network `address` is counted and banned as: its /`ipv6Prefix` for IPv6, else itself.
    @inline(__always)
    func counted(_ address: IPAddress) -> IPAddress {
        guard let ipv6Prefix, !address.isIPv4 else { return address }
        return address.masked(bits: ipv6Prefix)
    }
}

/// A jail's recent bans by prefix, for `aggregate-v4`/`aggregate-v6`: when N distinct members of
/// one prefix were banned within findtime (or, with findtime 0, while their bans last), the
/// prefix is banned for the longest of their remaining times and the members' own bans go.
final class BanAggregator: Sendable {
    struct Member: Sendable {
        let network: IPNetwork
        let bannedAt: UInt64
        let expiry: BanExpiry
    }

    /// What one crossing of the threshold of distinct members calls for.
    struct Prefix: Sendable {
        let network: IPNetwork
        let expiry: BanExpiry
        let members: [IPNetwork]
    }

    private let rules: (ipv4: Aggregation.Rule?, ipv6: Aggregation.Rule?)
    private let findTime: UInt64
    private let recent = Mutex<[IPNetwork: [Member]]>([:])

    init?(_ aggregation: Aggregation, findTimeSeconds: UInt32) {
        guard aggregation.ipv4 != nil || aggregation.ipv6 != nil else { return nil }
        rules = (aggregation.ipv4, aggregation.ipv6)
        findTime = UInt64(findTimeSeconds) * 1_000_000_000
    }

    /// Records bans that went in at `now` (boot nanoseconds). - Returns: the prefixes to ban now.
    func record(_ bans: [(network: IPNetwork, expiry: BanExpiry)], now: UInt64) -> [Prefix] {
        recent.withLock { recent in
            var due: [Prefix] = []
            for ban in bans {
                guard let rule = ban.network.family == .ipv4 ? rules.ipv4 : rules.ipv6, ban.network.length > rule.length
                else { continue }
                let prefix = IPNetwork(containing: ban.network.address, length: rule.length)
                var members = (recent[prefix] ?? []).filter { member in
                    member.network != ban.network
                        && (findTime > 0
                            ? now - member.bannedAt <= findTime
                            : { if case .at(let end) = member.expiry { return end > now } else { return true } }())
                }
                members.append(Member(network: ban.network, bannedAt: now, expiry: ban.expiry))
                if members.count >= rule.count {
                    // The longest of their remaining times (for good if any is).
                    var expiry = BanExpiry.at(bootNanoseconds: 0)
                    for member in members {
                        switch (member.expiry, expiry) {
                        case (.permanent, _): expiry = .permanent
                        case (.at(let end), .at(let longest)) where end > longest: expiry = member.expiry
                        default: break
                        }
                    }
                    due.append(Prefix(network: prefix, expiry: expiry, members: members.map(\.network)))
                    recent[prefix] = nil
                } else {
                    recent[prefix] = members
                }
            }
            return due
        }
    }
}
