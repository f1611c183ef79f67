// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
@_spi(Testing) @testable import PortcullisDaemon
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall

// The daemon's logic over a store in memory and a clock the test steps: no root, no BPF object,
// no real seconds waited for a ban to end. The maps themselves, and the daemon on them end to
// end, are tested in MapTests, BanStoreContractTests and the suites on real maps.

/// Runs `body` with a started daemon over a store in memory (`capacity` bans a family) and a
/// stepped clock, reading a scratch shm segment; stops and removes everything afterwards.
func withStoreDaemon(
    capacity: Int = 64, configure: (inout DaemonConfiguration) -> Void, publishers: [BanPublisher] = [],
    prepare: (Daemon) throws -> Void = { _ in },
    _ body: (Daemon, InMemoryBanStore, ManualClock, LogWriter) throws -> Void
) throws {
    let scratch = TransportScratch()
    defer { scratch.remove() }
    var transport = TransportConfiguration(kind: .shm)
    transport.shm.name = scratch.shmName
    var configuration = DaemonConfiguration(transport: transport)
    configure(&configuration)
    let store = InMemoryBanStore(capacity: capacity)
    let clock = ManualClock()
    let daemon = try Daemon(configuration: configuration, maps: store, bootClock: clock.source, publishers: publishers)
    try prepare(daemon)
    try daemon.start()
    defer { daemon.stop() }
    let writer = try transport.makeWriter()
    defer { writer.close() }
    try body(daemon, store, clock, writer)
}

/// Runs `body` with a started daemon over a store in memory and a stepped clock whose jails (made
/// by `jails` from a file source) read a scratch log; `write` appends lines to it.
func withStoreFileJails(
    _ jails: (TransportConfiguration) -> [JailConfiguration], configure: (inout DaemonConfiguration) -> Void = { _ in },
    _ body: (Daemon, InMemoryBanStore, ManualClock, _ write: ([String]) throws -> Void) throws -> Void
) throws {
    let scratch = TransportScratch()
    defer { unlink(scratch.filePath) }
    FileManager.default.createFile(atPath: scratch.filePath, contents: nil)
    var source = TransportConfiguration(kind: .file)
    source.file.path = scratch.filePath
    var configuration = DaemonConfiguration(transport: source)
    configuration.jails = jails(source)
    configure(&configuration)
    let store = InMemoryBanStore(capacity: 64)
    let clock = ManualClock()
    let daemon = try Daemon(configuration: configuration, maps: store, bootClock: clock.source)
    try daemon.start()
    defer { daemon.stop() }
    try body(daemon, store, clock) { lines in
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.filePath))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// Publishes `times` offences of `address`.
func publishOffences(_ writer: LogWriter, _ address: IPAddress, times: Int) throws {
    let batch = LineBatch()
    for _ in 0..<times { batch.append(offenceLine(address.description)) }
    _ = try writer.publish(batch)
}

/// Bans an operator made are sacred: the daemon never shortens or lifts one, and an operator's
/// unban starts the client's count over.
@Suite("Operator bans, in memory")
struct OperatorBanLogicTests {
    /// A small daemon: `threshold` offences ban for `banTime` seconds.
    static func small(threshold: UInt32, banTime: UInt64) -> (inout DaemonConfiguration) -> Void {
        OperatorBanTests.small(threshold: threshold, banTime: banTime)
    }

    @Test("a longer or permanent operator ban stays as it was when the daemon's own ban would be shorter")
    func longerBansAreKept() throws {
        try withStoreDaemon(configure: Self.small(threshold: 3, banTime: 2)) { daemon, store, clock, writer in
            let forever = IPAddress("198.18.9.1")!, hour = IPAddress("198.18.9.2")!, plain = IPAddress("198.18.9.3")!
            try store.ban(forever, .permanent)
            let hourEnd = clock.now + 3_600_000_000_000
            try store.ban(hour, .at(bootNanoseconds: hourEnd))
            for address in [forever, hour, plain] { try publishOffences(writer, address, times: 3) }
            #expect(eventually(within: 10) { daemon.status.total.keptLonger == 2 && daemon.status.total.bans == 1 })
            // The daemon's own 2 s ban ends and is lifted; the operator's are untouched.
            clock.advance(seconds: 2)
            #expect(eventually(within: 10) { daemon.status.unbans == 1 })
            #expect(try store.lookup(forever)?.expiry == .permanent)
            #expect(try store.lookup(hour)?.expiry == .at(bootNanoseconds: hourEnd))
            #expect(try store.lookup(plain) == nil)
        }
    }

