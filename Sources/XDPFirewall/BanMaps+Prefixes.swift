// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

// Bans of networks: fixed-length prefixes in the prefix hashes, other lengths in the CIDR tries.

/// A ban of a network (or, for lists, an entry of a blocklist) as it stands in the maps.
public struct NetworkBanEntry: Sendable, Equatable {
    /// Where it is kept: an exact map, a fixed-length prefix hash, the CIDR trie, the blocklists.
    public enum Place: String, Sendable {
        case exact, prefix, cidr, list
    }

    public let network: IPNetwork
    public let place: Place
    public let expiry: BanExpiry
    public let dropped: UInt64
    public let origin: UInt32

    public init(network: IPNetwork, place: Place, expiry: BanExpiry, dropped: UInt64, origin: UInt32) {
        self.network = network
        self.place = place
        self.expiry = expiry
        self.dropped = dropped
        self.origin = origin
    }

    public func isExpired(now: UInt64 = SystemClock.bootNanoseconds()) -> Bool {
        if case .at(let end) = expiry { return now >= end }
        return false
    }
}

/// What `liftIfEnded(network:now:)` found.
public enum NetworkLiftOutcome: Sendable, Equatable {
    /// The ban had ended: deleted.
    case lifted(NetworkBanEntry)
    /// No ban (an operator's `unban`, or lifted already).
    case absent
    /// A ban in force (a re-ban since the sweep read it): left as it was.
    case inForce(NetworkBanEntry)
}

/// The key of a prefix hash or trie (`pc_prefix4_key` / `pc_prefix6_key`).
struct PrefixKey {
    var bytes: [UInt8]

    init(_ network: IPNetwork) {
        var bytes = [UInt8](repeating: 0, count: network.family == .ipv4 ? 8 : 20)
        withUnsafeBytes(of: UInt32(network.length)) { for index in 0..<4 { bytes[index] = $0[index] } }
        network.address.withUnsafeBytes { address in
            for index in 0..<address.count { bytes[4 + index] = address[index] }
        }
        self.bytes = bytes
    }

    static func network(_ raw: UnsafeRawBufferPointer, family: IPAddress.Family) -> IPNetwork {
        let length = Int(raw.loadUnaligned(as: UInt32.self))
        let address = IPAddress(raw: UnsafeRawBufferPointer(rebasing: raw[4..<(family == .ipv4 ? 8 : 20)]))
        return IPNetwork(containing: address, length: length)
    }
}

extension BanMaps {
    /// Where a ban of `network` goes: the exact map (a single address), the prefix hash (a fixed
    /// length), else the CIDR trie.
    public func place(of network: IPNetwork) throws(FirewallError) -> NetworkBanEntry.Place {
        if network.isSingleAddress { return .exact }
        return try prefixLengths(network.family).contains(network.length) ? .prefix : .cidr
    }

    /// Bans `network` (its drop count kept when it was banned already).
    public func ban(
        network: IPNetwork, _ expiry: BanExpiry, origin: UInt32 = UInt32(PC_ORIGIN_OPERATOR)
    )
        throws(FirewallError)
    {
        let place = try place(of: network)
        if place == .exact {
            try ban(network.address, expiry, origin: origin)
            return
        }
        let v4 = network.family == .ipv4
        let (map, used) =
            place == .prefix
            ? (v4 ? prefixV4 : prefixV6, v4 ? PC_CONFIG_USED_PREFIX_V4 : PC_CONFIG_USED_PREFIX_V6)
            : (v4 ? cidrV4 : cidrV6, v4 ? PC_CONFIG_USED_CIDR_V4 : PC_CONFIG_USED_CIDR_V6)
        var key = PrefixKey(network).bytes
        var value = pc_ban()
        let old = bpf_map_lookup_elem(map.fd, &key, &value) == 0 ? value : nil
        value = BanRequest(network.address, expiry, origin: origin).value(keeping: old)
        try cover([network], kind: place == .prefix ? PC_COVER_PREFIX : PC_COVER_CIDR)
        try markUsed(used)
        switch systemCallResult({ bpf_map_update_elem(map.fd, &key, &value, UInt64(BPF_ANY)) }) {
        case .success: break
        case .failure(let error) where error.code == E2BIG || error.code == ENOSPC:
            throw .banMapFull(family: familyName(network.family), capacity: 0, installed: 0)
        case .failure(let error): throw systemError("ban \(network)", error.code)
        }
        try markUsed(used)  // again after: see portcullis_abi.h (set before the first entry, never cleared)
    }

