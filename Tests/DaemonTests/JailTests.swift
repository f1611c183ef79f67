// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import Foundation
import LogTransport
@_spi(Testing) @testable import PortcullisDaemon
import PortcullisConfiguration
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall
import XDPTesting

/// fail2ban's configuration, copied to a scratch directory (so a test can add its jail.local),
/// with a scratch log file; removed afterwards.
struct Fail2banScratch {
    let directory = NSTemporaryDirectory() + "pc-fail2ban-\(getpid())-\(UUID().uuidString.prefix(8))"
    var log: String { directory + "/test.log" }

    /// The scratch copy, or nil when fail2ban's files are missing (the test is skipped; with `CI`
    /// set it fails instead).
    static func make(jailLocal: String) throws -> Fail2banScratch? {
        guard FileManager.default.fileExists(atPath: "/etc/fail2ban/jail.conf") else {
            try #require(!Privileges.inCI, "fail2ban's files are test data: tools/install-deps installs them")
            return nil
        }
        return try Fail2banScratch(jailLocal: jailLocal)
    }

    private init(jailLocal: String) throws {
        try FileManager.default.copyItem(atPath: "/etc/fail2ban", toPath: directory)
        try jailLocal.replacingOccurrences(of: "LOG", with: log)
            .write(toFile: directory + "/jail.local", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: log, contents: nil)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// Appends `lines` to the log.
    func append(_ lines: [String]) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}

/// An sshd failure as sshd logs it through syslog.
func sshdFailure(_ address: String, _ index: Int) -> String {
    "Dec  1 21:00:\(String(format: "%02d", index % 60)) myhost sshd[\(1000 + index)]: Failed password for root from "
        + "\(address) port \(40000 + index) ssh2"
}

@Suite("Jails", .enabled(if: Privileges.runnable), .serialized)
struct JailTests {
    /// Seconds until `address`'s ban ends (nil: not banned; 0: for good).
    func remaining(_ maps: BanMaps, _ address: IPAddress) throws -> Double? {
        guard let entry = try maps.lookup(address) else { return nil }
        guard case .at(let end) = entry.expiry else { return 0 }
        return Double(Int64(end) - Int64(SystemClock.bootNanoseconds())) / 1e9
    }

    @Test(
        "a fail2ban sshd jail (maxretry 5, findtime 10m, bantime 1h, bantime.increment) bans on the fifth failure, not the fourth, and a repeat offender's next ban, after a restart, lasts 2h as fail2ban computes it"
    )
    func fail2banJailAndEscalation() throws {
        try Privileges.require()
        guard
            let fail2ban = try Fail2banScratch.make(
                jailLocal: """
                    [sshd]
                    enabled = true
                    maxretry = 5
                    findtime = 10m
                    bantime = 1h
                    bantime.increment = true
                    logpath = LOG
                    backend = auto
                    """)
        else { return }
        defer { fail2ban.remove() }
        let imported = try Fail2banImport.jails(
            directory: fail2ban.directory, defaultSource: TransportConfiguration(kind: .file))
        let sshd = try #require(imported.jails.first { $0.name == "sshd" })
        #expect(sshd.policy.threshold == 5 && sshd.policy.findTime == 600 && sshd.policy.banTime == 3600)
        #expect(sshd.escalation == Escalation(), "fail2ban's default formula, factor 1")
        #expect(sshd.origin.contains("replaced by XDP enforcement"))
        #expect(sshd.source.file.path == fail2ban.log)

        var configuration = DaemonConfiguration(transport: sshd.source)
        configuration.jails = [sshd]
        configuration.historyPath = fail2ban.directory + "/ban-history.json"
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        let maps = try #require(program.maps)
        let client = IPAddress("198.18.7.1")!

        var daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        try fail2ban.append((0..<4).map { sshdFailure("198.18.7.1", $0) })
        #expect(eventually(within: 10) { daemon.status.jails[0].counters.matched == 4 })
        #expect(try maps.lookup(client) == nil, "four failures do not ban")
        try fail2ban.append([sshdFailure("198.18.7.1", 4)])
        #expect(try eventually(within: 10) { try maps.lookup(client) != nil }, "the fifth bans")
        let first = try #require(try remaining(maps, client))
        #expect(first > 3600 - 60 && first <= 3600, "the first ban lasts bantime: \(first) s")
        let origin = try #require(try maps.lookup(client)).origin
        #expect(try maps.originNames()[origin] == "sshd", "the ban names its jail in the maps")
        daemon.stop()
        #expect(FileManager.default.fileExists(atPath: configuration.historyPath!), "the history is saved")

        // An operator lifts the ban; the daemon restarts and the client offends again.
        _ = try maps.unban(client)
        daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        defer { daemon.stop() }
        try fail2ban.append((5..<10).map { sshdFailure("198.18.7.1", $0) })
        #expect(try eventually(within: 10) { try maps.lookup(client) != nil })
        let second = try #require(try remaining(maps, client))
        // fail2ban: ban.Time * (1 << ban.Count) * banFactor with one earlier ban: 2 h.
        #expect(second > 7200 - 60 && second <= 7200, "the second ban lasts twice as long: \(second) s")
    }
}

@Suite("Jails, in memory")
struct JailLogicTests {
    @Test(
        "two jails on one file read it once and count apart: a client can be at 2 of 5 in one and banned by the other")
    func jailsCountApart() throws {
        try withStoreFileJails(
            { source in
                var strict = JailConfiguration(name: "strict", source: source)
                strict.policy.threshold = 3
                strict.policy.banTime = 60
                strict.filter = .fail2ban(
                    .inline(failregex: "^\\s*login failed from <HOST>$\n^\\s*bad request from <HOST>$"), useDNS: nil,
                    detectsDates: true)
                var lenient = JailConfiguration(name: "lenient", source: source)
                lenient.policy.threshold = 5
                lenient.policy.banTime = 600
                lenient.filter = .fail2ban(
                    .inline(failregex: "^\\s*login failed from <HOST>$"), useDNS: nil, detectsDates: true)
                return [strict, lenient]
            }, configure: { $0.workers = 2 }
        ) { daemon, maps, clock, write in
            #expect(daemon.status.workers.count == 1, "one file, one reader, whatever the jails")
            try write([
                "2026-12-01 10:00:00 login failed from 198.18.8.1", "2026-12-01 10:00:01 bad request from 198.18.8.1",
                "2026-12-01 10:00:02 bad request from 198.18.8.1",
            ])
            let client = IPAddress("198.18.8.1")!
            #expect(try eventually(within: 10) { try maps.lookup(client) != nil }, "strict bans on its third")
            let status = daemon.status
            #expect(status.total.lines == 3, "read once")
            #expect(status.jails.map(\.name) == ["strict", "lenient"])
            #expect(status.jails[0].counters.matched == 3 && status.jails[0].counters.bans == 1)
            #expect(status.jails[1].counters.matched == 1 && status.jails[1].counters.notMatching == 2)
            #expect(daemon.jails[1].table.count(of: client) == 1, "lenient counts its own")
            guard case .at(let end) = try #require(try maps.lookup(client)).expiry else {
                Issue.record("a timed ban")
                return
            }
            let left = Double(Int64(end) - Int64(clock.now)) / 1e9
            #expect(left > 0 && left <= 60, "strict's ban time")
        }
    }
}

