// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import PortcullisSystem
import Synchronization

/// A configuration the supervisor runs: what each component's settings are projected from, and the
/// settings only a restart applies (`restartOnly`: compared whole at a reload, a change refuses it).
public protocol ServiceConfiguration {
    associatedtype RestartOnly: Equatable
    var restartOnly: RestartOnly { get }
}

/// What the supervisor tells the service manager: systemd's sd_notify, or a test's record.
public struct ServiceNotifier: Sendable {
    public var ready: @Sendable (_ status: String) -> Void
    public var reloading: @Sendable () -> Void
    public var stopping: @Sendable () -> Void
    public var keepAlive: @Sendable () -> Void
    /// The status line changed while the service runs (`STATUS=`).
    public var status: @Sendable (_ status: String) -> Void
    /// systemd's `WatchdogSec=`, in seconds: the supervisor's loop feeds it at least twice as often.
    public var watchdogInterval: Double?

    public init(
        ready: @escaping @Sendable (String) -> Void, reloading: @escaping @Sendable () -> Void,
        stopping: @escaping @Sendable () -> Void, keepAlive: @escaping @Sendable () -> Void,
        watchdogInterval: Double?, status: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.status = status
        self.ready = ready
        self.reloading = reloading
        self.stopping = stopping
        self.keepAlive = keepAlive
        self.watchdogInterval = watchdogInterval
    }

    /// `Type=notify` under systemd; nothing without `$NOTIFY_SOCKET`.
    public static var systemd: ServiceNotifier {
        ServiceNotifier(
            ready: { ServiceManager.ready(status: $0) }, reloading: { ServiceManager.reloading() },
            stopping: { ServiceManager.stopping() }, keepAlive: { ServiceManager.keepAlive() },
            watchdogInterval: ServiceManager.watchdogInterval, status: { ServiceManager.status($0) })
    }
}

/// Runs the service's components, in the shape of swift-service-lifecycle's `ServiceGroup` but on
/// the calling thread (the components' own threads are pinned system threads, not tasks): starts
/// them in the order they were added, rolls back a failed start (what started is stopped, in
/// reverse), applies a reload as one diff of the configuration, ticks them, and stops them in
/// reverse. Signals and control-socket reloads reach it as `ServiceEvents`.
public final class Supervisor<Configuration: ServiceConfiguration>: @unchecked Sendable {
    private struct Entry {
        let name: String
        let start: (Configuration) throws -> [LogLine]
        /// nil: the component's settings did not change, it was not asked.
        let reload: (Configuration) throws -> ReloadVerdict?
        let stop: () -> Void
        let rollBack: () -> Void
        let tick: (Double) -> Double?
        let metrics: () -> [MetricSample]
        let status: () -> String?
    }

    private var entries: [Entry] = []
    /// `entries[..<started]` run.
    private var started = 0
    private var restartOnly: Configuration.RestartOnly?
    private let log: (LogLine) -> Void
    private let notifier: ServiceNotifier
    private let describe: (any Error) -> String
    /// The status line the service manager was last told.
    private var toldStatus: String?
    /// Reloads done (degraded ones too) and refused: read by a metrics scrape on its own thread.
    private let counts = Mutex<(reloads: Int, refused: Int)>((0, 0))

    /// - Parameters:
    ///   - log: writes a line (with the program's prefix).
    ///   - describe: an error in one line, for the log and a reload's answer.
    public init(
        notifier: ServiceNotifier = .systemd, describe: @escaping (any Error) -> String = { "\($0)" },
        log: @escaping (LogLine) -> Void
    ) {
        self.notifier = notifier
        self.describe = describe
        self.log = log
    }

    /// Adds `component`, started after those added before it, with the settings `settings` projects
    /// out of the configuration.
    public func add<C: Component>(_ component: C, settings: @escaping (Configuration) -> C.Settings) {
        // What the component runs on: a reload that it refuses keeps it.
        let running = Box<C.Settings?>(nil)
        entries.append(
            Entry(
                name: component.name,
                start: { configuration in
                    let settings = settings(configuration)
                    let lines = try component.start(settings)
                    running.value = settings
                    return lines
                },
                reload: { configuration in
                    let next = settings(configuration)
                    guard next != running.value || component.reloadsUnchanged else { return nil }
                    let verdict = try component.reload(next)
                    if case .refused = verdict { return verdict }
                    running.value = next
                    return verdict
                },
                stop: { component.stop() }, rollBack: { component.rollBack() },
                tick: { component.tick(now: $0) }, metrics: { component.metrics() },
                status: { component.status }))
    }

    /// Adds `component`, whose settings a reload never changes, after those added before it.
    public func add<C: Component>(_ component: C) where C.Settings == NoSettings {
        add(component) { _ in NoSettings() }
    }

    /// The components' names, in start order.
    public var names: [String] { entries.map(\.name) }

    /// Starts every component in order, then tells the service manager it is ready (with the
    /// status). - Throws: the first failure, once the components started before it are rolled back
    /// in reverse.
    public func start(_ configuration: Configuration) throws {
        precondition(started == 0, "started twice")
        for entry in entries {
            let lines: [LogLine]
            do {
                lines = try entry.start(configuration)
            } catch {
                while started > 0 {
                    started -= 1
                    entries[started].rollBack()
                }
                throw error
            }
            for line in lines { log(line) }
            started += 1
        }
        restartOnly = configuration.restartOnly
        toldStatus = status
        notifier.ready(toldStatus!)
    }

