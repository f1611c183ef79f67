// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisSystem
import Testing

@testable import PortcullisCrowdSec

/// The alerts kept in the state directory between two pushers, and the overflow's log lines.
@Suite("CrowdSec kept alerts")
struct KeptAlertsTests {
    @Test("a UTC time's seconds since the epoch are those it was made from")
    func epochSeconds() {
        for seconds in [0, 59, 86_399, 86_400, 951_782_400, 1_796_175_453, 4_102_444_800, -1, -86_401] {
            #expect(UTCTime(secondsSinceEpoch: seconds).epochSeconds == seconds, "\(seconds)")
        }
    }

    @Test(
        "kept alerts come back in order, those whose ban ended dropped and counted, at most the queue's limit; the file goes"
    )
    func roundTrip() throws {
        let path = NSTemporaryDirectory() + "pc-kept-\(getpid())/crowdsec-alerts.json"
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        let kept = KeptAlerts(path: path)
        let now = 1_796_175_453
        let alerts = [
            AlertPusher.Alert(
                jail: "sshd", target: "198.18.0.7", isRange: false, seconds: 600,
                at: UTCTime(secondsSinceEpoch: now - 100)),
            // Edited by hand: a time no daemon wrote.
            AlertPusher.Alert(
                jail: "sshd", target: "198.18.0.6", isRange: false, seconds: 600,
                at: UTCTime(secondsSinceEpoch: now + 10 * 86_400)),
            AlertPusher.Alert(
                jail: "sshd", target: "198.18.0.8", isRange: false, seconds: 600,
                at: UTCTime(secondsSinceEpoch: now - 700)),
            AlertPusher.Alert(
                jail: "web", target: "2001:2::/64", isRange: true, seconds: 0, at: UTCTime(secondsSinceEpoch: 0)),
            AlertPusher.Alert(
                jail: "web", target: "198.18.0.9", isRange: false, seconds: 60, at: UTCTime(secondsSinceEpoch: now)),
        ]
        try kept.write(alerts)
        let read = kept.read(limit: 4, now: now)
        #expect(read.alerts.map(\.target) == ["198.18.0.7", "2001:2::/64"])
        #expect(read.alerts.map(\.isRange) == [false, true] && read.alerts.map(\.seconds) == [600, 0])
        #expect(read.alerts[0].at == UTCTime(secondsSinceEpoch: now - 100) && read.alerts[1].jail == "web")
        #expect(read.ended == 1)
        #expect(
            read.lines == [
                "2 alert(s) kept at the last stop queued again, 1 dropped (their bans have ended), "
                    + "1 dropped (over alert_queue), 1 dropped (no time this daemon writes)"
            ])
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(kept.read(limit: 3, now: now).lines.isEmpty, "no file, nothing to say")

        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        let bad = kept.read(limit: 3, now: now)
        #expect(bad.alerts.isEmpty && bad.lines.first?.contains("is not a file this daemon wrote") == true)
        #expect(FileManager.default.fileExists(atPath: path + ".bad"))
    }

    @Test(
        "overflow: the first drop said at once, then at most a line a minute with the drops since; a stop says the rest"
    )
    func overflowLines() {
        var log = OverflowLog()
        let first = log.dropped(1, now: 100, limit: 2, url: "http://l/")
        #expect(first?.hasPrefix("the alert queue is full (alert_queue = 2;") == true)
        #expect(first?.contains("1 alert(s) dropped, 1 since the start") == true)
        #expect(log.dropped(2, now: 110, limit: 2, url: "http://l/") == nil, "within the minute: counted, not said")
        #expect(log.due(now: 150) == nil)
        #expect(log.due(now: 160) == "the alert queue is still full: 2 more alert(s) dropped, 3 since the start")
        #expect(log.due(now: 300) == nil, "nothing new")
        #expect(log.dropped(4, now: 170, limit: 2, url: "http://l/") == nil)
        #expect(log.due(now: 171, force: true)?.contains("4 more alert(s) dropped, 7 since the start") == true)
        #expect(log.dropped(1, now: 300, limit: 2, url: "http://l/")?.contains("1 more alert(s) dropped") == true)
    }

    /// A pusher of a Local API nobody listens on (never started: its queue only fills).
    func pusher(_ keptPath: String?, queue: Int = 10) throws -> AlertPusher {
        var settings = AlertSettings(
            connection: LAPIConnectionSettings(url: "http://127.0.0.1:9/"), login: "m", password: "p")
        settings.queueLimit = queue
        return try AlertPusher(
            settings: settings, jails: { _ in nil }, keptPath: keptPath,
            logger: ConsoleLogHandler.logger("test"))
    }

    func ban(_ addresses: [String]) -> BanEvent {
        BanEvent(
            kind: .ban, origin: .filter, addresses: addresses.map { IPAddress($0)! },
            monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: "app",
            seconds: addresses.map { _ in 600 }, prefixLengths: addresses.map { _ in 32 })
    }

    @Test(
        "a stopped pusher keeps its queue for the next one; when it cannot, the loss is said with the count and counted"
    )
    func pusherKeepsOrSaysTheLoss() throws {
        let directory = NSTemporaryDirectory() + "pc-kept-pusher-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // The state directory itself is made by the pusher when missing.
        let path = directory + "/state/crowdsec-alerts.json"
        let first = try pusher(path, queue: 2)
        first.publish(ban(["198.18.0.1", "198.18.0.2", "198.18.0.3"]))
        #expect(first.snapshot.queued == 2 && first.snapshot.dropped["queue_full"] == 1)
        #expect(first.stopAndJoin() == ["2 queued alert(s) kept in \(path) for the next start"])
        #expect(first.snapshot.dropped["stopping"] == nil)
        let second = try pusher(path)
        #expect(second.restoreKept() == ["2 alert(s) kept at the last stop queued again"])
        #expect(second.snapshot.queued == 2 && !FileManager.default.fileExists(atPath: path))

        let nowhere = try pusher(nil)
        nowhere.publish(ban(["198.18.0.4"]))
        #expect(nowhere.stopAndJoin() == ["1 queued alert(s) lost: no state directory to keep them in"])
        #expect(nowhere.snapshot.dropped["stopping"] == 1)
        // A state directory that cannot be written (a file stands where it should be).
        FileManager.default.createFile(atPath: directory + "/file", contents: nil)
        let unwritable = try pusher(directory + "/file/crowdsec-alerts.json")
        unwritable.publish(ban(["198.18.0.5"]))
        let lines = unwritable.stopAndJoin()
        #expect(
            lines.count == 1 && lines[0].hasPrefix("1 queued alert(s) lost: cannot write \(directory)/file/"),
            "\(lines)")
        #expect(unwritable.snapshot.dropped["stopping"] == 1)
    }
}
