// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
import PortcullisCore
@_spi(Testing) @testable import PortcullisDaemon
import PortcullisSystem
import Testing
import TestSupport
@testable import XDPFirewall

/// The daemon on real maps when they are full (its logic over a store in memory is in
/// InMemoryDaemonTests.swift).
@Suite("Operator bans", .enabled(if: Privileges.runnable), .serialized)
struct OperatorBanTests {
    /// A small daemon: `threshold` offences ban for `banTime` seconds.
    static func small(threshold: UInt32, banTime: UInt64) -> (inout DaemonConfiguration) -> Void {
        { configuration in
            configuration.threshold = threshold
            configuration.banTime = banTime
            configuration.tableBins = 10_007
        }
    }

    @Test("a full ban map counts each client that could not be banned once, however often it is retried")
    func failuresCountClients() throws {
        try withShmDaemon(
            mapEntries: 16,
            configure: Self.small(threshold: 1, banTime: 3600)
        ) { daemon, maps, writer in
            let batch = LineBatch()
            for index in 0..<40 { batch.append(offenceLine("198.18.10.\(index + 1)")) }
            _ = try writer.publish(batch)
            #expect(eventually(within: 10) { daemon.status.total.lines == 40 })
            SystemClock.sleep(nanoseconds: 3_500_000_000)  // retries at 1 s and then 2 s later
            let total = daemon.status.total
            #expect(total.bans == 16)
            #expect(total.banFailures == 24, "clients, not attempts")
            #expect(total.pendingRetries == 24)
            #expect(try maps.entries().count == 16)
        }
    }
}

@Suite("Lifting beside the operator", .enabled(if: Privileges.runnable), .serialized)
struct LiftIfEndedTests {
    /// Ban maps of a program loaded for this test only (nothing pinned).
    func privateMaps() throws -> (LoadedProgram, BanMaps) {
        try Privileges.require()
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        return (program, try #require(program.maps))
    }

    @Test("a lift deletes only an ended ban; one written in force meanwhile is put back as it was")
    func liftKeepsBansInForce() throws {
        let (program, maps) = try privateMaps()
        defer { withExtendedLifetime(program) {} }
        let now = SystemClock.bootNanoseconds()
        let ended = IPAddress("198.18.11.1")!, inForce = IPAddress("2001:2::11:2")!, absent = IPAddress("198.18.11.3")!
        try maps.ban(ended, .at(bootNanoseconds: now - 1_000_000_000))
        try maps.insert(BanRequest(inForce, .permanent), dropped: 42)
        #expect(
            try maps.liftIfEnded(ended, now: now)
                == .lifted(
                    BanEntry(
                        address: ended, expiry: .at(bootNanoseconds: now - 1_000_000_000), dropped: 0)))
        #expect(try maps.lookup(ended) == nil)
        #expect(try maps.liftIfEnded(absent, now: now) == .absent)
        guard case .inForce = try maps.liftIfEnded(inForce, now: now) else {
            Issue.record("a permanent ban was lifted")
            return
        }
        #expect(try maps.lookup(inForce) == BanEntry(address: inForce, expiry: .permanent, dropped: 42))
    }

    @Test(
        "installing never shortens: a later end is written with its drops kept, an earlier one is not (kernel installer, and one update per ban where it cannot load)",
        arguments: [true, false])
    func mergeKeepsTheLongerEnd(kernel: Bool) throws {
        let (program, maps) = try privateMaps()
        defer { withExtendedLifetime(program) {} }
        if kernel {
            #expect(maps.loadInstaller(objectPath: try Products.filterObject()) == nil)
        } else {
            let problem = maps.loadInstaller(objectPath: "/nonexistent-pc/portcullis.bpf.o")
            #expect(problem?.contains("/nonexistent-pc/portcullis.bpf.o") == true, "\(problem ?? "")")
        }
        let now = SystemClock.bootNanoseconds()
        let short = IPAddress("198.18.12.1")!, long = IPAddress("198.18.12.2")!, new = IPAddress("2001:2::12:3")!
        let shortV6 = IPAddress("2001:2::12:4")!
        try maps.insert(BanRequest(short, .at(bootNanoseconds: now + 1_000_000_000)), dropped: 7)
        try maps.insert(BanRequest(shortV6, .at(bootNanoseconds: now + 1_000_000_000), origin: 3), dropped: 9)
        try maps.insert(BanRequest(long, .permanent))
        let end = BanExpiry.at(bootNanoseconds: now + 60_000_000_000)
        let outcome = maps.banKeepingLonger(batch: [
            BanRequest(short, end, origin: 5), BanRequest(long, end), BanRequest(new, end), BanRequest(shortV6, end),
            BanRequest(new, .at(bootNanoseconds: now + 1_000_000_000)),
        ])
        #expect(Set(outcome.installed) == [0, 2, 3] && outcome.kept == [1, 4] && outcome.failed.isEmpty)
        #expect(try maps.lookup(short) == BanEntry(address: short, expiry: end, dropped: 7, origin: 5))
        #expect(try maps.lookup(shortV6) == BanEntry(address: shortV6, expiry: end, dropped: 9))
        #expect(try maps.lookup(long)?.expiry == .permanent)
        #expect(try maps.lookup(new)?.expiry == end)
        // The map holds 64: 62 more IPv4 go in, the rest fail; the IPv6 one still goes in.
        let many = (0..<70).map { BanRequest(IPAddress(ipv4NetworkOrder: UInt32(0xC612_2000 + $0).bigEndian), end) }
        let full = maps.banKeepingLonger(batch: many + [BanRequest(IPAddress("2001:2::12:5")!, end)])
        #expect(
            full.installed.count == 63 && full.failed.count == 8 && full.installed.contains(70),
            "\(full.installed.count) installed, \(full.failed.count) failed")
        #expect(try maps.lookup(IPAddress("2001:2::12:5")!)?.expiry == end)
    }
}

