// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
@_spi(Testing) @testable import XDPFirewall
import XDPTesting

/// The list layer written in place (the kernel's list writer, and user space where it does not
/// load) and its hosts hashes in both layouts (preallocated from layout 4; layout 3's, an earlier
/// build's pins, allocating per entry), on real maps with the filter run on crafted frames.
@Suite("List layer in place and its layouts", .enabled(if: Privileges.runnable), .serialized)
struct ListLayerTests {
    let scratch = ScratchPinDirectory("listlayer")
    let server4 = IPAddress("198.19.255.254")!
    let server6 = IPAddress("2001:2::fffe")!

    func network(_ text: String) throws -> IPNetwork { try IPNetwork(parsing: text) }

    func verdict(_ program: LoadedProgram, from source: String, times: Int32 = 1) throws -> XDPVerdict {
        let address = try #require(IPAddress(source))
        let frame = TestFrame.udp(from: address, to: address.family == .ipv4 ? server4 : server6)
        return try program.testRun(frame: frame, repetitions: times).verdict
    }

    func entry(_ text: String, _ expiry: BanExpiry, _ origin: UInt32) throws -> ListEntry {
        ListEntry(network: try network(text), expiry: expiry, origin: origin)
    }

    /// The flags of the hosts hash in force of `family` (what its template makes of it).
    func hostsFlags(_ maps: BanMaps, _ family: IPAddress.Family) throws -> UInt32 {
        let generation = try maps.readConfig(family == .ipv4 ? PC_CONFIG_LISTS_GEN_V4 : PC_CONFIG_LISTS_GEN_V6) & 1
        let inner = try #require(
            try maps.innerMap(family == .ipv4 ? maps.listHostsV4 : maps.listHostsV6, slot: generation, name: "hosts"))
        var info = bpf_map_info()
        var size = UInt32(MemoryLayout<bpf_map_info>.size)
        let read = bpf_obj_get_info_by_fd(inner.fd, &info, &size)
        #expect(read == 0)
        return info.map_flags
    }

    @Test(
        "a delta in place, through the kernel's list writer and from user space alike: new hosts and networks drop, an owned host keeps its drops with its new end, another list's host and network stay, removals take only the owner's",
        arguments: [true, false])
    func deltaInPlace(kernelWriter: Bool) throws {
        try Privileges.require()
        defer { scratch.remove() }
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
        let maps = try #require(program.maps)
        if kernelWriter {
            #expect(maps.listWriterProblem == nil, "the kernel's list writer loads on this kernel")
        } else {
            maps.turnListWriterOff()
            #expect(maps.listWriterProblem != nil)
        }
        let soon = try #require(BanExpiry.after(seconds: 600))
        let later = try #require(BanExpiry.after(seconds: 7200))
        let owned: (UInt32) -> Bool = { $0 == 20 || $0 == 21 }
        // Another list (origin 5) holds a host and a network of each family; the owner a host.
        try maps.replaceList(
            origin: 5,
            with: [
                try network("198.18.13.7"), try network("2001:2:0:13::7"), try network("198.18.14.0/24"),
                try network("2001:2:0:14::/64"),
            ])
        try maps.updateListEntries(owned: owned, adding: [try entry("198.18.10.7", soon, 20)], removing: [])
        #expect(try verdict(program, from: "198.18.10.7", times: 3) == .drop)
        let update = try maps.updateListEntries(
            owned: owned,
            adding: [
                try entry("198.18.10.7", later, 21), try entry("198.18.13.7", later, 20),
                try entry("2001:2:0:13::7", later, 20), try entry("198.18.14.0/24", later, 20),
                try entry("198.18.20.1", soon, 20), try entry("2001:2:0:20::1", soon, 21),
                try entry("198.18.21.0/24", soon, 20), try entry("2001:2:0:21::/64", soon, 21),
            ], removing: [])
        #expect(update.added == 5)
        #expect(update.hostsByKernel == (kernelWriter ? 5 : 0), "the hosts went where the test says")
        #expect(
            Set(update.heldByOthers)
                == Set([try network("198.18.13.7"), try network("2001:2:0:13::7"), try network("198.18.14.0/24")]))
        let entries = Dictionary(try maps.listEntries().map { ($0.network, $0) }) { a, _ in a }
        let kept = try #require(entries[try network("198.18.10.7")])
        #expect(kept.dropped == 3 && kept.origin == 21 && kept.expiry == later, "replaced with its drops kept")
        let (otherHost, otherNetwork) = (try network("198.18.13.7"), try network("198.18.14.0/24"))
        #expect(entries[otherHost]?.origin == 5 && entries[otherNetwork]?.origin == 5)
        for source in ["198.18.20.1", "2001:2:0:20::1", "198.18.21.9", "2001:2:0:21::9", "198.18.13.7", "198.18.14.9"] {
            #expect(try verdict(program, from: source) == .drop, "\(source)")
        }
        // Removed in place: only what the owner holds (a network another list holds stays).
        let removal = try maps.updateListEntries(
            owned: owned, adding: [],
            removing: [
                try network("198.18.20.1"), try network("2001:2:0:20::1"), try network("198.18.21.0/24"),
                try network("198.18.13.7"), try network("2001:2:0:14::/64"), try network("198.18.99.1"),
            ])
        #expect(removal.removed == 3 && removal.hostsByKernel == (kernelWriter ? 4 : 0))
        for source in ["198.18.20.1", "2001:2:0:20::1", "198.18.21.9"] {
            #expect(try verdict(program, from: source) == .pass, "\(source)")
        }
        for source in ["198.18.13.7", "2001:2:0:14::9", "2001:2:0:21::9", "198.18.10.7"] {
            #expect(try verdict(program, from: source) == .drop, "\(source)")
        }
    }

    @Test(
        "hosts hashes: preallocated in pins made now (layout 4); pins of layout 3 are used as they are, their hashes allocating per entry, and keep their marker"
    )
    func hostsHashLayouts() throws {
        try Privileges.require()
        defer { scratch.remove() }
        let soon = try #require(BanExpiry.after(seconds: 600))
        let owned: (UInt32) -> Bool = { $0 == 20 }
        do {
            let program = try LoadedProgram(
                filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
            let maps = try #require(program.maps)
            #expect(try maps.readMeta().abi_version == UInt32(PC_ABI_VERSION))
            try maps.replaceListEntries(owned: owned, with: [try entry("198.18.30.1", soon, 20)])
            #expect(try hostsFlags(maps, .ipv4) == 0, "preallocated")
            #expect(try verdict(program, from: "198.18.30.1") == .drop)
        }
        scratch.remove()
        // Layout 3's maps, as an earlier build made and stamped them.
        let variant = try VariantFilterObject(flags: "-DPC_LAYOUT_3")
        defer { variant.remove() }
        do {
            let earlier = try LoadedProgram(filterAt: variant.path, pinDirectory: scratch.pins, mapEntries: 1024)
            var key: UInt32 = 0
            var marker = pc_meta(magic: UInt32(PC_ABI_MAGIC), abi_version: UInt32(PC_ABI_VERSION_ALLOCATING_HOSTS))
            #expect(bpf_map_update_elem(try #require(earlier.maps).meta.fd, &key, &marker, UInt64(BPF_ANY)) == 0)
        }
        // Opened by this build: written with hashes of their kind, in place and by swaps.
        let maps = try BanMaps.open(pinnedIn: scratch.pins)
        #expect(maps.listHostsFlags == UInt32(BPF_F_NO_PREALLOC))
        try maps.replaceListEntries(owned: owned, with: [try entry("198.18.31.1", soon, 20)])
        try maps.updateListEntries(owned: owned, adding: [try entry("198.18.31.2", soon, 20)], removing: [])
        try maps.loadList("older", [try network("198.18.32.1")])
        #expect(try hostsFlags(maps, .ipv4) == UInt32(BPF_F_NO_PREALLOC))
        // This build's program loaded beside them: the entries drop, the marker stays 3.
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
        for source in ["198.18.31.1", "198.18.31.2", "198.18.32.1"] {
            #expect(try verdict(program, from: source) == .drop, "\(source)")
        }
        #expect(
            try BanMaps.open(pinnedIn: scratch.pins).readMeta().abi_version == UInt32(PC_ABI_VERSION_ALLOCATING_HOSTS))
    }
}