    /// The ban of `network` as it was made (nil: none).
    public func lookup(network: IPNetwork) throws(FirewallError) -> NetworkBanEntry? {
        let place = try place(of: network)
        if place == .exact {
            return try lookup(network.address).map {
                NetworkBanEntry(
                    network: network, place: .exact, expiry: $0.expiry, dropped: $0.dropped, origin: $0.origin)
            }
        }
        let v4 = network.family == .ipv4
        let map = place == .prefix ? (v4 ? prefixV4 : prefixV6) : (v4 ? cidrV4 : cidrV6)
        var key = PrefixKey(network).bytes
        var value = pc_ban()
        let pending = place == .prefix ? try pendingDrops() : PendingDrops()
        switch systemCallResult({ bpf_map_lookup_elem(map.fd, &key, &value) }) {
        case .success:
            return NetworkBanEntry(
                network: network, place: place, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                dropped: value.dropped &+ pending.count(PC_PENDING_PREFIX, network, tag: value.tag),
                origin: value.origin)
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error): throw systemError("look up \(network)", error.code)
        }
    }

    /// Lifts the ban of `network` exactly as it was made. - Returns: whether it was banned.
    @discardableResult
    public func unban(network: IPNetwork) throws(FirewallError) -> Bool {
        let place = try place(of: network)
        if place == .exact { return try unban(network.address) }
        let v4 = network.family == .ipv4
        let map = place == .prefix ? (v4 ? prefixV4 : prefixV6) : (v4 ? cidrV4 : cidrV6)
        var key = PrefixKey(network).bytes
        switch systemCallResult({ bpf_map_delete_elem(map.fd, &key) }) {
        case .success: return true
        case .failure(let error) where error.code == ENOENT: return false
        case .failure(let error): throw systemError("unban \(network)", error.code)
        }
    }

    /// Every ban of a network (prefix hashes and CIDR tries, both families).
    public func networkBans() throws(FirewallError) -> [NetworkBanEntry] {
        try networkEntries(in: prefixV4, family: .ipv4, place: .prefix)
            + networkEntries(in: prefixV6, family: .ipv6, place: .prefix)
            + networkEntries(in: cidrV4, family: .ipv4, place: .cidr)
            + networkEntries(in: cidrV6, family: .ipv6, place: .cidr)
    }

    /// Deletes the ban of `network` if it has ended at `now`. In a prefix hash that is
    /// `bpf_map_lookup_and_delete_elem`, atomic against anyone writing it meanwhile: a ban found in
    /// force is put back as it was (for the microseconds in between the program passes the
    /// network), as `liftIfEnded(_:now:)` does for an address. A CIDR trie refuses lookup-and-delete:
    /// it is looked up, compared and deleted, which is atomic only against writers holding the
    /// caller's lock (the daemon's `Enforcement`; a `portcullis ban` of the same CIDR written
    /// directly into the maps in those microseconds is lost).
    public func liftIfEnded(network: IPNetwork, now: UInt64) throws(FirewallError) -> NetworkLiftOutcome {
        let place = try place(of: network)
        func entry(_ value: pc_ban) -> NetworkBanEntry {
            NetworkBanEntry(
                network: network, place: place, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                dropped: value.dropped, origin: value.origin)
        }
        func entry(_ ban: BanEntry) -> NetworkBanEntry {
            NetworkBanEntry(
                network: network, place: .exact, expiry: ban.expiry, dropped: ban.dropped, origin: ban.origin)
        }
        switch place {
        case .exact:
            switch try liftIfEnded(network.address, now: now) {
            case .lifted(let ban): return .lifted(entry(ban))
            case .absent: return .absent
            case .inForce(let ban): return .inForce(entry(ban))
            }
        case .prefix:
            let map = network.family == .ipv4 ? prefixV4 : prefixV6
            var key = PrefixKey(network).bytes
            var value = pc_ban()
            switch systemCallResult({ bpf_map_lookup_and_delete_elem(map.fd, &key, &value) }) {
            case .failure(let error) where error.code == ENOENT: return .absent
            case .failure(let error): throw systemError("lift the ban of \(network)", error.code)
            case .success: break
            }
            if entry(value).isExpired(now: now) { return .lifted(entry(value)) }
            // Written (or made longer) after the sweep looked: put it back unless a newer one is there.
            var restore = value
            _ = systemCallResult { bpf_map_update_elem(map.fd, &key, &restore, UInt64(BPF_NOEXIST)) }
            return .inForce(entry(value))
        case .cidr, .list:  // `place(of:)` never says `.list`: lists are not bans of this layer
            guard let found = try lookup(network: network) else { return .absent }
            guard found.isExpired(now: now) else { return .inForce(found) }
            return try unban(network: network) ? .lifted(found) : .absent
        }
    }

    /// The entries of a prefix-keyed map: with `bpf_map_lookup_batch` where the kernel batches
    /// the map's type, else key by key (`MapReader`).
    func networkEntries(
        in map: BPFDescriptor, family: IPAddress.Family, place: NetworkBanEntry.Place
    )
        throws(FirewallError) -> [NetworkBanEntry]
    {
        var entries: [NetworkBanEntry] = []
        // Prefix bans and the lists' hosts are counted per CPU too (a trie's entries are not).
        let pending = place == .cidr ? PendingDrops() : try pendingDrops()
        try MapReader(fd: map.fd, name: "a \(place.rawValue) map", keySize: family == .ipv4 ? 8 : 20).readAll {
            key, value in
            let network = PrefixKey.network(key, family: family)
            let kind = place == .prefix ? PC_PENDING_PREFIX : network.isSingleAddress ? PC_PENDING_LIST_HOST : nil
            entries.append(
                NetworkBanEntry(
                    network: network, place: place, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                    dropped: value.dropped &+ (kind.map { pending.count($0, network, tag: value.tag) } ?? 0),
                    origin: value.origin))
        }
        return entries
    }

    /// Every key of a prefix-keyed map (`bpf_map_get_next_key`).
    func keys(of map: BPFDescriptor, family: IPAddress.Family) throws(FirewallError) -> [[UInt8]] {
        try MapReader(fd: map.fd, name: "a network map", keySize: family == .ipv4 ? 8 : 20).keys()
    }
}
