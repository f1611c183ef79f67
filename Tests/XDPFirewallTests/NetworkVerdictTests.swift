// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
@testable import XDPFirewall
import XDPTesting

/// Prefix bans, CIDR bans, blocklists and the allowlist, as the kernel runs the filter on crafted
/// frames (BPF_PROG_TEST_RUN).
@Suite("XDP network verdicts", .enabled(if: Privileges.runnable), .serialized)
struct NetworkVerdictTests {
    let scratch = ScratchPinDirectory("networks")
    let server4 = IPAddress("198.19.255.254")!
    let server6 = IPAddress("2001:2::fffe")!

    func withFilter(_ body: (LoadedProgram, BanMaps) throws -> Void) throws {
        try Privileges.require()
        defer { scratch.remove() }
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
        try body(program, try #require(program.maps))
    }

    /// The verdict of a frame from `source`, and the counter that moved.
    func verdict(_ program: LoadedProgram, _ maps: BanMaps, from source: String) throws -> (XDPVerdict, String) {
        let address = try #require(IPAddress(source))
        let frame = TestFrame.udp(from: address, to: address.family == .ipv4 ? server4 : server6)
        let before = try maps.counters()
        let run = try program.testRun(frame: frame)
        let moved = zip(try maps.counters().named, before.named).filter { $0.count.packets != $1.count.packets }
        try #require(moved.count == 1, "exactly one counter moves, got \(moved.map(\.0.name))")
        return (run.verdict, moved[0].0.name)
    }

    func network(_ text: String) throws -> IPNetwork { try IPNetwork(parsing: text) }

    @Test(
        "fixed-length prefixes (IPv4 /24, IPv6 /64 /56 /48) drop every source inside and none outside, at their boundaries"
    )
    func fixedPrefixes() throws {
        try withFilter { program, maps in
            #expect(try maps.prefixLengths(.ipv4) == [24] && maps.prefixLengths(.ipv6) == [64, 56, 48])
            for (text, inside, outside) in [
                ("198.18.1.0/24", ["198.18.1.0", "198.18.1.255", "198.18.1.77"], ["198.18.0.255", "198.18.2.0"]),
                (
                    "2001:2:0:a::/64", ["2001:2:0:a::", "2001:2:0:a:ffff:ffff:ffff:ffff"],
                    ["2001:2:0:b::", "2001:2:0:9:ffff:ffff:ffff:ffff"]
                ),
                (
                    "2001:2:0:100::/56", ["2001:2:0:100::1", "2001:2:0:1ff:ffff::1"],
                    ["2001:2:0:200::", "2001:2:0:ff::1"]
                ),
                ("2001:2:1::/48", ["2001:2:1::1", "2001:2:1:ffff::1"], ["2001:2:2::", "2001:2:0:ffff::1"]),
            ] {
                let banned = try network(text)
                #expect(try maps.place(of: banned) == .prefix)
                try maps.ban(network: banned, .permanent)
                for source in inside {
                    #expect(try verdict(program, maps, from: source) == (.drop, "dropped"), "\(source) in \(text)")
                }
                for source in outside {
                    #expect(try verdict(program, maps, from: source) == (.pass, "passed"), "\(source) outside \(text)")
                }
                #expect(try maps.networkBans().first { $0.network == banned }?.dropped == UInt64(inside.count))
                #expect(try maps.unban(network: banned))
                #expect(try verdict(program, maps, from: inside[0]) == (.pass, "passed"), "lifted")
            }
        }
    }

    @Test("other lengths go to the CIDR trie: inside drops, outside passes; a more specific entry decides within it")
    func cidrTrie() throws {
        try withFilter { program, maps in
            let wide = try network("198.18.0.0/15")
            #expect(try maps.place(of: wide) == .cidr)
            try maps.ban(network: wide, .permanent)
            #expect(try verdict(program, maps, from: "198.18.0.1") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.19.255.1") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.20.0.1") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "198.17.255.255") == (.pass, "passed"))
            try maps.ban(network: try network("2001:2::/33"), .permanent)
            #expect(try verdict(program, maps, from: "2001:2:7fff::1") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "2001:2:8000::1") == (.pass, "passed"))
            // An ended /20 inside the /15: the trie's most specific entry decides, and it has ended.
            try maps.ban(network: try network("198.18.16.0/20"), .at(bootNanoseconds: 1))
            #expect(try verdict(program, maps, from: "198.18.16.1") == (.pass, "expired"))
            let ended = try network("198.18.16.0/20")
            guard case .lifted = try maps.liftIfEnded(network: ended, now: SystemClock.bootNanoseconds()) else {
                Issue.record("the ended /20 was not lifted")
                return
            }
            guard case .inForce = try maps.liftIfEnded(network: wide, now: SystemClock.bootNanoseconds()) else {
                Issue.record("the /15 in force was lifted")
                return
            }
            #expect(try verdict(program, maps, from: "198.18.16.1") == (.drop, "dropped"))
        }
    }

    @Test(
        "overlaps: any ban in force drops whichever structure holds it; an ended exact ban does not hide a prefix in force; an ended prefix passes as expired"
    )
    func overlaps() throws {
        try withFilter { program, maps in
            try maps.ban(IPAddress("198.18.3.1")!, .at(bootNanoseconds: 1))  // ended
            try maps.ban(network: try network("198.18.3.0/24"), .permanent)
            #expect(try verdict(program, maps, from: "198.18.3.1") == (.drop, "dropped"), "the prefix in force wins")
            try maps.ban(network: try network("198.18.4.0/24"), .at(bootNanoseconds: 1))
            #expect(try verdict(program, maps, from: "198.18.4.9") == (.pass, "expired"))
            try maps.ban(IPAddress("198.18.4.9")!, .permanent)
            #expect(try verdict(program, maps, from: "198.18.4.9") == (.drop, "dropped"), "the exact ban in force")
            #expect(try verdict(program, maps, from: "198.18.4.10") == (.pass, "expired"))
            // A list entry in force under an ended prefix.
            try maps.replaceList(origin: 7, with: [try network("198.18.4.0/28")])
            #expect(try verdict(program, maps, from: "198.18.4.10") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.4.20") == (.pass, "expired"))
        }
    }

    @Test("the allowlist passes its sources whatever covers them (exact, prefix, CIDR, list), counted as allowed")
    func allowlistFirst() throws {
        try withFilter { program, maps in
            try maps.ban(IPAddress("198.18.5.1")!, .permanent)
            try maps.ban(network: try network("198.18.5.0/24"), .permanent)
            try maps.ban(network: try network("198.18.0.0/16"), .permanent)
            try maps.replaceList(origin: 9, with: [try network("198.18.5.0/25"), try network("2001:2:0:c::/64")])
            try maps.ban(network: try network("2001:2:0:c::/64"), .permanent)
            #expect(try maps.replaceAllowlist([try network("198.18.5.0/30"), try network("2001:2:0:c::5/128")]) == 2)
            for source in ["198.18.5.1", "198.18.5.3", "2001:2:0:c::5"] {
                #expect(try verdict(program, maps, from: source) == (.pass, "allowed"), "\(source)")
            }
            for source in ["198.18.5.4", "198.18.9.1", "2001:2:0:c::6"] {
                #expect(try verdict(program, maps, from: source) == (.drop, "dropped"), "\(source)")
            }
            // Replaced: the old entries go, the new ones stay.
            #expect(try maps.replaceAllowlist([try network("198.18.5.4/32")]) == 1)
            #expect(try maps.allowlist() == [try network("198.18.5.4")])
            #expect(try verdict(program, maps, from: "198.18.5.1") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.5.4") == (.pass, "allowed"))
        }
    }

    @Test("a list replaced whole: the new entries drop, the old ones no longer; other lists' entries stay; unload")
    func listsSwap() throws {
        try withFilter { program, maps in
            try maps.replaceList(origin: 3, with: [try network("198.18.6.0/24"), try network("2001:2:0:6::/64")])
            try maps.replaceList(origin: 4, with: [try network("198.18.7.7")])
            #expect(try verdict(program, maps, from: "198.18.6.1") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "2001:2:0:6::1") == (.drop, "dropped"))
            let swap = try maps.replaceList(origin: 3, with: [try network("198.18.8.0/23")])
            #expect(swap.ipv4 == 1 && swap.kept == 1)
            #expect(try verdict(program, maps, from: "198.18.6.1") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "2001:2:0:6::1") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "198.18.9.255") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.7.7") == (.drop, "dropped"), "the other list stays")
            try maps.replaceList(origin: 3, with: [])
            #expect(try verdict(program, maps, from: "198.18.9.255") == (.pass, "passed"))
            #expect(try maps.listEntries().map(\.origin) == [4])
        }
    }

    @Test(
        "entries with their own ends and origins (a CrowdSec set): installed in place, ended ones pass, only owned ones are replaced or removed, a whole set swapped leaves the lists"
    )
    func ownedListEntries() throws {
        try withFilter { program, maps in
            let soon = try #require(BanExpiry.after(seconds: 600))
            // A second ago: the program's time (pc_clock) may be one tick behind.
            let ended = BanExpiry.at(bootNanoseconds: SystemClock.bootNanoseconds() - 1_000_000_000)
            func entry(_ text: String, _ expiry: BanExpiry, _ origin: UInt32) throws -> ListEntry {
                ListEntry(network: try network(text), expiry: expiry, origin: origin)
            }
            let crowdsec: Set<UInt32> = [20, 21]
            let owned: (UInt32) -> Bool = { crowdsec.contains($0) }
            // Nothing loaded yet: the first in-place write builds the family by a swap.
            var update = try maps.updateListEntries(
                owned: owned, adding: [try entry("198.18.10.7", soon, 20), try entry("198.18.11.0/24", soon, 21)],
                removing: [])
            #expect(update.added == 2 && update.swappedFamilies == 1)
            #expect(try verdict(program, maps, from: "198.18.10.7") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.11.200") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.12.1") == (.pass, "passed"))
            // A list of another origin holds 198.18.13.0/24; in place: IPv6 added, an ended one.
            try maps.replaceList(origin: 5, with: [try network("198.18.13.0/24"), try network("198.18.10.9")])
            update = try maps.updateListEntries(
                owned: owned,
                adding: [
                    try entry("198.18.13.0/24", soon, 20), try entry("2001:2:0:d::/64", soon, 20),
                    try entry("198.18.14.1", ended, 20),
                ], removing: [try network("198.18.10.9")])
            #expect(update.heldByOthers == [try network("198.18.13.0/24")] && update.removed == 0)
            #expect(try verdict(program, maps, from: "2001:2:0:d::5") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.14.1") == (.pass, "expired"), "its end is enforced")
            #expect(try verdict(program, maps, from: "198.18.10.9") == (.drop, "dropped"), "the other list's stays")
            let origins = Dictionary(try maps.listEntries().map { ($0.network.description, $0.origin) }) { a, _ in a }
            #expect(origins["198.18.13.0/24"] == 5 && origins["198.18.10.7"] == 20 && origins["198.18.11.0/24"] == 21)
            // Removed in place: only what the owner holds.
            update = try maps.updateListEntries(
                owned: owned, adding: [], removing: [try network("198.18.11.0/24"), try network("198.18.13.0/24")])
            #expect(update.removed == 1)
            #expect(try verdict(program, maps, from: "198.18.11.200") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "198.18.13.1") == (.drop, "dropped"))
            // The whole set replaced: the owner's old entries go, the other list stays.
            let swap = try maps.replaceListEntries(owned: owned, with: [try entry("198.18.15.0/24", soon, 21)])
            #expect(swap.ipv4 == 1)
            #expect(try verdict(program, maps, from: "198.18.10.7") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "2001:2:0:d::5") == (.pass, "passed"))
            #expect(try verdict(program, maps, from: "198.18.15.3") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.10.9") == (.drop, "dropped"))
            #expect(Set(try maps.listEntries().map(\.origin)) == [5, 21])
            // The hosts' hash is made for what it holds (at least 4,096): more in place than fit
            // builds the family again, larger, with every entry.
            let many = try (0..<5000).map { try entry("198.19.\($0 / 250).\($0 % 250 + 1)", soon, 20) }
            update = try maps.updateListEntries(owned: owned, adding: many, removing: [])
            #expect(update.swappedFamilies == 1 && update.added == 5000)
            #expect(try maps.listEntries().count == 5003)
            #expect(try verdict(program, maps, from: "198.19.19.250") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.15.3") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.18.10.9") == (.drop, "dropped"))
            #expect(try verdict(program, maps, from: "198.19.20.1") == (.pass, "passed"))
        }
    }

    @Test("networks as operators write them; host bits, bad lengths and bad addresses refused in one line")
    func parsing() throws {
        #expect(try network("198.18.1.0/24").description == "198.18.1.0/24")
        #expect(try network("198.18.1.7").isSingleAddress)
        #expect(try network("2001:2:0:a::/64").length == 64)
        do {
            _ = try network("198.18.1.7/24")
            Issue.record("host bits should be refused")
        } catch {
            #expect("\(error)".contains("host bits are set; the network is 198.18.1.0/24"))
        }
        for bad in ["198.18.1.0/33", "2001:2::/129", "198.18.1.0/", "198.18.1.0/-1", "nonsense/8", "198.18.1.0/2x"] {
            #expect(throws: SettingError.self, "\(bad)") { try network(bad) }
        }
    }

    @Test("the prefix lengths change only while that family has no prefix bans")
    func lengths() throws {
        try withFilter { _, maps in
            try maps.setPrefixLengths([16, 24], family: .ipv4)
            #expect(try maps.prefixLengths(.ipv4) == [24, 16])
            try maps.ban(network: try network("198.18.0.0/16"), .permanent)
            #expect(throws: FirewallError.self) { try maps.setPrefixLengths([24], family: .ipv4) }
            #expect(throws: FirewallError.self) { try maps.setPrefixLengths([32], family: .ipv4) }
            #expect(throws: FirewallError.self) { try maps.setPrefixLengths([8, 12, 16, 20, 24], family: .ipv4) }
        }
    }

    @Test(
        "coverage bits: an IPv4 network's /24s, an IPv6 network's hashed /64s, every IPv6 source for one shorter than /48"
    )
    func coverage() throws {
        #expect(BanMaps.coverage(try network("198.18.0.0/15")) == .range(start: 0xC61200, count: 512))
        #expect(BanMaps.coverage(try network("198.18.7.9")) == .range(start: 0xC61207, count: 1))
        #expect(BanMaps.coverage(try network("0.0.0.0/0")) == .range(start: 0, count: 1 << 24))
        #expect(
            BanMaps.coverage(try network("2001:2:0:a::1")) == .slots([BanMaps.coverSlot(ipv6: 0x2001_0002, 0x000a)]))
        guard case .slots(let slots) = BanMaps.coverage(try network("2001:2::/48")) else {
            Issue.record("a /48 has slots")
            return
        }
        #expect(slots.count == 65_536 && slots.allSatisfy { $0 >= UInt32(PC_COVER_V6_BASE) })
        #expect(BanMaps.coverage(try network("2001:2::/47")) == .allIPv6)
    }

    @Test("pins of the layout before networks (fewer maps, version 2) are named as such, not as nothing pinned")
    func olderPins() throws {
        try withFilter { _, maps in
            // The maps this layout added are not in an older pin directory.
            unlink(scratch.path + "/" + PC_MAP_COVER)
            do {
                _ = try BanMaps.open(pinnedIn: scratch.pins)
                Issue.record("a directory missing a map is refused")
            } catch {
                #expect("\(error)".contains("maps missing: \(PC_MAP_COVER)"), "\(error)")
            }
            var key: UInt32 = 0
            var marker = pc_meta(magic: UInt32(PC_ABI_MAGIC), abi_version: 2)
            #expect(bpf_map_update_elem(maps.meta.fd, &key, &marker, UInt64(BPF_ANY)) == 0)
            do {
                _ = try BanMaps.open(pinnedIn: scratch.pins)
                Issue.record("an older layout is refused")
            } catch {
                #expect("\(error)".contains("layout version 2, this build uses \(PC_ABI_VERSION)"), "\(error)")
            }
        }
    }
}
