// SPDX-License-Identifier: Apache-2.0
import Synchronization
import OffenceTable
import PortcullisCore
import Foundation
import LogTransport
@_spi(Testing) @testable import PortcullisDaemon
import Testing
import TestSupport
import XDPFirewall
import XDPTesting
import PortcullisSystem

/// The built-in line with `address` as written (tests also write forms the formatter would not).
func offenceLine(_ address: String) -> String {
    "2026-11-26 18:42:46\(OffenceLine.client)\(address)\(OffenceLine.suffix)"
}

/// How many times longer than on a quiet machine a condition is waited for: CI runs beside other
/// work, and this machine's speed swings several-fold minute to minute. A condition that holds
/// ends the wait at once, so only a check that something does not happen takes longer.
let patience = 3.0

/// Polls `condition` every 20 ms for at most `seconds` (times `patience`); returns whether it came true.
func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds * patience)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}

/// Runs `body` with a started daemon that reads a scratch shm segment into private maps (nothing
/// pinned) and a writer to it; stops and removes everything afterwards.
func withShmDaemon(
    mapEntries: UInt32, configure: (inout DaemonConfiguration) -> Void, publishers: [BanPublisher] = [],
    prepare: (Daemon) throws -> Void = { _ in }, _ body: (Daemon, BanMaps, LogWriter) throws -> Void
) throws {
    try Privileges.require()
    let scratch = TransportScratch()
    defer { scratch.remove() }
    var transport = TransportConfiguration(kind: .shm)
    transport.shm.name = scratch.shmName
    var configuration = DaemonConfiguration(transport: transport)
    configure(&configuration)
    let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: mapEntries)
    let maps = try #require(program.maps)
    let daemon = try Daemon(configuration: configuration, maps: maps, publishers: publishers)
    try prepare(daemon)
    try daemon.start()
    defer { daemon.stop() }
    let writer = try transport.makeWriter()
    defer { writer.close() }
    try body(daemon, maps, writer)
}

