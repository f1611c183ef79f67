// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
@testable import PortcullisDaemon
import PortcullisSystem
import Synchronization
import Testing
import TestSupport

/// The journal's line per ban and unban (`BanJournal`): its words and its cap, without a daemon.
@Suite("Ban and unban lines in the journal")
struct BanJournalTests {
    static let now = SystemClock.monotonicNanoseconds()

    @Test("a ban names jail, address or network, duration and origin; an unban the jail and why")
    func lines() {
        let address = IPAddress("198.18.0.4")!
        let jailBan = BanEvent(
            kind: .ban, origin: .filter, addresses: [address, IPAddress("2001:2::a:1")!],
            monotonicNanoseconds: Self.now,
            jail: "sshd", seconds: [3600, 5400], prefixLengths: [32, 64])
        #expect(BanJournal.line(jailBan, 0) == "[sshd] Ban 198.18.0.4 for 1h origin=jail")
        #expect(BanJournal.line(jailBan, 1) == "[sshd] Ban 2001:2::/64 for 1h30m origin=jail")
        let manual = BanEvent(
            kind: .ban, origin: .operator, addresses: [IPAddress("198.18.1.0")!], monotonicNanoseconds: Self.now,
            jail: "manual", seconds: [0], prefixLengths: [24])
        #expect(BanJournal.line(manual, 0) == "[manual] Ban 198.18.1.0/24 for good origin=manual")
        let ended = BanEvent(
            kind: .unban, origin: .expiry, addresses: [address, address], monotonicNanoseconds: Self.now,
            liftedJails: ["sshd", nil])
        #expect(BanJournal.line(ended, 0) == "[sshd] Unban 198.18.0.4 reason=ended")
        #expect(BanJournal.line(ended, 1) == "Unban 198.18.0.4 reason=ended", "no jail of this daemon made it")
        let lifted = BanEvent(
            kind: .unban, origin: .operator, addresses: [address], monotonicNanoseconds: Self.now,
            liftedJails: ["manual"])
        #expect(BanJournal.line(lifted, 0) == "[manual] Unban 198.18.0.4 reason=manual")
        let aggregated = BanEvent(
            kind: .unban, origin: .aggregate, addresses: [address], monotonicNanoseconds: Self.now,
            liftedJails: ["web"])
        #expect(BanJournal.line(aggregated, 0) == "[web] Unban 198.18.0.4 reason=aggregated")
        #expect(BanJournal.duration(90) == "1m30s")
        #expect(BanJournal.duration(604_800 + 86_400 + 1) == "1w1d1s")
        #expect(BanJournal.grouped(1_234_567) == "1,234,567" && BanJournal.grouped(999) == "999")
    }

    /// The ban and unban lines written, and the counts the summaries give.
    static func tally(_ lines: [String]) -> (bans: Int, unbans: Int, unsaidBans: Int, unsaidUnbans: Int) {
        func count(_ line: String, before word: String) -> Int {
            guard let range = line.range(of: " more \(word)") else { return 0 }
            let digits = line[..<range.lowerBound].split(separator: " ").last ?? ""
            return Int(digits.replacingOccurrences(of: ",", with: "")) ?? -1
        }
        let summaries = lines.filter { $0.hasPrefix("... and ") }
        return (
            lines.filter { $0.contains(" Ban ") }.count, lines.filter { $0.contains("Unban ") }.count,
            summaries.map { count($0, before: "ban(s)") }.reduce(0, +),
            summaries.map { count($0, before: "unban(s)") }.reduce(0, +)
        )
    }

    static func addresses(_ count: Int, _ third: Int) -> [IPAddress] {
        (1...count).map { IPAddress("198.18.\(third).\($0)")! }
    }

