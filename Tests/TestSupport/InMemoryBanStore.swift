// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import Synchronization
import XDPFirewall

/// A `BanStore` in memory, for tests of the daemon's logic without root, a BPF object or real
/// seconds: the same contract as the XDP maps (never shorten, origins, ends, networks by place,
/// the allowlist, origin slots), held to it by BanStoreContractTests. It keeps no clock: every
/// time is the caller's (step a `ManualClock`).
public final class InMemoryBanStore: BanStore, @unchecked Sendable {
    private struct State {
        var exact: [IPAddress: BanEntry] = [:]
        var networks: [IPNetwork: NetworkBanEntry] = [:]
        var allowlist: [IPNetwork] = []
        var origins: [String: UInt32] = [:]
    }

    private let state = Mutex(State())
    /// Exact bans per family at most (further ones fail, as a full map does).
    public let capacity: Int
    private let lengths: [IPAddress.Family: [Int]]

    /// - Parameters:
    ///   - capacity: exact bans per family at most.
    ///   - prefixLengths: the fixed prefix lengths, longest first (the maps' defaults: IPv4 /24; IPv6
    ///     /64, /56, /48); a network of another length is a CIDR ban.
    public init(
        capacity: Int = 65_536, prefixLengths: [IPAddress.Family: [Int]] = [.ipv4: [24], .ipv6: [64, 56, 48]]
    ) {
        self.capacity = capacity
        lengths = prefixLengths
    }

    /// The allowlist as last replaced.
    public var allowlist: [IPNetwork] { state.withLock { $0.allowlist } }

    public func banKeepingLonger(batch requests: [BanRequest]) -> BanMaps.MergeOutcome {
        state.withLock { state in
            var outcome = BanMaps.MergeOutcome()
            for (index, request) in requests.enumerated() {
                let existing = state.exact[request.address]
                if let existing, !BanMaps.endsLater(request.expiry, than: existing.expiry) {
                    outcome.kept.append(index)
                    continue
                }
                if existing == nil && Self.count(request.address.family, in: state) >= capacity {
                    outcome.failed.append(index)
                    continue
                }
                state.exact[request.address] = BanEntry(
                    address: request.address, expiry: request.expiry, dropped: existing?.dropped ?? 0,
                    origin: request.origin)
                outcome.installed.append(index)
            }
            return outcome
        }
    }

    private static func count(_ family: IPAddress.Family, in state: State) -> Int {
        state.exact.keys.count { $0.family == family }
    }

    public func liftIfEnded(_ address: IPAddress, now: UInt64) throws(FirewallError) -> BanMaps.LiftOutcome {
        state.withLock { state in
            guard let entry = state.exact[address] else { return .absent }
            guard entry.isExpired(now: now) else { return .inForce(entry) }
            state.exact[address] = nil
            return .lifted(entry)
        }
    }

    public func lookup(_ address: IPAddress) throws(FirewallError) -> BanEntry? {
        state.withLock { $0.exact[address] }
    }

    public func ban(_ address: IPAddress, _ expiry: BanExpiry, origin: UInt32 = 0) throws(FirewallError) {
        try state.withLock { (state) throws(FirewallError) in
            let existing = state.exact[address]
            if existing == nil && Self.count(address.family, in: state) >= capacity {
                throw .banMapFull(
                    family: address.isIPv4 ? "IPv4" : "IPv6", capacity: UInt32(capacity), installed: capacity)
            }
            state.exact[address] = BanEntry(
                address: address, expiry: expiry, dropped: existing?.dropped ?? 0, origin: origin)
        }
    }

    public func unban(_ address: IPAddress) throws(FirewallError) -> Bool {
        state.withLock { $0.exact.removeValue(forKey: address) != nil }
    }

    public func entries() throws(FirewallError) -> [BanEntry] {
        state.withLock { Array($0.exact.values) }
    }

    /// One step walks every ban (the store is small): `walk` stays at its start.
    public func entries(walking walk: inout BanMaps.Walk, limit: Int) throws(FirewallError) -> [BanEntry] {
        try entries()
    }

    private func place(of network: IPNetwork) -> NetworkBanEntry.Place {
        if network.isSingleAddress { return .exact }
        return (lengths[network.family] ?? []).contains(network.length) ? .prefix : .cidr
    }

    public func ban(network: IPNetwork, _ expiry: BanExpiry, origin: UInt32 = 0) throws(FirewallError) {
        let place = place(of: network)
        if place == .exact { return try ban(network.address, expiry, origin: origin) }
        state.withLock { state in
            state.networks[network] = NetworkBanEntry(
                network: network, place: place, expiry: expiry, dropped: state.networks[network]?.dropped ?? 0,
                origin: origin)
        }
    }

    public func lookup(network: IPNetwork) throws(FirewallError) -> NetworkBanEntry? {
        if network.isSingleAddress {
            return try lookup(network.address).map {
                NetworkBanEntry(
                    network: network, place: .exact, expiry: $0.expiry, dropped: $0.dropped, origin: $0.origin)
            }
        }
        return state.withLock { state in
            if place(of: network) == .prefix { return state.networks[network] }
            // A trie answers with the longest CIDR ban that covers the network asked for.
            let covering = state.networks.values.filter {
                $0.place == .cidr && $0.network.length <= network.length && $0.network.contains(network.address)
            }
            return covering.max { $0.network.length < $1.network.length }.map {
                NetworkBanEntry(
                    network: network, place: .cidr, expiry: $0.expiry, dropped: $0.dropped, origin: $0.origin)
            }
        }
    }

    public func unban(network: IPNetwork) throws(FirewallError) -> Bool {
        if network.isSingleAddress { return try unban(network.address) }
        return state.withLock { $0.networks.removeValue(forKey: network) != nil }
    }

    public func networkBans() throws(FirewallError) -> [NetworkBanEntry] {
        state.withLock { Array($0.networks.values) }
    }

    public func liftIfEnded(network: IPNetwork, now: UInt64) throws(FirewallError) -> NetworkLiftOutcome {
        if network.isSingleAddress {
            let entry = { (ban: BanEntry) in
                NetworkBanEntry(
                    network: network, place: .exact, expiry: ban.expiry, dropped: ban.dropped, origin: ban.origin)
            }
            switch try liftIfEnded(network.address, now: now) {
            case .lifted(let ban): return .lifted(entry(ban))
            case .absent: return .absent
            case .inForce(let ban): return .inForce(entry(ban))
            }
        }
        return state.withLock { state in
            guard let entry = state.networks[network] else { return .absent }
            guard entry.isExpired(now: now) else { return .inForce(entry) }
            state.networks[network] = nil
            return .lifted(entry)
        }
    }

    public func prefixLengths(_ family: IPAddress.Family) throws(FirewallError) -> [Int] {
        lengths[family] ?? []
    }

    @discardableResult
    public func replaceAllowlist(_ networks: [IPNetwork]) throws(FirewallError) -> Int {
        state.withLock { state in
            var seen = Set<IPNetwork>()
            state.allowlist = networks.filter { seen.insert($0).inserted }
            return state.allowlist.count
        }
    }

    public func originSlots(for names: [String]) throws(FirewallError) -> [String: UInt32] {
        state.withLock { state in
            for name in names where state.origins[name] == nil {
                state.origins[name] = (state.origins.values.max() ?? 0) + 1
            }
            return state.origins.filter { names.contains($0.key) }
        }
    }
}
