// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import Testing
import TestSupport
@testable import XDPFirewall
import XDPTesting
import PortcullisSystem
import PortcullisCore

/// Verdicts and counters of the real filter, run by the kernel on crafted frames (BPF_PROG_TEST_RUN).
@Suite("XDP verdicts", .enabled(if: Privileges.runnable), .serialized)
struct VerdictTests {
    let scratch = ScratchPinDirectory("verdicts")
    let server4 = IPAddress("198.18.255.254")!
    let server6 = IPAddress("2001:2::fffe")!

    /// Loads the filter with fresh maps, runs `body`, removes the pins.
    func withFilter(_ body: (LoadedProgram, BanMaps) throws -> Void) throws {
        try Privileges.require()
        defer { scratch.remove() }
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins,
            mapEntries: 1024)
        try body(program, try #require(program.maps))
    }

    /// Runs `frame` once and returns the verdict and which counter moved.
    func verdict(_ program: LoadedProgram, _ maps: BanMaps, _ frame: [UInt8]) throws -> (XDPVerdict, String) {
        let before = try maps.counters()
        let run = try program.testRun(frame: frame)
        let after = try maps.counters()
        let moved = zip(after.named, before.named).filter { $0.count.packets != $1.count.packets }
        try #require(moved.count == 1, "exactly one counter moves per frame, got \(moved.map(\.0.name))")
        #expect(moved[0].0.count.packets == moved[0].1.count.packets + 1)
        #expect(moved[0].0.count.bytes == moved[0].1.count.bytes + UInt64(frame.count))
        return (run.verdict, moved[0].0.name)
    }

    @Test func bannedIPv4IsDroppedAndUnbannedPasses() throws {
        try withFilter { program, maps in
            let banned = IPAddress("198.18.0.1")!
            let other = IPAddress("198.18.0.2")!
            try maps.ban(banned, .permanent)
            #expect(try verdict(program, maps, TestFrame.udp(from: banned, to: server4)) == (.drop, "dropped"))
            #expect(try verdict(program, maps, TestFrame.udp(from: other, to: server4)) == (.pass, "passed"))
            // Only the source matters: a banned destination does not drop.
            #expect(try verdict(program, maps, TestFrame.udp(from: other, to: banned)) == (.pass, "passed"))
        }
    }

