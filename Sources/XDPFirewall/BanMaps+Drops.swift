// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// Packets and bytes dropped for the bans of one origin, in one address family.
public struct OriginDrops: Sendable, Equatable {
    /// Who made the bans, as an operator groups them.
    public enum Kind: String, Sendable, CaseIterable {
        /// A jail of the daemon (its name: the jail's).
        case jail
        /// An operator's own ban (`portcullis ban` without `--jail`), or one of unknown origin.
        case manual
        /// A blocklist (`portcullis blocklist load`; its name: the list's).
        case list
        /// A CrowdSec Local API decision (its name: the decision's origin, `cscli`, `CAPI`, a list).
        case crowdsec
        /// A fleet peer's ban (its name: the peer host's).
        case fleet
    }

    public let kind: Kind
    /// The jail, list, CrowdSec origin or fleet host; empty for `manual`.
    public let name: String
    public let family: IPAddress.Family
    public var count: FilterCounters.Count

    public init(kind: Kind, name: String, family: IPAddress.Family, count: FilterCounters.Count = .init()) {
        self.kind = kind
        self.name = name
        self.family = family
        self.count = count
    }

    /// The kind and name an origin's name in `pc_origins` stands for: `list:NAME` a blocklist,
    /// `crowdsec/ORIGIN` a CrowdSec origin, `fleet/HOST` a fleet peer, any other a jail.
    public static func classify(originName: String) -> (kind: Kind, name: String) {
        for (prefix, kind) in [("list:", Kind.list), ("crowdsec/", .crowdsec), ("fleet/", .fleet)]
        where originName.hasPrefix(prefix) {
            return (kind, String(originName.dropFirst(prefix.count)))
        }
        return (.jail, originName)
    }
}

extension BanMaps {
    /// Drops by origin and family: the operator's (slot 0, and any unnamed slot) and every named
    /// origin's, both families each, zeros included, in slot order. Empty when the pins predate
    /// `pc_drops` (`counters().dropped` still holds their drops).
    public func dropsByOrigin() throws(FirewallError) -> [OriginDrops] {
        let slots = try dropSlots()
        guard !slots.isEmpty else { return [] }
        let names = try originNames()
        var drops: [OriginDrops] = []
        for origin in 0..<Int(PC_MAX_ORIGINS) {
            let named = names[UInt32(origin)].map { OriginDrops.classify(originName: $0) }
            for (family, offset) in [(IPAddress.Family.ipv4, PC_DROP_FAMILY_IPV4), (.ipv6, PC_DROP_FAMILY_IPV6)] {
                let count = slots[origin * Int(PC_DROP_FAMILIES) + Int(offset)]
                if let named {
                    drops.append(OriginDrops(kind: named.kind, name: named.name, family: family, count: count))
                } else if origin == Int(PC_ORIGIN_OPERATOR) {
                    drops.append(OriginDrops(kind: .manual, name: "", family: family, count: count))
                } else {
                    // No name: counted as the operator's, as `portcullis list` shows such a ban.
                    drops[family == .ipv4 ? 0 : 1].count.packets &+= count.packets
                    drops[family == .ipv4 ? 0 : 1].count.bytes &+= count.bytes
                }
            }
        }
        return drops
    }

    /// Every slot of `pc_drops` summed over the CPUs, read with one `bpf_map_lookup_batch`
    /// (empty: the pins predate it).
    func dropSlots() throws(FirewallError) -> [FilterCounters.Count] {
        guard let drops else { return [] }
        let slots = Int(PC_DROP_SLOTS)
        // Per-CPU values come as `possibleCPUs` values per key, each 8-byte aligned (pc_stat is 16).
        var keys = [UInt32](repeating: 0, count: slots)
        var values = [pc_stat](repeating: pc_stat(), count: slots * possibleCPUs)
        var next: UInt32 = 0
        var count = UInt32(slots)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        let result = systemCallResult(convention: .negativeErrno) {
            count = UInt32(slots)
            return bpf_map_lookup_batch(drops.fd, nil, &next, &keys, &values, &count, &options)
        }
        // ENOENT: the whole array was read (the kernel found no key after the last).
        if case .failure(let error) = result, error.code != ENOENT {
            throw systemError("read \(PC_MAP_DROPS)", error.code)
        }
        var sums = [FilterCounters.Count](repeating: .init(), count: slots)
        for index in 0..<Int(count) where Int(keys[index]) < slots {
            for value in values[(index * possibleCPUs)..<((index + 1) * possibleCPUs)] {
                sums[Int(keys[index])].packets &+= value.packets
                sums[Int(keys[index])].bytes &+= value.bytes
            }
        }
        return sums
    }
}