    @Test("a ban the operator made longer during the daemon's ban is not lifted at the daemon's end")
    func extendedBanSurvivesTheLift() throws {
        try withStoreDaemon(configure: Self.small(threshold: 3, banTime: 2)) { daemon, store, clock, writer in
            // `witness`, banned with `client`, ends with it: once its lift is seen, so was `client`'s.
            let client = IPAddress("198.18.9.4")!, witness = IPAddress("198.18.9.8")!
            try publishOffences(writer, client, times: 3)
            try publishOffences(writer, witness, times: 3)
            #expect(try eventually(within: 10) { try store.lookup(client) != nil && store.lookup(witness) != nil })
            try store.ban(client, .permanent)  // the operator: for good
            clock.advance(seconds: 2)
            #expect(try eventually(within: 10) { try store.lookup(witness) == nil }, "the daemon's end came")
            #expect(try store.lookup(client)?.expiry == .permanent)
            #expect(daemon.status.unbans == 1, "only the witness")
        }
    }

    @Test(
        "an operator's shorter ban through the daemon replaces the daemon's: once it is lifted, the daemon's old end does not reset the count again"
    )
    func shorterOperatorBanLeavesNoStaleEnd() throws {
        try withStoreDaemon(configure: Self.small(threshold: 2, banTime: 4)) { daemon, store, clock, writer in
            let client = IPAddress("198.18.9.7")!
            try publishOffences(writer, client, times: 2)
            #expect(try eventually(within: 10) { try store.lookup(client) != nil })
            // Half a second on, the operator shortens it to 1 s: lifted then, its count started over.
            // (An end is forgotten for the bans made before the forget: a clock that does not move
            // would make the two at the same nanosecond.)
            clock.advance(seconds: 0.5)
            let result = try daemon.operatorBan([client.description], seconds: 1, jail: nil)
            #expect(result.done == [client])
            clock.advance(seconds: 1)
            #expect(try eventually(within: 10) { try store.lookup(client) == nil })
            // One offence a second after that end (an offence in the second the ban ended is one
            // made while banned), one after the daemon's old end (4 s): the second must ban, the
            // count of the first not reset by that old end.
            clock.advance(seconds: 1)
            try publishOffences(writer, client, times: 1)
            #expect(eventually(within: 10) { daemon.status.total.lines == 3 })
            clock.advance(seconds: 2.5)
            #expect(eventually(within: 10) { daemon.status.scheduledBans == 0 }, "the old end came due")
            #expect(try store.lookup(client) == nil)
            try publishOffences(writer, client, times: 1)
            #expect(try eventually(within: 10) { try store.lookup(client) != nil })
        }
    }

    @Test(
        "an operator's unban starts the count over, also for bans for good (the sweep finds it)", arguments: [0, 3600])
    func unbanResetsTheCount(banTime: UInt64) throws {
        try withStoreDaemon(
            configure: Self.small(threshold: 3, banTime: banTime),
            prepare: { $0.sweepIntervalNanoseconds = 300_000_000 }
        ) { daemon, store, _, writer in
            let client = IPAddress("198.18.9.5")!
            try publishOffences(writer, client, times: 3)
            #expect(try eventually(within: 10) { try store.lookup(client) != nil })
            _ = try store.unban(client)
            #expect(eventually(within: 10) { daemon.status.unbannedByOperator == 1 })
            try publishOffences(writer, client, times: 3)
            #expect(try eventually(within: 10) { try store.lookup(client) != nil }, "banned again after 3 more")
            // A worker publishes its counters once its batch is done, after the ban it made.
            #expect(eventually(within: 10) { daemon.status.total.bans == 2 })
        }
    }