@Suite("Daemon in process", .enabled(if: Privileges.runnable), .serialized)
struct DaemonInProcessTests {
    @Test(
        "offences through each transport flip test-run verdicts to drop, and back after the ban time",
        arguments: TransportKind.writable)
    func bansAndExpiry(kind: TransportKind) throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var transport = TransportConfiguration(kind: kind)
        transport.shm.name = scratch.shmName
        transport.socket.directory = scratch.socketDirectory
        transport.file.path = scratch.filePath
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = 3
        configuration.banTime = 3
        configuration.workers = 2
        configuration.tableBins = 100_003
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 4096)
        let maps = try #require(program.maps)
        let daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        defer { daemon.stop() }

        let offenders = (1...20).map { "198.18.4.\($0)" } + (1...20).map { "2001:2::4:\($0)" }
        let bystander = "198.18.5.1"  // two offences: below the threshold
        let writer = try transport.makeWriter()
        defer { writer.close() }
        let batch = LineBatch()
        for _ in 0..<3 { for address in offenders { batch.append(offenceLine(address)) } }
        for _ in 0..<2 { batch.append(offenceLine(bystander)) }
        batch.append("garbage that is no offence")
        _ = try writer.publish(batch)

        #expect(try eventually(within: 10) { try maps.entries().count == offenders.count })
        func verdict(_ address: String) throws -> XDPVerdict {
            let source = IPAddress(address)!
            let destination = IPAddress(source.family == .ipv4 ? "198.19.255.254" : "2001:2::fffe")!
            return try program.testRun(frame: TestFrame.udp(from: source, to: destination)).verdict
        }
        for address in offenders { #expect(try verdict(address) == .drop, "\(address)") }
        #expect(try verdict(bystander) == .pass)
        // Counters are published after each batch of lines: wait for the last one.
        #expect(eventually(within: 10) { daemon.status.total.lines == UInt64(3 * offenders.count + 3) })
        let status = daemon.status.total
        #expect(status.bans == UInt64(offenders.count), "exactly one ban per offender")
        #expect(status.matched == UInt64(3 * offenders.count + 2))
        #expect(status.notMatching == 1)

        // After the ban time the daemon lifts them (and the program passes them even before).
        #expect(try eventually(within: 10) { try maps.entries().isEmpty })
        for address in offenders { #expect(try verdict(address) == .pass, "\(address)") }
        #expect(eventually(within: 10) { daemon.status.unbans == UInt64(offenders.count) })
        // Their counts were reset: three new offences ban again.
        batch.removeAll()
        for _ in 0..<3 { batch.append(offenceLine(offenders[0])) }
        _ = try writer.publish(batch)
        #expect(try eventually(within: 10) { try maps.lookup(IPAddress(offenders[0])!) != nil })
    }

    @Test("a ban log released at once (a start refused right after opening it) does not crash its thread")
    func banLogReleasedAtOnce() throws {
        let path = NSTemporaryDirectory() + "pc-banlog-\(getpid())-released.log"
        defer { unlink(path) }
        // Its thread read the log through an unowned reference: a log released before the thread
        // first ran trapped ("already destroyed"), 11 times in 12 on a refused start.
        for _ in 0..<300 { _ = try BanLog(path: path) }
    }

    @Test("a ban log that cannot be written says so once, counts each failure, and says when it writes again")
    func banLogOnFullDisk() throws {
        try Privileges.require()
        let directory = NSTemporaryDirectory() + "pc-banlog-full-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(mount("tmpfs", directory, "tmpfs", 0, "size=64k") == 0, "mount a 64 KiB tmpfs: \(errno)")
        defer { umount(directory) }
        let said = Mutex<[String]>([])
        let log = try BanLog(path: directory + "/bans.log") { line in said.withLock { $0.append(line) } }
        // The rest of the file system taken by a filler.
        let filler = directory + "/filler"
        FileManager.default.createFile(atPath: filler, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: filler))
        while (try? handle.write(contentsOf: Data(count: 4096))) != nil {}
        try handle.close()
        func ban(_ address: String) {
            log.publish(
                BanEvent(
                    kind: .ban, origin: .filter, addresses: [IPAddress(address)!],
                    monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: "full", seconds: [60]))
            log.flush()
        }
        for index in 1...3 { ban("198.18.9.\(index)") }
        #expect(log.writeErrors == 3)
        let lines = said.withLock { $0 }
        #expect(lines.count == 1, "said once: \(lines)")
        #expect(lines.first?.contains("cannot write the ban log \(directory)/bans.log") == true, "\(lines)")
        unlink(filler)
        ban("198.18.9.4")
        #expect(said.withLock { $0.last } == "the ban log \(directory)/bans.log is written again")
        #expect(try String(contentsOfFile: directory + "/bans.log", encoding: .utf8).contains("198.18.9.4 jail=full"))
    }

    @Test("a ban log on /proc or not a regular file is refused with one line")
    func banLogOnPseudoFile() throws {
        for path in ["/proc/version", "/dev/null"] {
            #expect {
                _ = try BanLog(path: path)
            } throws: { error in
                "\(error)".contains("the ban log \(path) is not a regular file on a disk")
            }
        }
    }

    @Test("offences going on across ban ends: a client that crossed again is never left unbanned by the lift")
    func reBanDuringLift() throws {
        // Each lift chunk pauses 100 ms under the ban-map lock: re-bans the workers make meanwhile
        // wait for it. (Each key's lift is atomic now, lookup-and-delete with a ban in force put
        // back, so the lock is no longer what keeps a re-ban from being deleted; the test holds
        // the outcome: no client that crossed again is left without its ban.)
        try withShmDaemon(
            mapEntries: 8192,
            configure: {
                $0.threshold = 3
                $0.banTime = 2
                $0.workers = 2
                $0.tableBins = 100_003
            }, prepare: { $0.liftPauseMicroseconds = 100_000 }
        ) { daemon, maps, writer in
            // Every client offends 100 times a second for 5 s, as the filter lets it: only while
            // it has no ban in force. Its offences after each ban's end re-ban it while that ban
            // is being lifted: two or three ban cycles each.
            let clients = (0..<1000).map { IPAddress("198.18.\(20 + $0 / 250).\($0 % 250 + 1)")! }
            let batch = LineBatch()
            let start = Date()
            while Date().timeIntervalSince(start) < 5 {
                batch.removeAll()
                let now = SystemClock.bootNanoseconds()
                for client in clients where try maps.lookup(client).map({ $0.isExpired(now: now) }) ?? true {
                    batch.append(offenceLine(client.description))
                }
                if !batch.isEmpty { _ = try writer.publish(batch) }
                usleep(10_000)
            }
            // A client whose count has crossed must hold a ban; one the lift deleted under a new
            // crossing would stay unbanned (its count stuck) until that crossing's ban time ran
            // out (2 s): still so 0.3 s after the writing stopped.
            func unbannedCrossed() throws -> Set<String> {
                var found = Set<String>()
                for client in clients where try maps.lookup(client) == nil {
                    if let count = daemon.jail.table.count(of: client), count >= 3 { found.insert(client.description) }
                }
                return found
            }
            // A crossing waiting behind the paused lift is installed within one pause and one tick.
            usleep(300_000)
            let first = try unbannedCrossed()
            usleep(100_000)
            let lasting = first.intersection(try unbannedCrossed())
            #expect(lasting.isEmpty, "crossed but unbanned: \(lasting.sorted().prefix(5)) (\(lasting.count) in all)")
            #expect(daemon.status.total.bans >= UInt64(2 * clients.count), "clients were banned again and again")
        }
    }

    @Test(
        "the ban log writes what is published while the daemon runs, not only at its end: 2,000 events from two threads, each line once"
    )
    func banLogWritesAsItGoes() throws {
        let path = NSTemporaryDirectory() + "pc-banlog-live-\(getpid()).log"
        defer { unlink(path) }
        let log = try BanLog(path: path)
        let threads = (0..<2).map { thread in
            Thread {
                for index in 0..<1000 {
                    log.publish(
                        BanEvent(
                            kind: .ban, origin: .filter,
                            addresses: [
                                IPAddress(ipv4NetworkOrder: UInt32(0xC612_4000 + thread * 1000 + index).bigEndian)
                            ],
                            monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: "sshd", seconds: [60]))
                }
            }
        }
        for thread in threads { thread.start() }
        // No flush: the log's own thread must have written them all while the log lives.
        func lines() -> [Substring] {
            ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
        }
        #expect(eventually(within: 20) { lines().count == 2000 }, "\(lines().count) of 2000 lines written")
        let addresses = Set(lines().map { $0.split(separator: " ")[2] })
        #expect(addresses.count == 2000)
        #expect(lines().allSatisfy { $0.hasSuffix(" jail=sshd for=60") })
        withExtendedLifetime(log) {}
    }

    @Test("a ban log that cannot be opened is refused with its path")
    func banLogUnwritable() {
        #expect(throws: DaemonError.self) { try BanLog(path: "/nonexistent-dir-pc/bans.log") }
        do {
            _ = try BanLog(path: "/nonexistent-dir-pc/bans.log")
        } catch {
            #expect(error.description.contains("/nonexistent-dir-pc/bans.log"))
        }
    }
}

@Suite("Worker counters")
struct WorkerCounterTests {
    @Test("the sum of worker counters adds every counter")
    func sumCoversEveryField() {
        var one = WorkerCounters()
        for (index, field) in WorkerCounters.fields.enumerated() { one[keyPath: field] = UInt64(index + 1) }
        let status = DaemonStatus(
            workers: [one, one], workerCPUs: [nil, nil], unbans: 0, sweptUnbans: 0, scheduledBans: 0, tableBins: 0,
            linesLost: 0, expiryCPUNanoseconds: 0, uptime: 0)
        for (index, field) in WorkerCounters.fields.enumerated() {
            #expect(status.total[keyPath: field] == UInt64(2 * (index + 1)))
        }
        // Every stored counter is listed: a field missing from `fields` would not be summed.
        #expect(Mirror(reflecting: one).children.count == WorkerCounters.fields.count)
    }
}