    @Test func bannedIPv6IsDroppedAndUnbannedPasses() throws {
        try withFilter { program, maps in
            let banned = IPAddress("2001:2::1")!
            try maps.ban(banned, .permanent)
            #expect(try verdict(program, maps, TestFrame.udp(from: banned, to: server6)) == (.drop, "dropped"))
            #expect(
                try verdict(program, maps, TestFrame.udp(from: IPAddress("2001:2::2")!, to: server6))
                    == (.pass, "passed"))
        }
    }

    @Test func expiredBanPassesAndIsCountedApart() throws {
        try withFilter { program, maps in
            let address = IPAddress("198.18.0.3")!
            try maps.ban(address, .at(bootNanoseconds: 1))  // ended long ago; no daemon removed it
            #expect(try verdict(program, maps, TestFrame.udp(from: address, to: server4)) == (.pass, "expired"))
            let v6 = IPAddress("2001:2::3")!
            // Ended a second ago: the program's time (pc_clock) may be one tick, PC_CLOCK_PERIOD_NS, behind.
            try maps.ban(v6, .at(bootNanoseconds: SystemClock.bootNanoseconds() - 1_000_000_000))
            #expect(try verdict(program, maps, TestFrame.udp(from: v6, to: server6)) == (.pass, "expired"))
            #expect(try maps.lookup(address)?.dropped == 0)
        }
    }

    @Test func permanentAndTimedBansInForceDrop() throws {
        try withFilter { program, maps in
            let timed = IPAddress("198.18.0.4")!
            try maps.ban(timed, try #require(BanExpiry.after(seconds: 3600)))
            #expect(try verdict(program, maps, TestFrame.udp(from: timed, to: server4)) == (.drop, "dropped"))
            let permanent = IPAddress("198.18.0.5")!
            try maps.ban(permanent, .permanent)
            #expect(try verdict(program, maps, TestFrame.udp(from: permanent, to: server4)) == (.drop, "dropped"))
            #expect(try maps.lookup(permanent)?.expiry == .permanent)
        }
    }

    @Test func vlanTaggedFramesAreFiltered() throws {
        try withFilter { program, maps in
            let banned = IPAddress("198.18.0.6")!
            let banned6 = IPAddress("2001:2::6")!
            try maps.ban(banned, .permanent)
            try maps.ban(banned6, .permanent)
            for tags in [[UInt16(10)], [100, 200]] {
                #expect(
                    try verdict(program, maps, TestFrame.udp(from: banned, to: server4, vlanTags: tags))
                        == (.drop, "dropped"))
                #expect(
                    try verdict(program, maps, TestFrame.udp(from: banned6, to: server6, vlanTags: tags))
                        == (.drop, "dropped"))
                #expect(
                    try verdict(program, maps, TestFrame.udp(from: server4, to: banned, vlanTags: tags))
                        == (.pass, "passed"))
            }
            // More tags than the program looks through: passed to the stack, counted as malformed.
            #expect(
                try verdict(program, maps, TestFrame.udp(from: banned, to: server4, vlanTags: [1, 2, 3]))
                    == (.pass, "malformed"))
        }
    }

    @Test func ipv6ExtensionHeadersAreWalked() throws {
        try withFilter { program, maps in
            let banned = IPAddress("2001:2::7")!
            let other = IPAddress("2001:2::8")!
            try maps.ban(banned, .permanent)
            let chains: [[TestFrame.IPv6Extension]] = [
                [.hopByHop], [.hopByHop, .destinationOptions, .routing, .fragment], [.fragment],
            ]
            for chain in chains {
                #expect(
                    try verdict(program, maps, TestFrame.udp(from: banned, to: server6, extensions: chain))
                        == (.drop, "dropped"))
                #expect(
                    try verdict(program, maps, TestFrame.udp(from: other, to: server6, extensions: chain))
                        == (.pass, "passed"))
            }
            // Exactly PC_MAX_IPV6_EXT_HEADERS is a valid chain.
            let most = Array(repeating: TestFrame.IPv6Extension.destinationOptions, count: Int(PC_MAX_IPV6_EXT_HEADERS))
            #expect(
                try verdict(program, maps, TestFrame.udp(from: other, to: server6, extensions: most))
                    == (.pass, "passed"))
            // Longer than PC_MAX_IPV6_EXT_HEADERS: passed, counted malformed; a banned source still drops.
            let long = Array(
                repeating: TestFrame.IPv6Extension.destinationOptions, count: Int(PC_MAX_IPV6_EXT_HEADERS) + 1)
            #expect(
                try verdict(program, maps, TestFrame.udp(from: other, to: server6, extensions: long))
                    == (.pass, "malformed"))
            #expect(
                try verdict(program, maps, TestFrame.udp(from: banned, to: server6, extensions: long))
                    == (.drop, "dropped"))
            // An extension header cut off by the end of the frame.
            let full = TestFrame.udp(from: other, to: server6, extensions: [.hopByHop], payload: [])
            #expect(try verdict(program, maps, Array(full.prefix(14 + 40 + 1))) == (.pass, "malformed"))
        }
    }

    @Test func truncatedAndGarbageFramesPassAsMalformed() throws {
        try withFilter { program, maps in
            let banned = IPAddress("198.18.0.9")!
            try maps.ban(banned, .permanent)
            let frame4 = TestFrame.udp(from: banned, to: server4)
            let frame6 = TestFrame.udp(from: IPAddress("2001:2::9")!, to: server6)
            // Shorter than an Ethernet header; IPv4/IPv6 header cut before the source address.
            // (The kernel refuses test-run input under 14 bytes, so the shortest frame is the header.)
            for frame in [Array(frame4.prefix(14)), Array(frame4.prefix(14 + 12)), Array(frame6.prefix(14 + 20))] {
                #expect(try verdict(program, maps, frame) == (.pass, "malformed"))
            }
            // Source readable but the header is impossible: banned still drops, others are malformed.
            var badIHL = TestFrame.udp(from: IPAddress("198.18.0.10")!, to: server4)
            badIHL[14] = 0x43  // IHL 3 words
            #expect(try verdict(program, maps, badIHL) == (.pass, "malformed"))
            var bannedBadIHL = frame4
            bannedBadIHL[14] = 0x4f  // IHL 15 words, beyond the frame
            #expect(try verdict(program, maps, bannedBadIHL) == (.drop, "dropped"))
            // Not IP at all (ARP): passed.
            var arp = Array(repeating: UInt8(0), count: 42)
            arp[12] = 0x08
            arp[13] = 0x06
            #expect(try verdict(program, maps, arp) == (.pass, "passed"))
            // Random bytes: always XDP_PASS and exactly one counter, whatever they parse as.
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<200 {
                let length = Int.random(in: 14...200, using: &generator)
                var garbage = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if Bool.random(using: &generator) {  // make many of them look like IP
                    garbage[12] = 0x08
                    garbage[13] = 0x00
                }
                let (result, _) = try verdict(program, maps, garbage)
                #expect(result == .pass || result == .drop)
            }
        }
    }

    @Test func perAddressDropsCountEveryDroppedPacket() throws {
        try withFilter { program, maps in
            let banned = IPAddress("198.18.0.11")!
            try maps.ban(banned, .permanent)
            _ = try program.testRun(frame: TestFrame.udp(from: banned, to: server4), repetitions: 1000)
            #expect(try maps.lookup(banned)?.dropped == 1000)
            #expect(try maps.counters().dropped.packets == 1000)
            // Re-banning keeps the count; unbanning lets the address through.
            try maps.ban(banned, try #require(BanExpiry.after(seconds: 60)))
            #expect(try maps.lookup(banned)?.dropped == 1000)
            #expect(try maps.unban(banned))
            #expect(try program.testRun(frame: TestFrame.udp(from: banned, to: server4)).verdict == .pass)
            #expect(try maps.unban(banned) == false)
        }
    }

    /// The drops of each origin and family, as `dropsByOrigin` names them.
    func drops(_ maps: BanMaps) throws -> [String: FilterCounters.Count] {
        var byOrigin: [String: FilterCounters.Count] = [:]
        for drops in try maps.dropsByOrigin() {
            byOrigin["\(drops.kind.rawValue)/\(drops.name)/\(drops.family == .ipv4 ? "ipv4" : "ipv6")"] = drops.count
        }
        return byOrigin
    }

    @Test(
        "drops counted by the ban's origin and the source's family, packets and bytes exactly: a jail's IPv4 ban, an operator's IPv6 ban, a list's IPv6 network, a CrowdSec origin's IPv4 ban; their sum is the dropped counter"
    )
    func dropsByOriginAndFamily() throws {
        try withFilter { program, maps in
            let slots = try maps.originSlots(for: ["sshd", "crowdsec/cscli"])
            let jail4 = IPAddress("198.18.0.21")!
            let manual6 = IPAddress("2001:2::21")!
            let crowdsec4 = IPAddress("198.18.0.22")!
            try maps.ban(jail4, .permanent, origin: try #require(slots["sshd"]))
            try maps.ban(manual6, .permanent)
            try maps.ban(crowdsec4, .permanent, origin: try #require(slots["crowdsec/cscli"]))
            try maps.loadList("tor", [try IPNetwork(parsing: "2001:2:0:21::/64")])
            let frames: [(IPAddress, IPAddress, Int32)] = [
                (jail4, server4, 7), (manual6, server6, 5), (IPAddress("2001:2:0:21::9")!, server6, 3),
                (crowdsec4, server4, 2),
            ]
            for (source, destination, repetitions) in frames {
                let frame = TestFrame.udp(from: source, to: destination)
                #expect(try program.testRun(frame: frame, repetitions: repetitions).verdict == .drop)
            }
            let size4 = UInt64(TestFrame.udp(from: jail4, to: server4).count)
            let size6 = UInt64(TestFrame.udp(from: manual6, to: server6).count)
            let counted = try drops(maps)
            #expect(counted["jail/sshd/ipv4"] == .init(packets: 7, bytes: 7 * size4))
            #expect(counted["jail/sshd/ipv6"] == .init(), "every named origin's series, zeros too")
            #expect(counted["manual//ipv6"] == .init(packets: 5, bytes: 5 * size6))
            #expect(counted["manual//ipv4"] == .init())
            #expect(counted["list/tor/ipv6"] == .init(packets: 3, bytes: 3 * size6))
            #expect(counted["crowdsec/cscli/ipv4"] == .init(packets: 2, bytes: 2 * size4))
            #expect(counted.count == 8, "manual, sshd, crowdsec/cscli, list:tor; two families each: \(counted)")
            let total = try maps.counters().dropped
            #expect(total == .init(packets: 17, bytes: 9 * size4 + 8 * size6))
            // Passed, expired and allowed frames count no drop.
            _ = try program.testRun(frame: TestFrame.udp(from: IPAddress("198.18.0.23")!, to: server4), repetitions: 4)
            #expect(try maps.counters().dropped == total)
        }
    }

    @Test(
        "pins of ABI 3 from before pc_drops: opened (drops by origin empty, the dropped counter kept), and a load beside them adds pc_drops and keeps the bans"
    )
    func pinsBeforeDropsByOrigin() throws {
        try withFilter { program, maps in
            let banned = IPAddress("198.18.0.24")!
            try maps.ban(banned, .permanent)
            _ = try program.testRun(frame: TestFrame.udp(from: banned, to: server4), repetitions: 3)
            // What an older program counted: PC_STAT_DROPPED, read beside pc_drops.
            var key = UInt32(PC_STAT_DROPPED.rawValue)
            var perCPU = [pc_stat](repeating: pc_stat(packets: 0, bytes: 0), count: maps.possibleCPUs)
            perCPU[0] = pc_stat(packets: 10, bytes: 600)
            #expect(bpf_map_update_elem(maps.stats.fd, &key, &perCPU, UInt64(BPF_ANY)) == 0)
            let size = UInt64(TestFrame.udp(from: banned, to: server4).count)
            #expect(try maps.counters().dropped == .init(packets: 13, bytes: 600 + 3 * size))

            unlink(scratch.path + "/" + PC_MAP_DROPS)
            let older = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try older.dropsByOrigin().isEmpty)
            #expect(try older.counters().dropped == .init(packets: 10, bytes: 600))
            #expect(try older.lookup(banned) != nil)

            let reloaded = try LoadedProgram(
                filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
            let again = try #require(reloaded.maps)
            #expect(try again.lookup(banned)?.dropped == 3, "the bans stay")
            #expect(try reloaded.testRun(frame: TestFrame.udp(from: banned, to: server4)).verdict == .drop)
            #expect(try drops(again)["manual//ipv4"] == .init(packets: 1, bytes: size), "a new pc_drops, pinned")
            #expect(try drops(BanMaps.open(pinnedIn: scratch.pins))["manual//ipv4"]?.packets == 1)
        }
    }
}