    @Test("with bans for good, an unban of a resumed ban or of one kept on an operator's ban starts the count over")
    func unbanOfResumedOrKeptBans() throws {
        let resumed = IPAddress("198.18.9.6")!, kept = IPAddress("198.18.9.7")!
        try withStoreDaemon(
            configure: Self.small(threshold: 3, banTime: 0),
            prepare: { daemon in daemon.sweepIntervalNanoseconds = 300_000_000 }
        ) { daemon, store, _, writer in
            // `kept`: the operator's ban for good is there when the daemon's crossing comes.
            try store.ban(kept, .permanent)
            try publishOffences(writer, kept, times: 3)
            #expect(eventually(within: 10) { daemon.status.total.keptLonger == 1 })
            _ = try store.unban(kept)
            #expect(eventually(within: 10) { daemon.status.unbannedByOperator >= 1 })
            try publishOffences(writer, kept, times: 3)
            #expect(try eventually(within: 10) { try store.lookup(kept) != nil }, "banned again by the daemon")
        }
        // `resumed`: a ban for good found in the store at start.
        let store = InMemoryBanStore(capacity: 64)
        try store.ban(resumed, .permanent)
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var transport = TransportConfiguration(kind: .shm)
        transport.shm.name = scratch.shmName
        var configuration = DaemonConfiguration(transport: transport)
        Self.small(threshold: 3, banTime: 0)(&configuration)
        let daemon = try Daemon(configuration: configuration, maps: store, bootClock: ManualClock().source)
        daemon.sweepIntervalNanoseconds = 300_000_000
        try daemon.start()
        defer { daemon.stop() }
        #expect(daemon.resumedBans == 1)
        _ = try store.unban(resumed)
        #expect(eventually(within: 10) { daemon.status.unbannedByOperator == 1 })
        let writer = try transport.makeWriter()
        defer { writer.close() }
        try publishOffences(writer, resumed, times: 3)
        #expect(try eventually(within: 10) { try store.lookup(resumed) != nil }, "banned again after 3 offences")
    }
}

@Suite("Jails over time, in memory")
struct JailTimeLogicTests {
    @Test("an escalated ban is neither renewed nor counted again by offences past the jail's own ban time")
    func escalatedBanIsNotRenewed() throws {
        try withStoreFileJails({ source in
            var jail = JailConfiguration(name: "app", source: source)
            jail.policy.threshold = 1
            jail.policy.banTime = 2
            jail.escalation = Escalation()
            jail.filter = .fail2ban(.inline(failregex: "^\\s*bad <HOST>$"), useDNS: nil, detectsDates: true)
            return [jail]
        }) { daemon, store, clock, write in
            let client = IPAddress("198.18.13.1")!
            let line = "2026-12-01 10:00:00 bad 198.18.13.1"
            try write([line])
            #expect(try eventually(within: 10) { try store.lookup(client) != nil })
            clock.advance(seconds: 2)
            #expect(try eventually(within: 10) { try store.lookup(client) == nil }, "the first ban (2 s) ends")
            try write([line])
            #expect(try eventually(within: 10) { try store.lookup(client) != nil })
            guard case .at(let end) = try #require(try store.lookup(client)).expiry else {
                Issue.record("a timed ban")
                return
            }
            let left = Double(Int64(end) - Int64(clock.now)) / 1e9
            #expect(left > 2 && left <= 4, "the second ban lasts twice the ban time: \(left) s")
            // Past the jail's ban time, within the escalated one: an offence changes nothing.
            clock.advance(seconds: 2.5)
            try write([line])
            #expect(eventually(within: 10) { daemon.status.jails[0].counters.matched == 3 })
            #expect(daemon.status.jails[0].counters.bans == 2, "not banned (nor counted) again while banned")
            #expect(daemon.history?.previousBans([client], jail: "app", wallSeconds: SystemClock.wallSeconds()) == [2])
        }
    }

    @Test("escalation applies to prefix bans: a /64 banned again (by another of its addresses) is banned twice as long")
    func escalatedPrefix() throws {
        try withStoreFileJails({ source in
            var jail = JailConfiguration(name: "app", source: source)
            jail.policy.threshold = 1
            jail.policy.banTime = 2
            jail.escalation = Escalation()
            jail.aggregation.ipv6Prefix = 64
            jail.filter = .fail2ban(.inline(failregex: "^\\s*bad <HOST>$"), useDNS: nil, detectsDates: true)
            return [jail]
        }) { daemon, store, clock, write in
            let network = try IPNetwork(parsing: "2001:2:0:5::/64")
            try write(["2026-12-01 10:00:00 bad 2001:2:0:5::1"])
            #expect(try eventually(within: 10) { try store.lookup(network: network) != nil })
            #expect(try store.lookup(IPAddress("2001:2:0:5::1")!) == nil, "the network, not the address")
            clock.advance(seconds: 2.5)  // the first ban (2 s) has ended
            try write(["2026-12-01 10:00:01 bad 2001:2:0:5::2"])
            #expect(eventually(within: 10) { daemon.status.jails[0].counters.bans == 2 })
            guard case .at(let end) = try #require(try store.lookup(network: network)).expiry else {
                Issue.record("a timed ban")
                return
            }
            let left = Double(Int64(end) - Int64(clock.now)) / 1e9
            #expect(left > 2 && left <= 4, "the second ban of the /64 lasts twice the ban time: \(left) s")
        }
    }
}

