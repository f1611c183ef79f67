// SPDX-License-Identifier: Apache-2.0
import Glibc
import Logging
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import Synchronization
import XDPFirewall

/// A value compared as never equal: the settings of a component that reloads at every reload.
public struct Fresh<Value>: Equatable {
    public let value: Value

    public init(_ value: Value) { self.value = value }

    public static func == (lhs: Self, rhs: Self) -> Bool { false }
}

/// The daemon's log: `portcullisd: ...`, through swift-log's API (`ConsoleLogHandler`).
let serviceLogger = ConsoleLogHandler.logger("portcullisd")

/// Writes a line of the daemon's log: information on stdout, a problem as a warning on stderr.
func say(_ line: LogLine) {
    if line.isError {
        serviceLogger.warning("\(line.text)")
    } else {
        serviceLogger.info("\(line.text)")
    }
}

/// The daemon: the jails, their sources and workers over the firewall's maps. Made at the start
/// (its workers start later, in `WorkersComponent`, once the companions that take its first bans
/// run). A reload makes a new daemon while the old one runs (a configuration it refuses changes
/// nothing); it takes over the readers of the sources configured the same, then opens the others
/// once the old one has let go. A source that cannot be opened is degraded: its jails read nothing
/// from it until a reload opens it, and every other jail goes on.
public final class DaemonComponent: Component, @unchecked Sendable {
    public typealias Settings = Fresh<DaemonConfiguration>

    public let name = "daemon"
    /// A reload reopens the sources a previous one could not open, and keeps the counts of the
    /// jails configured the same: it always runs.
    public var reloadsUnchanged: Bool { true }
    private let firewall: FirewallComponent
    private let publishers: [BanPublisher]
    private let describe: (any Error) -> String
    private let running = Mutex<Daemon?>(nil)
    /// Told the daemon that runs after a reload replaced it.
    var replaced: ((Daemon) -> Void)?

    public init(firewall: FirewallComponent, publishers: [BanPublisher], describe: @escaping (any Error) -> String) {
        self.firewall = firewall
        self.publishers = publishers
        self.describe = describe
    }

    /// The daemon that runs now (nil before the start).
    public var daemon: Daemon? { running.withLock { $0 } }

    public func start(_ settings: Settings) throws -> [LogLine] {
        let maps = firewall.maps!
        // Origin slots no entry carries (jails removed, lists unloaded, CrowdSec origins and fleet
        // hosts gone) are freed before anything names slots again: a restart starts with room.
        let freed = try maps.recycleOriginSlots(keeping: Set(settings.value.effectiveJails.map(\.name)))
        let daemon = try Daemon(configuration: settings.value, maps: maps, publishers: publishers)
        running.withLock { $0 = daemon }
        guard !freed.isEmpty else { return [] }
        let shown = freed.prefix(5).joined(separator: ", ") + (freed.count > 5 ? ", ..." : "")
        return [LogLine("freed \(freed.count) origin slot(s) no entry carries any more: \(shown)")]
    }

    public func reload(_ settings: Settings) throws -> ReloadVerdict {
        guard let daemon, let maps = firewall.maps else { return .refused("portcullisd is starting") }
        let next: Daemon
        do {
            next = try Daemon(configuration: settings.value, maps: maps, publishers: daemon.publishers, keeping: daemon)
        } catch {
            return .refused(describe(error))
        }
        daemon.stop(handingOverTo: next)
        do {
            try next.start()
        } catch {
            // No source at all could be opened, or no thread started: nothing would read, and a
            // daemon that goes on running would keep its supervisor from acting.
            say(
                .error(
                    "SIGHUP: cannot run the new configuration (\(describe(error))): "
                        + "no jail reads; exiting so the service manager restarts portcullisd (bans in force stay)"))
            Glibc.exit(1)
        }
        running.withLock { $0 = next }
        replaced?(next)
        let outcome =
            "reloaded: \(next.jailNames.count) jail(s), counts kept in "
            + "\(next.keptJails.isEmpty ? "none" : next.keptJails.joined(separator: ", ")); "
            + "\(next.keptSources.count) of \(next.keptSources.count + next.openedSources) source(s) read on without a break; "
            + "resumed \(next.resumedBans) bans"
        let lines = next.jailDescriptions.map { LogLine($0) }
        guard next.degradedSources.isEmpty else {
            let degraded = next.degradedSources.map { "\($0.label) (\($0.reason))" }.joined(separator: "; ")
            return .degraded(outcome: outcome + "; DEGRADED, not read: " + degraded, lines: lines)
        }
        return .applied(outcome: outcome, lines: lines)
    }

    /// The workers stop in `WorkersComponent`; a daemon made but never started holds nothing.
    public func stop() {}

