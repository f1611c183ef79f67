// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import CPortcullis
import Glibc
import Testing
import TestSupport
@testable import XDPFirewall
import XDPTesting
import PortcullisCore
import PortcullisSystem

@Suite("Pinned maps", .enabled(if: Privileges.runnable), .serialized)
struct MapTests {
    @Test func pinnedMapsAreReusedAcrossLoads() throws {
        try Privileges.require()
        let scratch = ScratchPinDirectory("reuse")
        defer { scratch.remove() }
        let object = try Products.filterObject()
        let address = IPAddress("198.18.1.1")!
        let end = try #require(BanExpiry.after(seconds: 600))
        do {
            let first = try LoadedProgram(filterAt: object, pinDirectory: scratch.pins, mapEntries: 2048)
            try #require(first.maps).ban(address, end)
            _ = try first.testRun(frame: TestFrame.udp(from: address, to: IPAddress("198.18.255.254")!))
        }  // first instance released: only the pins keep the maps alive
        #expect(scratch.pins.holdsMaps)
        let second = try LoadedProgram(filterAt: object, pinDirectory: scratch.pins)
        let maps = try #require(second.maps)
        #expect(maps.capacity == 2048, "the pinned size stands")
        #expect(try maps.lookup(address) == BanEntry(address: address, expiry: end, dropped: 1))
        #expect(
            try second.testRun(frame: TestFrame.udp(from: address, to: IPAddress("198.18.255.254")!)).verdict == .drop)
        #expect(try maps.counters().dropped.packets == 2, "counters are pinned too")
        // The CLI's way in: open from the pins alone.
        let opened = try BanMaps.open(pinnedIn: scratch.pins)
        #expect(try opened.entries().map(\.address) == [address])
        // Asking for another size than the pinned maps have is refused, not ignored.
        #expect(throws: FirewallError.mapSizeMismatch(path: scratch.path, pinned: 2048, requested: 4096)) {
            _ = try LoadedProgram(filterAt: object, pinDirectory: scratch.pins, mapEntries: 4096)
        }
    }

    @Test func pinsOfAnotherLayoutAreRefused() throws {
        try Privileges.require()
        let scratch = ScratchPinDirectory("layout")
        defer { scratch.remove() }
        try scratch.pins.prepare()
        // A map named like ours with 8-byte keys.
        let fd = bpf_map_create(BPF_MAP_TYPE_HASH, PC_MAP_BANS_V4, 8, 16, 16, nil)
        try #require(fd >= 0)
        defer { close(fd) }
        try #require(bpf_obj_pin(fd, scratch.path + "/" + PC_MAP_BANS_V4) == 0)
        let error = try #require(throws: FirewallError.self) {
            _ = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
        }
        guard case .incompatiblePins = error else { Issue.record("expected incompatiblePins, got \(error)"); return }
        let opening = try #require(throws: FirewallError.self) { _ = try BanMaps.open(pinnedIn: scratch.pins) }
        guard case .incompatiblePins = opening else {
            Issue.record("expected incompatiblePins, got \(opening)"); return
        }
    }

    @Test func layoutMarkerOfAnotherVersionIsRefused() throws {
        try Privileges.require()
        let scratch = ScratchPinDirectory("marker")
        defer { scratch.remove() }
        do {
            let program = try LoadedProgram(
                filterAt: try Products.filterObject(), pinDirectory: scratch.pins,
                mapEntries: 16)
            var key: UInt32 = 0
            var marker = pc_meta(magic: UInt32(PC_ABI_MAGIC), abi_version: UInt32(PC_ABI_VERSION) + 1)
            let maps = try #require(program.maps)
            try #require(bpf_map_update_elem(maps.meta.fd, &key, &marker, UInt64(BPF_ANY)) == 0)
        }
        for error in [
            try #require(throws: FirewallError.self) { _ = try BanMaps.open(pinnedIn: scratch.pins) },
            try #require(throws: FirewallError.self) {
                _ = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
            },
        ] {
            guard case .incompatiblePins(_, let detail) = error, detail.contains("version") else {
                Issue.record("expected incompatiblePins naming the version, got \(error)")
                continue
            }
        }
    }

    @Test func batchedBansAndUnbans() throws {
        try Privileges.require()
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 4096)
        let maps = try #require(program.maps)
        let v4 = (0..<1500).map { IPAddress("198.18.\($0 / 256).\($0 % 256)")! }
        let v6 = (0..<700).map { IPAddress("2001:2::\(String($0, radix: 16))")! }
        let end = try #require(BanExpiry.after(seconds: 60))
        #expect(try maps.ban(batch: (v4 + v6).map { BanRequest($0, end) }) == 2200)
        let listed = try maps.entries()
        #expect(listed.count == 2200)
        #expect(Set(listed.map(\.address)) == Set(v4 + v6))
        #expect(listed.allSatisfy { $0.expiry == end && $0.dropped == 0 })
        // Unbanning a mix of banned and never-banned addresses removes exactly the banned ones.
        let strangers = (0..<50).map { IPAddress("198.19.0.\($0)")! }
        let toRemove = Array(v4.prefix(1000)) + strangers + Array(v6.prefix(300))
        #expect(try maps.unban(batch: toRemove) == 1300)
        #expect(try maps.entries().count == 900)
        // A batch re-ban of a banned address restarts its drop count (documented; ban(_:_:) keeps it).
        let kept = v4[1400]
        _ = try program.testRun(frame: TestFrame.udp(from: kept, to: IPAddress("198.18.255.254")!), repetitions: 3)
        #expect(try maps.lookup(kept)?.dropped == 3)
        try maps.ban(kept, end)
        #expect(try maps.lookup(kept)?.dropped == 3)
        try maps.ban(batch: [BanRequest(kept, end)])
        #expect(try maps.lookup(kept)?.dropped == 0)
    }

    /// `list --json` streamed from the maps (`writeJSONListing`, hand-formatted for speed) and the
    /// one listing row (`BanRow`, which the control reply and the CLI's table use) say the same.
    @Test func streamedListingIsTheListingRows() throws {
        try Privileges.require()
        let scratch = ScratchPinDirectory("listing")
        defer { scratch.remove() }
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
        let maps = try #require(program.maps)
        let slot = try #require(try maps.originSlots(for: ["sshd \"quoted\""])["sshd \"quoted\""])
        let dropping = IPAddress("198.18.2.1")!
        try maps.ban(dropping, try #require(BanExpiry.after(seconds: 600)), origin: slot)
        try maps.ban(IPAddress("2001:2::5")!, .permanent)
        try maps.ban(IPAddress("198.18.2.2")!, .at(bootNanoseconds: SystemClock.bootNanoseconds() + 200_000_000))
        try maps.ban(network: try IPNetwork(parsing: "198.18.3.0/24"), try #require(BanExpiry.after(seconds: 60)))
        try maps.ban(network: try IPNetwork(parsing: "2001:2:0:1::/64"), .permanent)
        _ = try program.testRun(frame: TestFrame.udp(from: dropping, to: IPAddress("198.18.255.254")!), repetitions: 2)
        // Past the short ban's end, so one row says expired.
        while try maps.lookup(IPAddress("198.18.2.2")!)?.isExpired(now: SystemClock.bootNanoseconds()) == false {
            SystemClock.sleep(nanoseconds: 50_000_000)
        }
        var path = Array("/tmp/portcullis-listing-XXXXXX".utf8CString)
        let fd = mkstemp(&path)
        try #require(fd >= 0)
        defer {
            close(fd)
            unlink(path)
        }
        let now = SystemClock.bootNanoseconds()
        let written = try maps.writeJSONListing(to: fd, now: now)
        let rows = try maps.listing(now: now)
        let text = try TextFile.read(String(cString: path))
        let streamed = try JSONDecoder().decode([BanRow].self, from: Data(text.utf8))
        #expect(written == 5)
        #expect(streamed == rows)
        let jailed = try #require(rows.first { $0.address == "198.18.2.1" })
        #expect(jailed.jail == "sshd \"quoted\"" && jailed.dropped == 2 && !jailed.expired)
        #expect((1...600).contains(jailed.expiresIn ?? 0))
        #expect(rows.contains { $0.address == "198.18.2.2" && $0.expired && $0.expiresIn == 0 })
        #expect(
            rows.contains(
                BanRow(address: "2001:2:0:1::/64", expiresIn: nil, expired: false, dropped: 0, jail: "manual")))
    }

    @Test func fullBanMapIsReportedNotFatal() throws {
        try Privileges.require()
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 4)
        let maps = try #require(program.maps)
        let addresses = (1...5).map { IPAddress("198.18.2.\($0)")! }
        for address in addresses.prefix(4) { try maps.ban(address, .permanent) }
        #expect(throws: FirewallError.banMapFull(family: "IPv4", capacity: 4, installed: 0)) {
            try maps.ban(addresses[4], .permanent)
        }
        // In a batch: the IPv4 map is full, the IPv6 one is not; the IPv6 bans still go in.
        let v6 = IPAddress("2001:2::4")!
        #expect(throws: FirewallError.banMapFull(family: "IPv4", capacity: 4, installed: 0)) {
            try maps.ban(batch: [BanRequest(addresses[4], .permanent), BanRequest(v6, .permanent)])
        }
        #expect(try maps.lookup(v6) != nil)
        // Replacing an existing ban in a full map still works.
        try maps.ban(addresses[0], try #require(BanExpiry.after(seconds: 5)))
        #expect(try maps.entries().count == 5)
    }
}