@Suite("Output paths")
struct OutputPathTests {
    @Test("a ban log or summary path that is a symbolic link is not followed")
    func linksAreNotFollowed() throws {
        let target = NSTemporaryDirectory() + "pc-target-\(getpid())"
        let link = NSTemporaryDirectory() + "pc-link-\(getpid())"
        FileManager.default.createFile(atPath: target, contents: Data("keep\n".utf8))
        symlink(target, link)
        defer {
            unlink(link)
            unlink(target)
        }
        #expect(throws: DaemonError.self) { _ = try BanLog(path: link) }
        struct Value: Encodable { let value = 1 }
        // The summary is written to a temporary and renamed over the path: the link is replaced,
        // its target untouched.
        try JSONOutput.write(Value(), to: link)
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep\n")
    }
}

@Suite("Never bannable", .enabled(if: Privileges.runnable), .serialized)
struct NeverBannableTests {
    @Test(
        "unspecified, this network (0/8), reserved (240/4), broadcast, multicast, link-local and the host's own addresses are never banned"
    )
    func specialAddressesAreNeverBanned() throws {
        let own = HostAddresses.current().first { !$0.isNeverBannable }
        let special =
            [
                "0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.2.3", "169.254.0.1", "::", "fe80::1",
                "ff02::1", "::1", "127.0.0.2", "0.1.2.3", "240.0.0.1",
            ] + (own.map { ["\($0)"] } ?? [])
        try withShmDaemon(
            mapEntries: 64,
            configure: {
                $0.threshold = 1
                $0.tableBins = 10_007
                $0.allowlist = .none  // not even loopback configured: the built-in list holds
            }
        ) { daemon, maps, writer in
            let batch = LineBatch()
            for address in special + ["198.18.13.1"] { batch.append(offenceLine(address)) }
            _ = try writer.publish(batch)
            #expect(eventually(within: 10) { daemon.status.total.lines == UInt64(special.count + 1) })
            #expect(daemon.status.total.allowlisted == UInt64(special.count))
            #expect(try maps.entries().map(\.address) == [IPAddress("198.18.13.1")!], "only the ordinary client")
            #expect(daemon.neverBanned.contains("fe80::/10"))
        }
        #expect(IPAddress("198.18.0.1")!.isNeverBannable == false && IPAddress("2001:2::1")!.isNeverBannable == false)
        #expect(IPAddress("febf::1")!.isNeverBannable && !IPAddress("fec0::1")!.isNeverBannable)
    }
}

@Suite("Restart", .enabled(if: Privileges.runnable), .serialized)
struct RestartTests {
    @Test("a restarted daemon reads the lines logged while it was down, as far as the rings hold them")
    func linesLoggedWhileDownAreRead() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var transport = TransportConfiguration(kind: .shm)
        transport.shm.name = scratch.shmName
        transport.shm.rings = 1
        transport.shm.slotsPerRing = 1024
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = 3
        configuration.tableBins = 10_007
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        let maps = try #require(program.maps)
        let first = try Daemon(configuration: configuration, maps: maps)
        try first.start()
        let writer = try transport.makeWriter()
        defer { writer.close() }
        let batch = LineBatch()
        batch.append(offenceLine("198.18.15.1"))
        _ = try writer.publish(batch)
        #expect(eventually(within: 10) { first.status.total.lines == 1 })
        first.stop()
        // While no daemon runs: three offences of another client (and a reader that is not the
        // daemon, which starts at the head and does not take the daemon's place).
        let tap = try transport.makeReader(policy: .drop)
        defer { tap.close() }
        batch.removeAll()
        for _ in 0..<3 { batch.append(offenceLine("198.18.15.2")) }
        _ = try writer.publish(batch)
        let second = try Daemon(configuration: configuration, maps: maps)
        try second.start()
        defer { second.stop() }
        #expect(eventually(within: 10) { second.status.total.lines == 3 }, "the three lines logged while down")
        #expect(try eventually(within: 10) { try maps.lookup(IPAddress("198.18.15.2")!) != nil })
        #expect(second.status.total.lines == 3, "and not the line the first daemon had read")
    }
}
