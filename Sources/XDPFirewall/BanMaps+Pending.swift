// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore
import Synchronization

/// The drops each CPU holds for the entry it last dropped for (`pc_pending`, see `struct
/// pc_pending` in bpf/portcullis_abi.h), not yet in the entry's `dropped`: a reader adds those of
/// an entry (same kind, key and tag) to its `dropped`, summed over CPUs.
struct PendingDrops {
    struct Identity: Hashable {
        let kind: UInt8
        let family: UInt8
        let prefixLength: UInt32
        let address: [UInt8]
        let tag: UInt32
    }

    private var counts: [Identity: UInt64] = [:]

    init() {}

    init(_ slots: [pc_pending]) {
        for slot in slots where slot.count > 0 && slot.kind != UInt8(PC_PENDING_NONE.rawValue) {
            let bytes = withUnsafeBytes(of: slot.addr) { Array($0) }
            let identity = Identity(
                kind: slot.kind, family: slot.family, prefixLength: slot.prefixlen,
                address: slot.family == 6 ? bytes : Array(bytes.prefix(4)), tag: slot.tag)
            counts[identity, default: 0] &+= slot.count
        }
    }

    /// Drops held for the entry of `kind` keyed by `network` (an exact ban's or a list host's:
    /// its address as a /32 or /128) whose value carries `tag`.
    func count(_ kind: pc_pending_kind, _ network: IPNetwork, tag: UInt32) -> UInt64 {
        guard !counts.isEmpty else { return 0 }
        let identity = Identity(
            kind: UInt8(kind.rawValue), family: network.family == .ipv4 ? 4 : 6, prefixLength: UInt32(network.length),
            address: network.address.withUnsafeBytes { Array($0) }, tag: tag)
        return counts[identity] ?? 0
    }

    /// Drops held for the exact ban of `address` whose value carries `tag`.
    func count(ban address: IPAddress, tag: UInt32) -> UInt64 {
        count(PC_PENDING_BAN, IPNetwork(containing: address, length: address.family == .ipv4 ? 32 : 128), tag: tag)
    }
}

extension BanMaps {
    /// What every CPU holds in `pc_pending` (none for pins made before it).
    func pendingDrops() throws(FirewallError) -> PendingDrops {
        guard let pending else { return PendingDrops() }
        var key: UInt32 = 0
        var slots = [pc_pending](repeating: pc_pending(), count: possibleCPUs)
        try bpfCall("read \(PC_MAP_PENDING)") { bpf_map_lookup_elem(pending.fd, &key, &slots) }
        return PendingDrops(slots)
    }
}

extension BanRequest {
    /// Tags of values written with a count of their own: a random start, then one after another, so
    /// that no two writes of one key in this process carry the same tag and two processes' rarely do.
    private static let nextTag = Atomic<UInt32>(UInt32.random(in: 1...UInt32.max))

    /// The map value that installs it, with a count of its own (`dropped`: 0, or all an entry had,
    /// its pending drops included) and so a new tag.
    func value(dropped: UInt64) -> pc_ban {
        let tag = Self.nextTag.wrappingAdd(1, ordering: .relaxed).newValue
        return pc_ban(expires_ns: expiry.expiresNanoseconds, dropped: dropped, origin: origin, tag: tag)
    }

    /// The map value that installs it in place of `old` (as read from the map, its pending drops not
    /// included): `old`'s count and tag go on, so what CPUs hold for it stays its own; nil: a new count.
    func value(keeping old: pc_ban?) -> pc_ban {
        guard let old else { return value(dropped: 0) }
        return pc_ban(expires_ns: expiry.expiresNanoseconds, dropped: old.dropped, origin: origin, tag: old.tag)
    }
}
