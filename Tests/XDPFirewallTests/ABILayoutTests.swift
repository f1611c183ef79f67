// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Testing
import TestSupport
import XDPTesting
@testable import XDPFirewall

/// Swift sees the ABI header through clang for x86-64; the program was compiled for BPF. The BTF in
/// the compiled object records the layout the program really uses: the two must agree byte for byte.
@Suite("ABI layout")
struct ABILayoutTests {
    @Test func banValueMatchesTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        #expect(try btf.size("pc_ban") == MemoryLayout<pc_ban>.size)
        #expect(try btf.member("pc_ban", "expires_ns") == (MemoryLayout<pc_ban>.offset(of: \.expires_ns)!, 8))
        #expect(try btf.member("pc_ban", "dropped") == (MemoryLayout<pc_ban>.offset(of: \.dropped)!, 8))
        #expect(try btf.member("pc_ban", "origin") == (MemoryLayout<pc_ban>.offset(of: \.origin)!, 4))
        #expect(try btf.member("pc_ban", "tag") == (MemoryLayout<pc_ban>.offset(of: \.tag)!, 4))
        #expect(try btf.size("pc_origin") == MemoryLayout<pc_origin>.size)
        #expect(try btf.member("pc_origin", "name") == (0, Int(PC_ORIGIN_NAME_SIZE)))
    }

    @Test func keysMatchTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        #expect(try btf.size("pc_ipv4_key") == MemoryLayout<pc_ipv4_key>.size)
        #expect(try btf.size("pc_ipv6_key") == MemoryLayout<pc_ipv6_key>.size)
        #expect(try btf.member("pc_ipv4_key", "addr") == (0, 4))
        #expect(try btf.member("pc_ipv6_key", "addr") == (0, 16))
        // The prefix and trie keys: struct bpf_lpm_trie_key's layout.
        #expect(try btf.size("pc_prefix4_key") == MemoryLayout<pc_prefix4_key>.size)
        #expect(try btf.size("pc_prefix6_key") == MemoryLayout<pc_prefix6_key>.size)
        #expect(try btf.member("pc_prefix4_key", "prefixlen") == (0, 4))
        #expect(try btf.member("pc_prefix4_key", "addr") == (4, 4))
        #expect(try btf.member("pc_prefix6_key", "addr") == (4, 16))
    }

    @Test func statsAndMetaMatchTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        #expect(try btf.size("pc_stat") == MemoryLayout<pc_stat>.size)
        #expect(try btf.member("pc_stat", "packets") == (MemoryLayout<pc_stat>.offset(of: \.packets)!, 8))
        #expect(try btf.member("pc_stat", "bytes") == (MemoryLayout<pc_stat>.offset(of: \.bytes)!, 8))
        #expect(try btf.size("pc_meta") == MemoryLayout<pc_meta>.size)
        #expect(try btf.member("pc_meta", "magic") == (MemoryLayout<pc_meta>.offset(of: \.magic)!, 4))
        #expect(try btf.member("pc_meta", "abi_version") == (MemoryLayout<pc_meta>.offset(of: \.abi_version)!, 4))
    }

    /// Each CPU's pending drops (`PendingDrops` reads them through the imported fields).
    @Test func pendingDropsMatchTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        typealias Slot = pc_pending
        #expect(try btf.size("pc_pending") == MemoryLayout<Slot>.size)
        #expect(try btf.member("pc_pending", "kind") == (MemoryLayout<Slot>.offset(of: \.kind)!, 1))
        #expect(try btf.member("pc_pending", "family") == (MemoryLayout<Slot>.offset(of: \.family)!, 1))
        #expect(try btf.member("pc_pending", "prefixlen") == (MemoryLayout<Slot>.offset(of: \.prefixlen)!, 4))
        #expect(try btf.member("pc_pending", "addr") == (MemoryLayout<Slot>.offset(of: \.addr)!, 16))
        #expect(try btf.member("pc_pending", "tag") == (MemoryLayout<Slot>.offset(of: \.tag)!, 4))
        #expect(try btf.member("pc_pending", "count") == (MemoryLayout<Slot>.offset(of: \.count)!, 8))
    }

    /// The clock's map (`MapSpec.clock` checks pinned ones by this size).
    @Test func clockMatchesTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        #expect(try btf.size("pc_clock") == MemoryLayout<pc_clock>.size)
        #expect(try btf.member("pc_clock", "boot_ns") == (MemoryLayout<pc_clock>.offset(of: \.boot_ns)!, 8))
        #expect(try btf.member("pc_clock", "fresh_until") == (MemoryLayout<pc_clock>.offset(of: \.fresh_until)!, 8))
        #expect(try btf.member("pc_clock", "tick_jiffies") == (MemoryLayout<pc_clock>.offset(of: \.tick_jiffies)!, 8))
        #expect(try btf.member("pc_clock", "timer") == (MemoryLayout<pc_clock>.offset(of: \.timer)!, 16))
    }

    /// The ban installer's slots (written by `BanInstaller.fill` through the imported fields) and its
    /// context (`BanInstaller.run`).
    @Test func installerStructsMatchTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        typealias Slot = pc_install_slot
        #expect(try btf.size("pc_install_slot") == MemoryLayout<Slot>.size)
        #expect(MemoryLayout<Slot>.stride == MemoryLayout<Slot>.size, "the slots are an array of this stride")
        #expect(try btf.member("pc_install_slot", "addr") == (MemoryLayout<Slot>.offset(of: \.addr)!, 16))
        #expect(try btf.member("pc_install_slot", "expires_ns") == (MemoryLayout<Slot>.offset(of: \.expires_ns)!, 8))
        #expect(try btf.member("pc_install_slot", "origin") == (MemoryLayout<Slot>.offset(of: \.origin)!, 4))
        #expect(try btf.member("pc_install_slot", "family") == (MemoryLayout<Slot>.offset(of: \.family)!, 1))
        #expect(try btf.member("pc_install_slot", "outcome") == (MemoryLayout<Slot>.offset(of: \.outcome)!, 1))
        #expect(try btf.member("pc_install_slot", "reserved") == (MemoryLayout<Slot>.offset(of: \.reserved)!, 2))
        #expect(try btf.size("pc_install_args") == MemoryLayout<pc_install_args>.size)
        #expect(try btf.member("pc_install_args", "count") == (MemoryLayout<pc_install_args>.offset(of: \.count)!, 4))
        #expect(
            try btf.member("pc_install_args", "reserved") == (MemoryLayout<pc_install_args>.offset(of: \.reserved)!, 4))
    }

    /// The maps the object declares have the types and sizes user space checks pins against.
    @Test func mapDefinitionsMatchTheSpecs() throws {
        let btf = try ObjectBTF(path: try Products.filterObject())
        for spec in MapSpec.all {
            let map = try #require(bpf_object__find_map_by_name(btf.object, spec.name), "no map \(spec.name)")
            #expect(bpf_map__type(map) == spec.type, "\(spec.name) type")
            #expect(Int(bpf_map__key_size(map)) == spec.keySize, "\(spec.name) key size")
            #expect(Int(bpf_map__value_size(map)) == spec.valueSize, "\(spec.name) value size")
            if spec.name == PC_MAP_BANS_V4 || spec.name == PC_MAP_BANS_V6 {
                #expect(bpf_map__max_entries(map) == UInt32(PC_DEFAULT_BAN_ENTRIES))
                #expect(bpf_map__map_flags(map) & UInt32(BPF_F_NO_PREALLOC) == 0, "ban maps are preallocated")
            }
            if spec.name == PC_MAP_ORIGINS { #expect(bpf_map__max_entries(map) == UInt32(PC_MAX_ORIGINS)) }
            if let maxEntries = spec.maxEntries {
                #expect(bpf_map__max_entries(map) == maxEntries, "\(spec.name) size")
            }
        }
        // pc_drops: a slot per origin and family, the index the program computes.
        #expect(MapSpec.drops.maxEntries == UInt32(PC_MAX_ORIGINS) * UInt32(PC_DROP_FAMILIES))
        #expect(PC_DROP_FAMILY_IPV4 < PC_DROP_FAMILIES && PC_DROP_FAMILY_IPV6 < PC_DROP_FAMILIES)
        #expect(MemoryLayout<pc_stat>.size % 8 == 0, "per-CPU values are read at an 8-byte stride")
    }
}
