// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
@testable import PortcullisService
import Synchronization
import PortcullisSystem
import Testing

/// What the fake components and the notifier did, in order.
private final class Journal: Sendable {
    private let entries = Mutex<[String]>([])

    func note(_ entry: String) { entries.withLock { $0.append(entry) } }
    var all: [String] { entries.withLock { $0 } }
    func clear() { entries.withLock { $0 = [] } }
}

private struct Failure: Error, CustomStringConvertible {
    let description: String
}

/// A configuration: two settings only a restart applies, and a setting per component.
private struct FakeConfiguration: ServiceConfiguration {
    struct RestartOnly: Equatable {
        var pinDir = "/sys/fs/bpf/portcullis"
        var mapEntries: UInt32 = 0
    }

    var restart = RestartOnly()
    var settings: [String: Int] = [:]
    var restartOnly: RestartOnly { restart }
}

/// A component that notes what it is asked, and fails or refuses when told to.
private final class FakeComponent: Component, @unchecked Sendable {
    typealias Settings = Int

    let name: String
    let journal: Journal
    var failsToStart = false
    var failsToReload = false
    var refusesReload = false
    var applied: Int?

    init(_ name: String, journal: Journal) {
        self.name = name
        self.journal = journal
    }

    func start(_ settings: Int) throws -> [LogLine] {
        guard !failsToStart else { throw Failure(description: "\(name) cannot start") }
        journal.note("start \(name) \(settings)")
        applied = settings
        return [LogLine("\(name) started")]
    }

    func reload(_ settings: Int) throws -> ReloadVerdict {
        journal.note("reload \(name) \(settings)")
        if failsToReload { throw Failure(description: "its server is gone") }
        if refusesReload { return .refused("\(name) refuses \(settings)") }
        applied = settings
        return .applied(outcome: name == "daemon" ? "reloaded: \(settings)" : nil, lines: [])
    }

    func stop() { journal.note("stop \(name)") }
    func rollBack() { journal.note("roll back \(name)") }
    func metrics() -> [MetricSample] { [.gauge("fake_\(name)", "A fake.", [], Double(applied ?? -1))] }
}

/// A supervisor of `names` (in that start order), its log and notifier written to `journal`.
private func supervisor(
    _ names: [String], journal: Journal
) -> (Supervisor<FakeConfiguration>, [String: FakeComponent]) {
    let notifier = ServiceNotifier(
        ready: { journal.note("READY \($0)") }, reloading: { journal.note("RELOADING") },
        stopping: { journal.note("STOPPING") }, keepAlive: {}, watchdogInterval: nil)
    let supervisor = Supervisor<FakeConfiguration>(notifier: notifier) { journal.note("log \($0.text)") }
    var components: [String: FakeComponent] = [:]
    for name in names {
        let component = FakeComponent(name, journal: journal)
        components[name] = component
        supervisor.add(component) { $0.settings[name] ?? 0 }
    }
    return (supervisor, components)
}

private let started = FakeConfiguration(settings: ["daemon": 1, "fleet": 1, "bouncer": 1])