    @Test("past the cap, bans and unbans are counted and one summary line gives how many (at the stop: at once)")
    func capAndSummaryAtFlush() throws {
        let written = Mutex<[String]>([])
        let journal = try BanJournal(linesPerSecond: 5, summarySeconds: 3600) { line in
            written.withLock { $0.append(line) }
        }
        journal.publish(
            BanEvent(
                kind: .ban, origin: .filter, addresses: Self.addresses(20, 2), monotonicNanoseconds: Self.now,
                jail: "sshd", seconds: Array(repeating: 600, count: 20)))
        journal.publish(
            BanEvent(kind: .unban, origin: .expiry, addresses: Self.addresses(3, 2), monotonicNanoseconds: Self.now))
        journal.flush()
        let lines = written.withLock { $0 }
        let tally = Self.tally(lines)
        #expect(tally.bans == 5, "the first 5 of a fresh second: \(lines)")
        #expect(tally.bans + tally.unsaidBans == 20, "\(lines)")
        #expect(tally.unbans + tally.unsaidUnbans == 3, "\(lines)")
        #expect(lines.last?.contains("15 more ban(s)") == true, "\(lines)")
        #expect(lines.filter { $0.hasPrefix("... and ") }.count == 1, "one summary: \(lines)")
    }

    @Test("a flood's summary comes by itself once its interval has passed, without a later ban")
    func summaryAfterItsInterval() throws {
        let written = Mutex<[String]>([])
        let journal = try BanJournal(linesPerSecond: 2, summarySeconds: 1) { line in
            written.withLock { $0.append(line) }
        }
        journal.publish(
            BanEvent(
                kind: .ban, origin: .operator, addresses: Self.addresses(12, 3), monotonicNanoseconds: Self.now,
                jail: "manual", seconds: Array(repeating: 0, count: 12)))
        #expect(eventually(within: 10) { written.withLock { $0.contains { $0.hasPrefix("... and ") } } })
        let lines = written.withLock { $0 }
        #expect(Self.tally(lines).bans == 2 && Self.tally(lines).unsaidBans == 10, "\(lines)")
        #expect(lines.allSatisfy { !$0.contains("Unban") })
    }
}

/// The journal lines and the ban log's reopen, in a daemon process.
extension DaemonProcessTests {
    @Test(
        "a ban and an unban are <5> lines naming jail, address, duration and origin when stdout is the journal; the ban log reopened after a rename on SIGHUP and on SIGUSR1 with no line lost, and a reload that names another path writes there"
    )
    func banLogReopened() throws {
        try withTestNetwork("L") { network, scratch in
            let files = try ConfigurationScratch()
            defer { files.remove() }
            let banLog = files.directory + "/bans.log"
            let jail = """
                [jail.web]
                source = "file:LOG"
                failregex = '^\\s*failed from <HOST>$'
                maxretry = 2
                bantime = 2

                """
            try files.write("[daemon]\nban-log = \"\(banLog)\"\n\n" + jail)
            let ready = files.directory + "/ready.json"
            let socket = files.directory + "/control.sock"
            // $JOURNAL_STREAM names the pipe that is the daemon's stdout and stderr, as systemd's would.
            let output = Pipe()
            var status = stat()
            try #require(fstat(output.fileHandleForWriting.fileDescriptor, &status) == 0)
            let daemon = Process()
            daemon.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            daemon.arguments = [
                "--net=/run/netns/\(network.receiver)", "--", daemonPath, "--interface", network.receiverInterface,
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                "--ready-file", ready, "--control", socket,
            ]
            daemon.environment = ProcessInfo.processInfo.environment.merging([
                "JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino)"
            ]) { $1 }
            daemon.standardOutput = output
            daemon.standardError = output
            try daemon.run()
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            #expect(waitForOutput(daemon, output, containing: " reading ", within: 30), "the daemon reads")
            func said(_ line: String) -> Bool {
                waitForOutput(daemon, output, containing: "\n<5>portcullisd: " + line + "\n", within: 15)
            }
            func cli(_ arguments: [String]) throws -> ProcessResult {
                let result = try runProcess(Products.cli, arguments + ["--control", socket])
                #expect(result.status == 0, "\(arguments): \(result.stderr)")
                return result
            }
            func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
            func logged(_ path: String, _ fragment: String) -> Bool {
                eventually(within: 10) { text(path).contains(fragment) }
            }

            // The journal: a jail's ban and its end, an operator's ban and unban.
            try files.append(["failed from 198.18.21.1", "failed from 198.18.21.1"])
            #expect(said("[web] Ban 198.18.21.1 for 2s origin=jail"), "a jail's ban")
            #expect(said("[web] Unban 198.18.21.1 reason=ended"), "its end")
            _ = try cli(["ban", "198.18.21.2", "--for", "600"])
            #expect(said("[manual] Ban 198.18.21.2 for 10m origin=manual"), "an operator's ban")
            _ = try cli(["ban", "198.18.22.0/24"])
            #expect(said("[manual] Ban 198.18.22.0/24 for good origin=manual"), "a network for good")
            _ = try cli(["unban", "198.18.21.2"])
            #expect(said("[manual] Unban 198.18.21.2 reason=manual"), "an operator's unban")
            #expect(logged(banLog, " unban 198.18.21.2\n"))

            // logrotate's rename, then SIGHUP: the next ban goes to a new file at the path.
            try FileManager.default.moveItem(atPath: banLog, toPath: banLog + ".1")
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloadsDone(readyFile: ready) == 1 }, "the reload done")
            _ = try cli(["ban", "198.18.21.3", "--for", "600"])
            #expect(logged(banLog, " ban 198.18.21.3 jail=manual for=600\n"), "in the new file")
            #expect(text(banLog + ".1").contains(" ban 198.18.21.2 jail=manual for=600\n"))
            #expect(!text(banLog + ".1").contains("198.18.21.3"))