    /// Stops the components that run, in reverse order.
    public func stop() {
        while started > 0 {
            started -= 1
            entries[started].stop()
        }
    }

    /// The service manager's status line: what the running components say, in start order (the
    /// daemon's "protecting ...", then the health's "DEGRADED: ..." when something is wrong). The
    /// one place it is made: at the start, after a reload, and whenever it changes.
    public var status: String {
        entries[..<started].compactMap { $0.status() }.joined(separator: "; ")
    }

    /// Every component's metrics (one that does not run has none), read on a scrape's thread:
    /// the components are all added before the start.
    public func metrics() -> [MetricSample] {
        entries.flatMap { $0.metrics() }
    }

    /// Reloads done (`DEGRADED` ones too) and refused since the start.
    public var reloadCounts: (done: Int, refused: Int) {
        counts.withLock { ($0.reloads, $0.refused) }
    }

    /// Reads the configuration with `load` and applies it as one diff: a change of the restart-only
    /// settings refuses it (naming the setting) and changes nothing; otherwise each component whose
    /// settings changed is reloaded, in start order. A component that refuses keeps what it runs on,
    /// and so do those after it; one whose reload fails is reported as `DEGRADED`.
    public func reload(_ load: () throws -> Configuration) -> ReloadOutcome {
        notifier.reloading()
        let outcome = applyReload(load)
        counts.withLock {
            if outcome.kind == .refused { $0.refused += 1 } else { $0.reloads += 1 }
        }
        toldStatus = status
        notifier.ready(toldStatus!)
        return outcome
    }

    private func applyReload(_ load: () throws -> Configuration) -> ReloadOutcome {
        func refuse(_ reason: String) -> ReloadOutcome {
            let text = "configuration refused, the running one stays: " + reason
            log(.error("SIGHUP: " + text))
            return ReloadOutcome(.refused, text)
        }
        guard let running = restartOnly else { return refuse("the service is not running") }
        let next: Configuration
        do {
            next = try load()
        } catch {
            return refuse(describe(error))
        }
        if let change = SettingChange(running, next.restartOnly) { return refuse("\(change): restart to apply it") }
        var outcome: String?
        var changed = false
        var isDegraded = false
        var failures: [String] = []
        reloading: for entry in entries[..<started] {
            let verdict: ReloadVerdict?
            do {
                verdict = try entry.reload(next)
            } catch {
                failures.append("\(entry.name) not reloaded: \(describe(error))")
                log(.error("SIGHUP: " + failures.last!))
                continue
            }
            switch verdict {
            case nil:
                continue
            case .refused(let reason):
                // Nothing changed yet: the whole reload is refused.
                guard changed || !failures.isEmpty else { return refuse(reason) }
                failures.append("\(entry.name) not reloaded: \(reason)")
                log(.error("SIGHUP: " + failures.last!))
                break reloading
            case .applied(let said, let lines):
                if let said {
                    if outcome == nil { outcome = said }
                    log(LogLine("SIGHUP: " + said))
                }
                for line in lines { log(line) }
            case .degraded(let said, let lines):
                isDegraded = true
                if outcome == nil { outcome = said } else { failures.append(said) }
                log(.error("SIGHUP: " + said))
                for line in lines { log(line) }
            }
            changed = true
        }
        let text =
            (outcome ?? "reloaded") + (failures.isEmpty ? "" : "; DEGRADED: " + failures.joined(separator: "; "))
        return ReloadOutcome(isDegraded || !failures.isEmpty ? .degraded : .applied, text)
    }

    /// Ticks the components (each when it asked) and takes the events until a stop, then stops the
    /// components in reverse. A reload (SIGHUP or a request) is answered with its outcome.
    /// - Parameter load: reads the configuration again, for a reload.
    public func run(
        events: ServiceEvents, load: () throws -> Configuration,
        clock: () -> Double = { SystemClock.monotonicSeconds() }
    ) {
        let now = clock()
        var due: [Double?] = entries[..<started].map { $0.tick(now) }
        while true {
            if notifier.watchdogInterval != nil { notifier.keepAlive() }
            var wait = 2.0
            let now = clock()
            for next in due.compactMap({ $0 }) { wait = min(wait, next - now) }
            if let watchdog = notifier.watchdogInterval { wait = min(wait, watchdog / 2) }
            switch events.next(waitingSeconds: max(wait, 0)) {
            case .stop:
                notifier.stopping()
                events.close()
                stop()
                return
            case .reload(let request):
                let outcome = reload(load)
                // Every component looks again at once (a source the reload could not open is in
                // the health the answer's asker may read next), before the answer.
                let ticked = clock()
                for index in due.indices { due[index] = entries[index].tick(ticked) }
                tellStatusChange()
                request?.answer(outcome)
                continue
            case nil:
                break
            }
            let ticked = clock()
            for index in due.indices where (due[index] ?? .infinity) <= ticked {
                due[index] = entries[index].tick(ticked)
            }
            tellStatusChange()
        }
    }

    /// Tells the service manager the status line when it changed since it was last told.
    private func tellStatusChange() {
        let now = status
        guard now != toldStatus else { return }
        toldStatus = now
        notifier.status(now)
    }
}

/// A value shared by the closures of one supervised component.
final class Box<Value> {
    var value: Value
    init(_ value: Value) { self.value = value }
}
