// SPDX-License-Identifier: Apache-2.0
import PortcullisControl
import PortcullisCore
@testable import PortcullisService
import PortcullisSystem
import Synchronization
import Testing

/// The lines a `Health` said.
private final class Said: Sendable {
    private let lines = Mutex<[LogLine]>([])
    func note(_ line: LogLine) { lines.withLock { $0.append(line) } }
    var all: [LogLine] { lines.withLock { $0 } }
    func clear() { lines.withLock { $0 = [] } }
}

@Suite("Health")
struct HealthTests {
    @Test("a problem is said when it appears, again at each interval naming how long, and once when it clears")
    func problemLifecycle() {
        let said = Said()
        let health = Health(warningInterval: 60) { said.note($0) }
        #expect(!health.isDegraded && health.statusLine == nil && health.repeatWarnings(now: 0) == nil)
        let detached = HealthProblem.Kind.filterDetached(interface: "eth0")
        health.report([(detached, "the filter is no longer attached to eth0")], from: "watch", now: 100)
        #expect(said.all == [.error("DEGRADED: the filter is no longer attached to eth0")])
        #expect(health.statusLine == "DEGRADED: filter detached from eth0 (bans NOT enforced)")
        #expect(health.problems.map(\.since) == [100])
        said.clear()

        // Reported again at each check: said once, its start kept.
        health.report([(detached, "the filter is no longer attached to eth0")], from: "watch", now: 102)
        #expect(said.all.isEmpty)
        #expect(health.repeatWarnings(now: 159) == 160, "not due before its interval")
        #expect(said.all.isEmpty)
        #expect(health.repeatWarnings(now: 160) == 220)
        #expect(said.all == [.error("still DEGRADED after 60 s: the filter is no longer attached to eth0")])
        said.clear()
        #expect(health.repeatWarnings(now: 400) == 460)
        #expect(said.all == [.error("still DEGRADED after 5 min: the filter is no longer attached to eth0")])
        said.clear()

        health.report([], from: "watch", now: 401)
        #expect(said.all == [LogLine("no longer degraded after 5 min: filter detached from eth0 (bans NOT enforced)")])
        #expect(!health.isDegraded && health.statusLine == nil && health.repeatWarnings(now: 500) == nil)
    }

    @Test("a report replaces only its own reporter's problems; each keeps when it began; states for status")
    func reportersApart() {
        let said = Said()
        let health = Health(warningInterval: 10) { said.note($0) }
        let source = HealthProblem.Kind.sourceUnreadable(label: "file:/var/log/a")
        let companion = HealthProblem.Kind.companionDown(name: "crowdsec")
        health.report([(source, "source file:/var/log/a cannot be read")], from: "sources", now: 0)
        health.report([(companion, "crowdsec cannot reach its server: refused")], from: "companions", now: 5)
        health.report([], from: "watch", now: 6)
        #expect(health.problems.map(\.kind) == [source, companion])
        #expect(health.statusLine == "DEGRADED: source file:/var/log/a not read; crowdsec not reached")
        // The text follows the last report; the start stays.
        health.report([(companion, "crowdsec cannot reach its server: timed out")], from: "companions", now: 8)
        let states = health.states(now: 9)
        #expect(
            states == [
                ProblemState(
                    kind: "source_unreadable", subject: "file:/var/log/a",
                    text: "source file:/var/log/a cannot be read",
                    seconds: 9),
                ProblemState(
                    kind: "companion_down", subject: "crowdsec", text: "crowdsec cannot reach its server: timed out",
                    seconds: 4),
            ])
        // Both are repeated when due, the nearest due returned.
        said.clear()
        #expect(health.repeatWarnings(now: 10) == 15)
        #expect(said.all.count == 1)
        health.report([], from: "sources", now: 11)
        #expect(health.problems.map(\.kind) == [companion])
        #expect(health.repeatWarnings(now: 11) == 15)
    }

    @Test("durations read as seconds, minutes, then hours and minutes")
    func durations() {
        #expect(Health.duration(0) == "0 s")
        #expect(Health.duration(119.4) == "119 s")
        #expect(Health.duration(120) == "2 min")
        #expect(Health.duration(7199) == "119 min")
        #expect(Health.duration(7200 + 5 * 60) == "2 h 5 min")
    }
}

/// A configuration with nothing in it.
private struct NoConfiguration: ServiceConfiguration {
    var restartOnly: Int { 0 }
}

/// A component whose status line a test sets, ticked often.
private final class StatusComponent: Component, Sendable {
    let name: String
    private let line: Mutex<String?>

    init(_ name: String, status: String?) {
        self.name = name
        line = Mutex(status)
    }

    func start(_ settings: NoSettings) throws -> [LogLine] { [] }
    func stop() {}
    func tick(now: Double) -> Double? { now + 0.01 }
    func set(_ status: String?) { line.withLock { $0 = status } }
    var status: String? { line.withLock { $0 } }
}

@Suite("Service manager's status line")
struct StatusLineTests {
    @Test("made of the components' statuses in start order, and told again whenever it changes")
    func toldOnChange() throws {
        let told = Mutex<[String]>([])
        let notifier = ServiceNotifier(
            ready: { status in told.withLock { $0.append("READY \(status)") } }, reloading: {}, stopping: {},
            keepAlive: {}, watchdogInterval: nil, status: { status in told.withLock { $0.append("STATUS \(status)") } })
        let supervisor = Supervisor<NoConfiguration>(notifier: notifier) { _ in }
        let daemon = StatusComponent("daemon", status: "protecting eth0 with 1 jail(s): sshd")
        let health = StatusComponent("health", status: nil)
        supervisor.add(daemon)
        supervisor.add(health)
        try supervisor.start(NoConfiguration())
        let events = ServiceEvents()
        let runner = try SystemThread.spawn { supervisor.run(events: events, load: { NoConfiguration() }) }
        func waitUntilTold(_ entry: String) -> Bool {
            let deadline = SystemClock.monotonicSeconds() + 30
            while SystemClock.monotonicSeconds() < deadline {
                if told.withLock({ $0.last == entry }) { return true }
                SystemClock.sleep(nanoseconds: 5_000_000)
            }
            return false
        }
        health.set("DEGRADED: filter detached from eth0 (bans NOT enforced)")
        #expect(
            waitUntilTold(
                "STATUS protecting eth0 with 1 jail(s): sshd; DEGRADED: filter detached from eth0 (bans NOT enforced)"))
        health.set(nil)
        #expect(waitUntilTold("STATUS protecting eth0 with 1 jail(s): sshd"))
        events.post(.stop)
        runner.join()
        // Told once per change, not at every tick.
        #expect(
            told.withLock { $0 } == [
                "READY protecting eth0 with 1 jail(s): sshd",
                "STATUS protecting eth0 with 1 jail(s): sshd; DEGRADED: filter detached from eth0 (bans NOT enforced)",
                "STATUS protecting eth0 with 1 jail(s): sshd",
            ])
    }
}
