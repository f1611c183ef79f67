// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore

// The origin slots (`pc_origins`): which jail, list, CrowdSec origin or fleet host made an entry.
//
// The program reads an entry's slot only to count its drops (`pc_drops`); the names are user
// space's. A slot is named when a writer first needs it and freed when no entry carries it, by
// whoever owns its name: a list's by the list's unload, a `crowdsec/` or `fleet/` one by that
// writer's `ListInstaller` at each full install, any slot by the daemon's start
// (`recycleOriginSlots`). Writers that a remote party drives (a CrowdSec Local API, a fleet) name
// at most a few slots each and share one catch-all beyond (`ListInstaller`), so no count of
// origins anyone creates can leave a jail or a list without a slot.

extension BanMaps {
    /// The named origins: slot → name (`pc_origins`; empty slots left out).
    public func originNames() throws(FirewallError) -> [UInt32: String] {
        var names: [UInt32: String] = [:]
        for slot in 1..<UInt32(PC_MAX_ORIGINS) {
            var key = slot
            var value = pc_origin()
            try bpfCall("read \(PC_MAP_ORIGINS)") { bpf_map_lookup_elem(origins.fd, &key, &value) }
            let name = withUnsafeBytes(of: value.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.isEmpty { names[slot] = name }
        }
        return names
    }

    /// The slot of each of `names`: the one that has its name already, else a free one, which is
    /// named (a slot keeps its name while entries carry it, so they stay named across restarts).
    /// - Returns: slot by name; a name that finds no free slot is left out.
    public func originSlots(for names: [String]) throws(FirewallError) -> [String: UInt32] {
        // Read, find a free slot, write: under the writers' lock, or two processes naming new
        // origins at once take the same slot.
        try withWritersLock { () throws(FirewallError) -> [String: UInt32] in try assignOriginSlots(for: names) }
    }

    /// `originSlots` for a caller holding the writers' lock.
    func assignOriginSlots(for names: [String]) throws(FirewallError) -> [String: UInt32] {
        var taken = try originNames()
        var slots: [String: UInt32] = [:]
        for (slot, name) in taken { slots[name] = slot }
        for name in names where slots[name] == nil {
            guard let free = (1..<UInt32(PC_MAX_ORIGINS)).first(where: { taken[$0] == nil }) else { continue }
            try writeOriginName(free, name)
            taken[free] = name
            slots[name] = free
        }
        return slots.filter { names.contains($0.key) }
    }

    private func writeOriginName(_ slot: UInt32, _ name: String) throws(FirewallError) {
        var key = slot
        var value = pc_origin()
        withUnsafeMutableBytes(of: &value.name) { buffer in
            for (index, byte) in name.utf8.prefix(Int(PC_ORIGIN_NAME_SIZE) - 1).enumerated() {
                buffer[index] = byte
            }
        }
        try bpfCall("name origin \(slot) in \(PC_MAP_ORIGINS)") {
            bpf_map_update_elem(origins.fd, &key, &value, UInt64(BPF_ANY))
        }
    }

    /// Frees `slots` (their names cleared, their drop counters zeroed, so a name given to one later
    /// starts from nothing), for a caller holding the writers' lock that knows no entry carries them.
    func freeOriginSlots(_ slots: some Sequence<UInt32>) throws(FirewallError) {
        for slot in slots where slot != UInt32(PC_ORIGIN_OPERATOR) && slot < UInt32(PC_MAX_ORIGINS) {
            try writeOriginName(slot, "")
            guard let drops else { continue }
            var zeros = [pc_stat](repeating: pc_stat(), count: possibleCPUs)
            for family in [PC_DROP_FAMILY_IPV4, PC_DROP_FAMILY_IPV6] {
                var key = slot * UInt32(PC_DROP_FAMILIES) + UInt32(family)
                try bpfCall("zero \(PC_MAP_DROPS) of origin \(slot)") {
                    bpf_map_update_elem(drops.fd, &key, &zeros, UInt64(BPF_ANY))
                }
            }
        }
    }

    /// The slots some entry of any map carries (exact bans, prefix hashes, CIDR tries, lists).
    func originsInUse() throws(FirewallError) -> Set<UInt32> {
        var used = Set<UInt32>()
        // Read in chunks, keeping only the origins: the exact maps may hold millions of bans.
        for (map, name, keySize) in [
            (bansV4, PC_MAP_BANS_V4, MemoryLayout<pc_ipv4_key>.size),
            (bansV6, PC_MAP_BANS_V6, MemoryLayout<pc_ipv6_key>.size),
        ] {
            try MapReader(fd: map.fd, name: name, keySize: keySize).readAll { _, value in used.insert(value.origin) }
        }
        for entry in try networkBans() { used.insert(entry.origin) }
        for entry in try listEntries() { used.insert(entry.origin) }
        return used
    }

    /// Frees every named slot that no entry carries, but those named `keeping` (what the caller
    /// is about to name again: a daemon's jails). Run by the daemon at start, before its writers
    /// (its jails, the CrowdSec bouncer, the fleet) hold slots of their own: the only other
    /// writers then are lists loaded by `portcullis blocklist`, which name their slot and install
    /// its entries under one hold of the same lock.
    /// - Returns: the names freed.
    @discardableResult
    public func recycleOriginSlots(keeping: Set<String>) throws(FirewallError) -> [String] {
        try withWritersLock { () throws(FirewallError) -> [String] in
            let used = try originsInUse()
            let unused = try originNames().filter { !used.contains($0.key) && !keeping.contains($0.value) }
            try freeOriginSlots(unused.keys)
            return unused.values.sorted()
        }
    }

    /// Frees the slots of `names` that no entry carries, for a writer that owns those names
    /// (a `ListInstaller` its prefix's). - Returns: the names freed.
    @discardableResult
    func releaseOriginSlots(named names: (String) -> Bool) throws(FirewallError) -> [String] {
        try withWritersLock { () throws(FirewallError) -> [String] in
            let candidates = try originNames().filter { names($0.value) }
            guard !candidates.isEmpty else { return [] }
            var used = Set<UInt32>()
            for entry in try listEntries() { used.insert(entry.origin) }
            let unused = candidates.filter { !used.contains($0.key) }
            try freeOriginSlots(unused.keys)
            return unused.values.sorted()
        }
    }

    /// What holds the named slots, for a message when none is free: counts by kind.
    public func originCensus() throws(FirewallError) -> String {
        var kinds: [String: Int] = [:]
        for name in try originNames().values {
            let kind =
                name.hasPrefix("list:")
                ? "lists"
                : name.hasPrefix("crowdsec/") ? "CrowdSec origins" : name.hasPrefix("fleet/") ? "fleet hosts" : "jails"
            kinds[kind, default: 0] += 1
        }
        return kinds.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
    }
}

extension BanMaps {
    /// Removes the list `name` in one swap and frees its origin slot. - Returns: its entries
    /// removed (nil: no such list is loaded).
    public func unloadList(_ name: String) throws(FirewallError) -> Int? {
        guard let origin = Self.listOrigin(name) else { return nil }
        return try withWritersLock { () throws(FirewallError) -> Int? in
            guard let slot = try originNames().first(where: { $0.value == origin })?.key else { return nil }
            let count = try listEntries().count(where: { $0.origin == slot })
            if count > 0 { try swapList(origin: slot, with: []) }
            try freeOriginSlots([slot])
            return count > 0 ? count : nil
        }
    }
}
