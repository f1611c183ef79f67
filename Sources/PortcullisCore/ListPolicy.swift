// SPDX-License-Identifier: Apache-2.0
/// What every writer of bans the operator does not type (a fleet's other hosts, a CrowdSec Local
/// API, blocklist files, an operator's network ban without `--force`) may install: networks no
/// shorter than a floor per family, none that touches a never-bannable range, none inside the
/// driver's allowlist (this host's addresses and gateways, `--allow`, `ignoreip`).
public struct ListPolicy: Sendable, Equatable {
    /// Why a network is refused (the `reason` of the writers' `skipped` counters).
    public enum Refusal: String, Sendable, CaseIterable, CustomStringConvertible {
        /// Shorter than the floor of its family (`0.0.0.0/0` would drop everything).
        case tooWide = "too_wide"
        /// Overlaps a network `IPAddress.isNeverBannable` covers (loopback, link-local,
        /// multicast, "this network", reserved, broadcast).
        case neverBannable = "never_bannable"
        /// Inside the allowlist.
        case allowlisted

        public var description: String {
            switch self {
            case .tooWide: "shorter than the floor"
            case .neverBannable: "overlaps a never-bannable range (loopback, link-local, multicast, reserved)"
            case .allowlisted: "allowlisted (this host, its gateways, --allow, ignoreip)"
            }
        }
    }

    /// The shortest prefix taken, per family.
    public var shortestIPv4: Int
    public var shortestIPv6: Int
    /// Networks whose addresses are never dropped (the driver's allowlist).
    public var allowlist: [IPNetwork]

    /// The default floors of lists and CrowdSec: Spamhaus DROP holds IPv4 /11 to /13 and IPv6 /19
    /// and longer, CrowdSec's `Range` decisions are /8 or longer; /0 and /1 are refused.
    public static let listFloor = (ipv4: 8, ipv6: 16)
    /// The default floors of the fleet's other hosts (a jail bans addresses; an operator's network
    /// ban of a /16 still travels).
    public static let fleetFloor = (ipv4: 16, ipv6: 32)

    public init(shortestIPv4: Int = listFloor.ipv4, shortestIPv6: Int = listFloor.ipv6, allowlist: [IPNetwork] = []) {
        self.shortestIPv4 = shortestIPv4
        self.shortestIPv6 = shortestIPv6
        self.allowlist = allowlist
    }

    /// The networks `IPAddress.isNeverBannable` covers.
    public static let neverBannable: [IPNetwork] = Allowlist.neverBannable.map { try! IPNetwork(parsing: $0) }

    /// nil when `network` may be installed, else why not.
    public func verdict(_ network: IPNetwork) -> Refusal? {
        if network.length < (network.family == .ipv4 ? shortestIPv4 : shortestIPv6) { return .tooWide }
        if Self.neverBannable.contains(where: { $0.overlaps(network) }) { return .neverBannable }
        if allowlist.contains(where: {
            $0.family == network.family && $0.length <= network.length && $0.contains(network.address)
        }) {
            return .allowlisted
        }
        return nil
    }

    /// `networks` split into those taken and the refusals counted by reason.
    public func filter(_ networks: [IPNetwork]) -> (taken: [IPNetwork], refused: [Refusal: Int]) {
        var taken: [IPNetwork] = []
        taken.reserveCapacity(networks.count)
        var refused: [Refusal: Int] = [:]
        for network in networks {
            if let refusal = verdict(network) { refused[refusal, default: 0] += 1 } else { taken.append(network) }
        }
        return (taken, refused)
    }

    /// `refused` in words for a load line: "2 refused (1 shorter than the floor, 1 allowlisted)",
    /// or "" when none.
    public static func describe(_ refused: [Refusal: Int]) -> String {
        let total = refused.values.reduce(0, +)
        guard total > 0 else { return "" }
        let parts = Refusal.allCases.compactMap { reason in
            refused[reason].map { "\($0) \(reason == .tooWide ? "too wide" : reason.rawValue.replacingUnderscores)" }
        }
        return "\(total) refused (\(parts.joined(separator: ", ")))"
    }
}

extension String {
    fileprivate var replacingUnderscores: String { String(map { $0 == "_" ? " " : $0 }) }
}

extension IPNetwork {
    /// Whether the two networks share an address (one holds the other).
    public func overlaps(_ other: IPNetwork) -> Bool {
        guard family == other.family else { return false }
        return length <= other.length ? contains(other.address) : other.contains(address)
    }
}