@Suite("Jails under hostile lines")
struct HostileLineTests {
    @Test(
        "a line built to make a fail2ban pattern backtrack, and an overlong one, are counted and skipped; the jail goes on banning"
    )
    func hostileLines() throws {
        try withStoreFileJails(
            { source in
                var jail = JailConfiguration(name: "app", source: source)
                jail.policy.threshold = 1
                // Nested quantifiers: exponential backtracking on a run of a's that does not end in "!".
                jail.filter = .fail2ban(
                    .inline(failregex: "^\\s*(a|aa)+! from <HOST>$"), useDNS: nil, detectsDates: true)
                return [jail]
            }, configure: { $0.maxLineLength = 256 }
        ) { daemon, maps, _, write in
            try write([
                "2026-12-01 10:00:00 " + String(repeating: "a", count: 60) + "? from 198.18.12.1",
                "2026-12-01 10:00:01 aa! from 198.18.12.2 " + String(repeating: "x", count: 400),
                "2026-12-01 10:00:02 aa! from 198.18.12.3",
            ])
            #expect(
                try eventually(within: 10) { try maps.lookup(IPAddress("198.18.12.3")!) != nil }, "the jail goes on")
            let counters = daemon.status.jails[0].counters
            #expect(counters.matchLimit == 1, "the backtracking line hit the match limit")
            #expect(counters.tooLong == 1, "the overlong line was skipped")
            #expect(try maps.lookup(IPAddress("198.18.12.1")!) == nil && maps.lookup(IPAddress("198.18.12.2")!) == nil)
        }
    }
}

extension DaemonProcessTests {
    @Test("a fail2ban jail reads every file its logpath names, a list and a glob")
    func fail2banLogpaths() throws {
        guard let fail2ban = try Fail2banScratch.make(jailLocal: "") else { return }
        defer { fail2ban.remove() }
        for name in ["b.other", "c.other"] {
            FileManager.default.createFile(atPath: fail2ban.directory + "/" + name, contents: nil)
        }
        try """
        [sshd]
        enabled = true
        backend = auto
        logpath = \(fail2ban.log)
                  \(fail2ban.directory)/*.other
        """.write(toFile: fail2ban.directory + "/jail.local", atomically: true, encoding: .utf8)
        let result = try runProcess(
            daemonPath, ["--fail2ban-config", fail2ban.directory, "--check-config", "--interface", "lo"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            result.stdout.contains(
                "file \(fail2ban.log), file \(fail2ban.directory)/b.other, file \(fail2ban.directory)/c.other"),
            "\(result.stdout)")
        #expect(result.stdout.contains("replaced by XDP enforcement"))
    }
}