    /// The line `systemctl status portcullisd` shows once the daemon is ready (what is degraded
    /// follows it: `HealthWatch`).
    public var status: String? {
        guard let daemon else { return nil }
        return "protecting \(firewall.interfaces.joined(separator: ", ")) with \(daemon.jailNames.count) jail(s): "
            + daemon.jailNames.joined(separator: ", ")
    }
}

/// The daemon's workers: started once the companions that take its first bans run; stopped before
/// them, with the summary said (and written to `--summary-json`).
public final class WorkersComponent: Component {
    public let name = "workers"
    private let daemon: DaemonComponent
    private let firewall: FirewallComponent
    private let summaryJson: String?
    /// Told the daemon once its workers read.
    private let started: (Daemon) -> Void

    public init(
        daemon: DaemonComponent, firewall: FirewallComponent, summaryJson: String?,
        started: @escaping (Daemon) -> Void
    ) {
        self.daemon = daemon
        self.firewall = firewall
        self.summaryJson = summaryJson
        self.started = started
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] {
        guard let daemon = daemon.daemon else { return [] }
        try daemon.start()
        var lines = firewall.attachedLines
        lines.append(
            LogLine(
                "resumed \(daemon.resumedBans) bans; reading "
                    + "with \(daemon.status.workers.count) worker(s) for \(daemon.jailNames.count) jail(s)"))
        lines += daemon.jailDescriptions.map { LogLine($0) }
        lines += daemon.notes.map { LogLine("note: \($0)") }
        lines.append(LogLine("never banned: " + daemon.neverBanned.joined(separator: " ")))
        lines.append(
            LogLine("allowlisted in the driver (passes any ban): \(daemon.driverAllowlist.count) network(s)"))
        started(daemon)
        return lines
    }

    public func stop() {
        guard let daemon = daemon.daemon else { return }
        daemon.stop()
        let status = daemon.status
        for line in status.summaryLines() { say(LogLine(line)) }
        guard let summaryJson else { return }
        let cpuSeconds = Double(SystemClock.processCPUNanoseconds()) / 1e9
        do throws(Errno) {
            try JSONOutput.write(status.summary(cpuSeconds: cpuSeconds), to: summaryJson)
        } catch {
            say(.error("cannot write the summary to \(summaryJson): \(error)"))
        }
    }

    /// A later component failed to start: the workers stop, without a summary.
    public func rollBack() {
        daemon.daemon?.stop()
    }
}

/// `--ready-file`: what the daemon runs on, for scripts that wait for it (written again after each
/// reload that made a new daemon).
final class ReadyFile: @unchecked Sendable {
    struct Ready: Encodable {
        /// The first interface (as before several could be given).
        let interface: String
        let interfaces: [String]
        let mode: String
        let newlyAttached: Bool
        let pinDirectory: String
        var resumedBans: Int
        let transport: String
        let workers: Int
        var jails: [String]
        let pid: Int
        /// Reloads done (with a configuration that was taken).
        var reloads: Int
        /// The metrics URL (with the port picked for port 0), if served.
        let metrics: String?

        enum CodingKeys: String, CodingKey {
            case interface, interfaces, mode, newlyAttached = "newly_attached", pinDirectory = "pin_directory"
            case resumedBans = "resumed_bans", transport, workers, jails, pid, reloads, metrics
        }
    }

    let path: String?
    private let ready = Mutex<Ready?>(nil)

    init(path: String?) { self.path = path }

    /// The daemon runs: the file written.
    func started(_ daemon: Daemon, firewall: FirewallComponent, transport: String, metrics: String?) {
        guard path != nil, let first = firewall.outcomes.first else { return }
        let written = Ready(
            interface: firewall.interfaces[0], interfaces: firewall.interfaces, mode: first.outcome.mode.rawValue,
            newlyAttached: first.outcome.newlyAttached, pinDirectory: firewall.pins.path,
            resumedBans: daemon.resumedBans, transport: transport, workers: daemon.status.workers.count,
            jails: daemon.configuration.effectiveJails.map(\.name), pid: Int(getpid()), reloads: 0, metrics: metrics)
        ready.withLock { $0 = written }
        write(written)
    }

    /// A reload made `daemon`: scripts that wait for a reload see it in the file.
    func reloaded(_ daemon: Daemon) {
        guard
            let updated = ready.withLock({ ready -> Ready? in
                ready?.jails = daemon.jailNames
                ready?.resumedBans = daemon.resumedBans
                ready?.reloads += 1
                return ready
            })
        else { return }
        write(updated)
    }

    private func write(_ ready: Ready) {
        guard let path else { return }
        do throws(Errno) {
            try JSONOutput.write(ready, to: path)
        } catch {
            say(.error("cannot write the ready file \(path): \(error)"))
        }
    }
}