            // Renamed again, bans on both sides of SIGUSR1 (reopen only): each line in one of the two.
            try FileManager.default.moveItem(atPath: banLog, toPath: banLog + ".2")
            _ = try cli(["ban"] + (1...20).map { "198.18.23.\($0)" } + ["--for", "600"])
            kill(daemon.processIdentifier, SIGUSR1)
            #expect(eventually(within: 10) { FileManager.default.fileExists(atPath: banLog) }, "reopened by SIGUSR1")
            let reopened = "portcullisd: ban log reopened: \(banLog)\n"
            #expect(
                waitForOutput(daemon, output, within: 10) { $0.components(separatedBy: reopened).count - 1 == 2 },
                "said at SIGHUP and at SIGUSR1")
            _ = try cli(["ban"] + (21...40).map { "198.18.23.\($0)" } + ["--for", "600"])
            #expect(logged(banLog, " ban 198.18.23.40 jail=manual"))
            let both = text(banLog + ".2") + text(banLog)
            for host in 1...40 {
                let count = both.components(separatedBy: " ban 198.18.23.\(host) jail=manual").count - 1
                #expect(count == 1, "198.18.23.\(host) logged \(count) times")
            }
            #expect(text(banLog).contains(" ban 198.18.23.21 jail=manual"), "after SIGUSR1: the new file")
            #expect(reloadsDone(readyFile: ready) == 1, "SIGUSR1 reloads nothing")

            // A reload naming another path writes there; one naming a path it cannot open is refused.
            let other = files.directory + "/other.log"
            try files.write("[daemon]\nban-log = \"\(other)\"\n\n" + jail)
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloadsDone(readyFile: ready) == 2 }, "the reload done")
            _ = try cli(["ban", "198.18.21.5", "--for", "600"])
            #expect(logged(other, " ban 198.18.21.5 jail=manual for=600\n"), "in the path the reload named")
            try files.write("[daemon]\nban-log = \"\(files.directory)/missing/bans.log\"\n\n" + jail)
            kill(daemon.processIdentifier, SIGHUP)
            #expect(waitForOutput(daemon, output, containing: "configuration refused", within: 15), "refused")
            _ = try cli(["ban", "198.18.21.6", "--for", "600"])
            #expect(logged(other, " ban 198.18.21.6 jail=manual for=600\n"), "the file in use kept")
            let all = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(all)")
            #expect(!text(banLog).contains("198.18.21.5"))
        }
    }
}
