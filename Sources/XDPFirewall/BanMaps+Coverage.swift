// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

// The maps' configuration: the fixed prefix lengths, the coverage bitmap, the structures in use.

extension BanMaps {
    /// The fixed prefix lengths of `family`, longest first (`PC_CONFIG_LENGTHS_*`).
    public func prefixLengths(_ family: IPAddress.Family) throws(FirewallError) -> [Int] {
        let packed = try readConfig(family == .ipv4 ? PC_CONFIG_LENGTHS_V4 : PC_CONFIG_LENGTHS_V6)
        return (0..<Int(PC_MAX_PREFIX_LENGTHS)).map { Int((packed >> (8 * UInt32($0))) & 0xff) }.prefix { $0 != 0 }
            .map { $0 }
    }

    /// Sets the fixed prefix lengths of a family: refused while its prefix hash holds entries of
    /// other lengths (they would no longer be looked up).
    public func setPrefixLengths(_ lengths: [Int], family: IPAddress.Family) throws(FirewallError) {
        let full = IPNetwork.fullLength(family)
        let sorted = Array(Set(lengths)).sorted(by: >)
        guard sorted.count <= Int(PC_MAX_PREFIX_LENGTHS), sorted.allSatisfy({ (1..<full).contains($0) }) else {
            throw .invalidAddress(
                "prefix lengths \(lengths.map(String.init).joined(separator: ",")): at most "
                    + "\(PC_MAX_PREFIX_LENGTHS), each 1...\(full - 1)")
        }
        let current = try prefixLengths(family)
        guard current != sorted else { return }
        if try !networkEntries(in: family == .ipv4 ? prefixV4 : prefixV6, family: family, place: .prefix).isEmpty {
            throw .incompatiblePins(
                path: PC_MAP_CONFIG,
                detail: "the pinned maps hold \(family == .ipv4 ? "IPv4" : "IPv6") prefix bans of the lengths "
                    + "\(current.map(String.init).joined(separator: ",")); lift them (portcullis unban) before changing "
                    + "the lengths to \(sorted.map(String.init).joined(separator: ","))")
        }
        let packed = sorted.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        try writeConfig(family == .ipv4 ? PC_CONFIG_LENGTHS_V4 : PC_CONFIG_LENGTHS_V6, packed)
    }

    /// Made by a load: the default lengths (IPv4 /24; IPv6 /64, /56, /48), nothing used yet.
    func writeDefaultConfiguration() throws(FirewallError) {
        try writeConfig(PC_CONFIG_LENGTHS_V4, PC_DEFAULT_LENGTHS_V4)
        try writeConfig(PC_CONFIG_LENGTHS_V6, PC_DEFAULT_LENGTHS_V6)
    }

    func readConfig(_ index: pc_config_index) throws(FirewallError) -> UInt32 {
        var key = index.rawValue
        var value: UInt32 = 0
        try bpfCall("read \(PC_MAP_CONFIG)") { bpf_map_lookup_elem(config.fd, &key, &value) }
        return value
    }

    func writeConfig(_ index: pc_config_index, _ value: UInt32) throws(FirewallError) {
        var key = index.rawValue
        var value = value
        try bpfCall("write \(PC_MAP_CONFIG)") { bpf_map_update_elem(config.fd, &key, &value, UInt64(BPF_ANY)) }
    }

    /// The coverage slots a network touches (portcullis_abi.h, `pc_cover`).
    enum Coverage: Equatable {
        /// IPv4: its /24s, `count` of them from `start`.
        case range(start: UInt32, count: UInt32)
        /// IPv6: the slots of its /64s.
        case slots([UInt32])
        /// IPv6 shorter than /48: every IPv6 source counts as covered.
        case allIPv6
    }

    /// The slot of an IPv6 /64 whose first two 32-bit words (host order) are `a` and `b`.
    static func coverSlot(ipv6 a: UInt32, _ b: UInt32) -> UInt32 {
        let hash = (a ^ (b &* PC_COVER_HASH_A)) &* PC_COVER_HASH_B
        return UInt32(PC_COVER_V6_BASE) + (hash >> UInt32(32 - PC_COVER_V6_BITS))
    }

    /// The first two 32-bit words of a network's address, in host order (the second 0 for IPv4).
    private static func words(_ network: IPNetwork) -> (UInt32, UInt32) {
        network.address.withUnsafeBytes {
            (
                $0.loadUnaligned(as: UInt32.self).bigEndian,
                $0.count >= 8 ? $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self).bigEndian : 0
            )
        }
    }

    static func coverage(_ network: IPNetwork) -> Coverage {
        let words = words(network)
        if network.family == .ipv4 {
            return .range(start: words.0 >> 8, count: network.length >= 24 ? 1 : 1 << UInt32(24 - network.length))
        }
        guard network.length >= 48 else { return .allIPv6 }
        let count = network.length >= 64 ? 1 : UInt32(1) << UInt32(64 - network.length)
        return .slots((0..<count).map { coverSlot(ipv6: words.0, words.1 &+ $0) })
    }

    /// Sets the coverage bit of `kind` (one of `PC_COVER_*`) in every slot `networks` touch,
    /// before the networks go in.
    func cover(_ networks: [IPNetwork], kind: UInt32) throws(FirewallError) {
        for network in networks { try cover(network, kind: kind) }
    }

    /// `cover` of one network.
    func cover(_ network: IPNetwork, kind: UInt32) throws(FirewallError) {
        let bit = UInt64(kind.trailingZeroBitCount)
        func set(_ slot: UInt32) {
            cportcullis_fetch_or_u64(coverBits + Int(slot >> 4), UInt64(1) << (UInt64(slot & 15) * 4 + bit))
        }
        // One /64 or less (a host): its slot, without the array `coverage` makes.
        if network.family == .ipv6, network.length >= 64 {
            let words = Self.words(network)
            set(Self.coverSlot(ipv6: words.0, words.1))
            return
        }
        switch Self.coverage(network) {
        case .range(let start, let count):
            var slot = start
            let end = start + count
            while slot < end {
                // Sixteen slots a word: whole words at once where the range spans them.
                if slot & 15 == 0 && end - slot >= 16 {
                    cportcullis_fetch_or_u64(coverBits + Int(slot >> 4), 0x1111_1111_1111_1111 << bit)
                    slot += 16
                } else {
                    set(slot)
                    slot += 1
                }
            }
        case .slots(let slots):
            for slot in slots { set(slot) }
        case .allIPv6:
            // Every kind at once: writers never read and rewrite this element (no lost update).
            try writeConfig(PC_CONFIG_COVER_ALL_V6, 0xf)
        }
    }

    /// Marks a structure used (the program looks it up from now on): before its first entry goes in.
    func markUsed(_ index: pc_config_index) throws(FirewallError) {
        if try readConfig(index) == 0 { try writeConfig(index, 1) }
    }
}