@Suite("Daemon in process, in memory")
struct DaemonLogicTests {
    @Test("the ban log has one line per ban and per lift, with the address, and a ban's jail and duration")
    func banLog() throws {
        let path = NSTemporaryDirectory() + "pc-banlog-\(getpid()).log"
        defer { unlink(path) }
        try withStoreDaemon(
            configure: {
                $0.threshold = 2
                $0.banTime = 1
                $0.tableBins = 10_007
            }, publishers: [try BanLog(path: path)]
        ) { daemon, _, clock, writer in
            let batch = LineBatch()
            for _ in 0..<2 { for address in ["198.18.6.1", "2001:2::6:1"] { batch.append(offenceLine(address)) } }
            batch.append(offenceLine("198.18.6.2"))  // one offence: no ban
            _ = try writer.publish(batch)
            #expect(eventually(within: 10) { daemon.status.total.bans == 2 })
            clock.advance(seconds: 1)
            #expect(eventually(within: 10) { daemon.status.unbans == 2 })
        }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            $0.split(separator: " ")
        }
        #expect(lines.count == 4)
        #expect(Set(lines.filter { $0[1] == "ban" }.map { String($0[2]) }) == ["198.18.6.1", "2001:2::6:1"])
        #expect(Set(lines.filter { $0[1] == "unban" }.map { String($0[2]) }) == ["198.18.6.1", "2001:2::6:1"])
        #expect(
            lines.filter { $0[1] == "ban" }.allSatisfy { $0.count == 5 && $0[3] == "jail=default" && $0[4] == "for=1" })
        #expect(lines.filter { $0[1] == "unban" }.allSatisfy { $0.count == 3 })
        // 2026-11-26T21:05:00.123Z: ISO 8601 UTC with milliseconds.
        #expect(lines.allSatisfy { $0[0].count == 24 && $0[0].hasSuffix("Z") && $0[0].dropFirst(10).first == "T" })
    }

    @Test("allowlisted clients are never banned; a failregex replaces the built-in format")
    func allowlistAndRegex() throws {
        let allowlist = try Allowlist(["198.18.9.0/24"])
        try withStoreDaemon(
            configure: {
                $0.threshold = 2
                $0.tableBins = 10_007
                $0.failRegexes = ["^sshd\\[\\d+\\]: Failed password for \\S+ from <HOST> port"]
                $0.allowlist = allowlist
            }
        ) { daemon, store, _, writer in
            let batch = LineBatch()
            for _ in 0..<2 {
                batch.append("sshd[7]: Failed password for root from 198.18.8.1 port 22 ssh2")
                batch.append("sshd[7]: Failed password for root from 198.18.9.1 port 22 ssh2")  // allowlisted
                batch.append(offenceLine("198.18.8.2"))  // the built-in format: not used with a failregex
            }
            _ = try writer.publish(batch)
            #expect(eventually(within: 10) { daemon.status.total.lines == 6 })
            #expect(try store.entries().map(\.address) == [IPAddress("198.18.8.1")!])
            #expect(daemon.status.total.allowlisted == 2)
            #expect(daemon.status.total.notMatching == 2)
            #expect(store.allowlist.contains(try IPNetwork(parsing: "198.18.9.0/24")), "the driver's allowlist too")
        }
    }

    @Test("a line the file transport cannot frame (longer than --file-max-line) shows in the daemon's status")
    func fileRejectsAreCounted() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var transport = TransportConfiguration(kind: .file)
        transport.file.path = scratch.filePath
        transport.file.maxLineLength = 1024
        transport.file.readMethod = .read
        FileManager.default.createFile(atPath: scratch.filePath, contents: nil)
        var configuration = DaemonConfiguration(transport: transport)
        configuration.tableBins = 10_007
        let daemon = try Daemon(
            configuration: configuration, maps: InMemoryBanStore(capacity: 64), bootClock: ManualClock().source)
        try daemon.start()
        defer { daemon.stop() }
        let handle = try #require(FileHandle(forWritingAtPath: scratch.filePath))
        handle.write(Data((String(repeating: "x", count: 5000) + "\n" + offenceLine("198.18.14.1") + "\n").utf8))
        try handle.close()
        #expect(eventually(within: 10) { daemon.status.total.lines == 1 && daemon.status.transportRejected == 1 })
        #expect(daemon.status.statusLine(previousLines: 0, interval: 1).contains("transport rejected 1"))
    }
}