@Suite("Supervisor")
struct SupervisorTests {
    @Test("starts the components in order, says READY after the last, and stops them in reverse")
    func startAndStopOrder() throws {
        let journal = Journal()
        let (supervisor, _) = supervisor(["daemon", "fleet", "bouncer"], journal: journal)
        try supervisor.start(started)
        supervisor.stop()
        #expect(
            journal.all == [
                "start daemon 1", "log daemon started", "start fleet 1", "log fleet started", "start bouncer 1",
                "log bouncer started", "READY ", "stop bouncer", "stop fleet", "stop daemon",
            ])
    }

    @Test("a component that fails to start rolls back those started before it, in reverse, and the error is thrown")
    func rollbackOfAFailedStart() {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet", "bouncer", "watch"], journal: journal)
        components["bouncer"]!.failsToStart = true
        #expect(throws: Failure.self) { try supervisor.start(started) }
        #expect(
            journal.all == [
                "start daemon 1", "log daemon started", "start fleet 1", "log fleet started", "roll back fleet",
                "roll back daemon",
            ])
        // Nothing runs: a stop stops nothing.
        journal.clear()
        supervisor.stop()
        #expect(journal.all.isEmpty)
    }

    @Test("a reload that changes a restart-only setting is refused, naming it, and nothing is reloaded")
    func restartOnlyChangeRefused() throws {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet"], journal: journal)
        try supervisor.start(started)
        journal.clear()
        var changed = started
        changed.restart.pinDir = "/sys/fs/bpf/other"
        changed.settings["fleet"] = 2
        let outcome = supervisor.reload { changed }
        #expect(outcome.kind == .refused)
        #expect(
            outcome.text
                == "configuration refused, the running one stays: pin-dir changed (/sys/fs/bpf/portcullis → "
                + "/sys/fs/bpf/other): restart to apply it")
        #expect(!journal.all.contains { $0.hasPrefix("reload") }, "\(journal.all)")
        #expect(components["fleet"]!.applied == 1)
        #expect(supervisor.reloadCounts.done == 0 && supervisor.reloadCounts.refused == 1)
        // A configuration that cannot be read is refused the same way.
        let unreadable = supervisor.reload { throw Failure(description: "file.toml:3: bad value") }
        #expect(
            unreadable
                == ReloadOutcome(.refused, "configuration refused, the running one stays: file.toml:3: bad value"))
        #expect(journal.all.filter { $0 == "RELOADING" }.count == 2)
        #expect(journal.all.last == "READY ")
    }

    @Test("a reload is a diff: only the components whose settings changed are reloaded, in start order")
    func reloadAsADiff() throws {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet", "bouncer"], journal: journal)
        try supervisor.start(started)
        journal.clear()
        var changed = started
        changed.settings["daemon"] = 2
        changed.settings["bouncer"] = 3
        let outcome = supervisor.reload { changed }
        #expect(outcome == ReloadOutcome(.applied, "reloaded: 2"))
        #expect(journal.all.filter { $0.hasPrefix("reload") } == ["reload daemon 2", "reload bouncer 3"])
        #expect(components["fleet"]!.applied == 1 && components["bouncer"]!.applied == 3)
        #expect(supervisor.metrics().map(\.value) == [2, 1, 3])
        // The same configuration again: nothing changed, nothing reloaded.
        journal.clear()
        #expect(supervisor.reload { changed } == ReloadOutcome(.applied, "reloaded"))
        #expect(!journal.all.contains { $0.hasPrefix("reload") })
        #expect(supervisor.reloadCounts.done == 2 && supervisor.reloadCounts.refused == 0)
    }

    @Test("a component's failed reload makes the outcome DEGRADED; the others are reloaded")
    func failedReloadIsDegraded() throws {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet", "bouncer"], journal: journal)
        try supervisor.start(started)
        components["fleet"]!.failsToReload = true
        let changed = FakeConfiguration(settings: ["daemon": 2, "fleet": 2, "bouncer": 2])
        let outcome = supervisor.reload { changed }
        #expect(outcome == ReloadOutcome(.degraded, "reloaded: 2; DEGRADED: fleet not reloaded: its server is gone"))
        #expect(journal.all.contains("log SIGHUP: fleet not reloaded: its server is gone"))
        #expect(components["bouncer"]!.applied == 2 && components["fleet"]!.applied == 1)
    }

    @Test("the first component to refuse a reload refuses it whole: it and those after it keep what they run")
    func refusedReloadKeepsTheRunningConfiguration() throws {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet"], journal: journal)
        try supervisor.start(started)
        components["daemon"]!.refusesReload = true
        let changed = FakeConfiguration(settings: ["daemon": 2, "fleet": 2])
        #expect(
            supervisor.reload { changed }
                == ReloadOutcome(.refused, "configuration refused, the running one stays: daemon refuses 2"))
        #expect(components["daemon"]!.applied == 1 && components["fleet"]!.applied == 1)
        // Once it takes it, the diff is against what each runs: both are reloaded.
        components["daemon"]!.refusesReload = false
        journal.clear()
        #expect(supervisor.reload { changed }.kind == .applied)
        #expect(journal.all.filter { $0.hasPrefix("reload") } == ["reload daemon 2", "reload fleet 2"])
    }

    @Test("a refusal after a component took the new settings is DEGRADED, naming it; those after it keep theirs")
    func laterRefusalIsDegraded() throws {
        let journal = Journal()
        let (supervisor, components) = supervisor(["daemon", "fleet", "bouncer"], journal: journal)
        try supervisor.start(started)
        components["fleet"]!.refusesReload = true
        let changed = FakeConfiguration(settings: ["daemon": 2, "fleet": 2, "bouncer": 2])
        let outcome = supervisor.reload { changed }
        #expect(outcome == ReloadOutcome(.degraded, "reloaded: 2; DEGRADED: fleet not reloaded: fleet refuses 2"))
        #expect(components["daemon"]!.applied == 2 && components["fleet"]!.applied == 1)
        #expect(components["bouncer"]!.applied == 1)
    }

    @Test(
        "a reload requested from another thread is answered with its outcome; a stop stops in reverse and answers later requests with none"
    )
    func requestedReloadAnswered() throws {
        let journal = Journal()
        let (supervisor, _) = supervisor(["daemon", "fleet"], journal: journal)
        try supervisor.start(started)
        let events = ServiceEvents()
        let next = FakeConfiguration(settings: ["daemon": 5, "fleet": 1])
        let runner = try SystemThread.spawn { supervisor.run(events: events, load: { next }) }
        let (answered, outcome) = events.reload(waitingSeconds: 60)
        #expect(answered && outcome == ReloadOutcome(.applied, "reloaded: 5"))
        events.post(.stop)
        runner.join()
        #expect(Array(journal.all.suffix(3)) == ["STOPPING", "stop fleet", "stop daemon"])
        let late = events.reload(waitingSeconds: 60)
        #expect(late.answered && late.outcome == nil)
    }

    @Test("a changed restart-only setting is named as its flag, with both values")
    func settingChangeNamesTheFlag() {
        struct Settings: Equatable {
            var interface = ["eth0"]
            var prefixLengthsV4 = ""
            var statusInterval = 0.0
        }
        var changed = Settings()
        changed.prefixLengthsV4 = "24,16"
        #expect(SettingChange(Settings(), changed)?.description == "prefix-lengths-v4 changed ( → 24,16)")
        changed = Settings()
        changed.interface = ["eth0", "eth1"]
        #expect(SettingChange(Settings(), changed)?.description == "interface changed (eth0 → eth0 eth1)")
        #expect(SettingChange(Settings(), Settings()) == nil)
    }
}
