// SPDX-License-Identifier: Apache-2.0
import PortcullisControl
import PortcullisCore
import Synchronization

/// One thing that keeps portcullisd from doing all it is configured to do, for as long as it lasts.
public struct HealthProblem: Sendable, Equatable {
    public enum Kind: Hashable, Sendable {
        /// No filter on the interface: bans written into the maps drop nothing there.
        case filterDetached(interface: String)
        /// As `filterDetached`, done by `portcullis detach` through the daemon: never re-attached by it.
        case detachedByOperator(interface: String)
        /// The filter on the interface reads other maps (another pin directory, another program).
        case otherMaps(interface: String)
        /// The maps' pins are not where other commands and the next start look for them.
        case pinsMissing
        /// A source a reload could not open: its jails read nothing from it.
        case sourceUnreadable(label: String)
        /// A companion (CrowdSec's bouncer or alerts, the fleet) cannot reach its server.
        case companionDown(name: String)

        /// The kind's name in `portcullis status --json`.
        public var name: String {
            switch self {
            case .filterDetached: "filter_detached"
            case .detachedByOperator: "detached_by_operator"
            case .otherMaps: "other_maps"
            case .pinsMissing: "pins_missing"
            case .sourceUnreadable: "source_unreadable"
            case .companionDown: "companion_down"
            }
        }

        /// What it is about (an interface, a source, a companion); nil for the pins.
        public var subject: String? {
            switch self {
            case .filterDetached(let interface), .detachedByOperator(let interface), .otherMaps(let interface):
                interface
            case .pinsMissing: nil
            case .sourceUnreadable(let label): label
            case .companionDown(let name): name
            }
        }

        /// A few words for systemd's status line.
        public var summary: String {
            switch self {
            case .filterDetached(let interface): "filter detached from \(interface) (bans NOT enforced)"
            case .detachedByOperator(let interface):
                "filter detached from \(interface) by the operator (bans NOT enforced)"
            case .otherMaps(let interface): "filter on \(interface) reads other maps (bans NOT enforced)"
            case .pinsMissing: "maps' pins not in order"
            case .sourceUnreadable(let label): "source \(label) not read"
            case .companionDown(let name): "\(name) not reached"
            }
        }

        /// Whether the bans do not reach the packets of `interface`.
        func stopsEnforcement(on interface: String) -> Bool {
            switch self {
            case .filterDetached(let name), .detachedByOperator(let name), .otherMaps(let name): name == interface
            default: false
            }
        }
    }

    public let kind: Kind
    /// What it is and what to do, one line.
    public var text: String
    /// When it was first seen (monotonic seconds).
    public let since: Double
}

/// portcullisd's health: the problems of now, each reported by the part that watches it (the
/// enforcement watch, the daemon's sources, the companions) and kept here once, with when it began.
/// A problem is said when it appears, said again every `warningInterval` seconds while it lasts
/// (naming how long), and said once when it clears. `portcullis status`, systemd's status line and
/// the metrics read it. Reported on the supervisor's thread, read from any.
public final class Health: Sendable {
    private struct State {
        var problems: [HealthProblem] = []
        /// Which reporter reported each problem (a report replaces that reporter's problems only).
        var reporters: [HealthProblem.Kind: String] = [:]
        /// When each problem's warning is due again.
        var due: [HealthProblem.Kind: Double] = [:]
    }

    private let state = Mutex(State())
    /// Seconds between the warnings of a problem that lasts.
    public let warningInterval: Double
    private let log: @Sendable (LogLine) -> Void

    /// - Parameters:
    ///   - warningInterval: seconds between the repeated warnings of a problem that lasts.
    ///   - log: writes a line of the daemon's log.
    public init(warningInterval: Double, log: @escaping @Sendable (LogLine) -> Void) {
        self.warningInterval = warningInterval
        self.log = log
    }

    /// The problems of now, in the order they appeared.
    public var problems: [HealthProblem] { state.withLock { $0.problems } }

    public var isDegraded: Bool { state.withLock { !$0.problems.isEmpty } }

    /// `reporter`'s problems at `now`: those new are said (a warning), those it no longer reports
    /// are said cleared; those it reports again keep when they began (their text may change).
    public func report(_ current: [(kind: HealthProblem.Kind, text: String)], from reporter: String, now: Double) {
        var lines: [LogLine] = []
        state.withLock { state in
            let reported = Set(current.map(\.kind))
            for problem in state.problems
            where state.reporters[problem.kind] == reporter && !reported.contains(problem.kind) {
                lines.append(
                    LogLine("no longer degraded after \(Self.duration(now - problem.since)): \(problem.kind.summary)"))
                state.reporters[problem.kind] = nil
                state.due[problem.kind] = nil
            }
            state.problems.removeAll { state.reporters[$0.kind] == nil }
            for (kind, text) in current {
                if let index = state.problems.firstIndex(where: { $0.kind == kind }) {
                    state.problems[index].text = text
                    continue
                }
                state.problems.append(HealthProblem(kind: kind, text: text, since: now))
                state.reporters[kind] = reporter
                state.due[kind] = now + warningInterval
                lines.append(.error("DEGRADED: " + text))
            }
        }
        for line in lines { log(line) }
    }

    /// Says again each problem whose warning is due at `now`.
    /// - Returns: when the next is due (nil: no problem).
    public func repeatWarnings(now: Double) -> Double? {
        let (lines, next): ([LogLine], Double?) = state.withLock { state in
            var lines: [LogLine] = []
            for problem in state.problems where state.due[problem.kind, default: .infinity] <= now {
                lines.append(.error("still DEGRADED after \(Self.duration(now - problem.since)): \(problem.text)"))
                state.due[problem.kind] = now + warningInterval
            }
            return (lines, state.due.values.min())
        }
        for line in lines { log(line) }
        return next
    }

    /// The problems for a status reply: each with its kind, subject, text and age at `now`.
    public func states(now: Double) -> [ProblemState] {
        problems.map {
            ProblemState(kind: $0.kind.name, subject: $0.kind.subject, text: $0.text, seconds: max(now - $0.since, 0))
        }
    }

    /// What systemd's status line adds (nil: nothing is wrong).
    public var statusLine: String? {
        let problems = self.problems
        guard !problems.isEmpty else { return nil }
        return "DEGRADED: " + problems.map(\.kind.summary).joined(separator: "; ")
    }

    /// "45 s", "12 min", "3 h 5 min".
    static func duration(_ seconds: Double) -> String {
        let whole = Int(max(seconds, 0).rounded())
        if whole < 120 { return "\(whole) s" }
        if whole < 7200 { return "\(whole / 60) min" }
        return "\(whole / 3600) h \(whole % 3600 / 60) min"
    }
}

/// What a companion says of its link to its server: nil when it is up (or has not tried yet), else
/// the last error.
public struct CompanionLink: Sendable {
    public let name: String
    public let down: String?

    public init(name: String, down: String?) {
        self.name = name
        self.down = down
    }
}

/// Polls what the other parts keep (the daemon's sources a reload could not open, the companions'
/// links) into `Health` every 2 s, repeats the warnings of what lasts, and gives the health's
/// metrics and systemd's status line. Added last, so that its status follows the daemon's.
public final class HealthWatch: Component {
    public let name = "health"
    private let health: Health
    private let daemon: DaemonComponent
    private let interfaces: [String]
    private let companions: () -> [CompanionLink]

    /// - Parameter companions: the companions that run now, each with its link's state.
    public init(
        health: Health, daemon: DaemonComponent, interfaces: [String],
        companions: @escaping () -> [CompanionLink]
    ) {
        self.health = health
        self.daemon = daemon
        self.interfaces = interfaces
        self.companions = companions
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] { [] }

    public func stop() {}

    public func tick(now: Double) -> Double? {
        let sources = daemon.daemon?.degradedSources ?? []
        health.report(
            sources.map {
                (
                    .sourceUnreadable(label: $0.label),
                    "source \($0.label) cannot be read (\($0.reason)): its jails read nothing from it; "
                        + "fix it, then portcullis reload"
                )
            }, from: "sources", now: now)
        health.report(
            companions().compactMap { link in
                link.down.map {
                    (.companionDown(name: link.name), "\(link.name) cannot reach its server: \($0)")
                }
            }, from: "companions", now: now)
        return min(health.repeatWarnings(now: now) ?? .infinity, now + 2)
    }

    /// `portcullis_degraded`, `portcullis_filter_attached` per interface, `portcullis_companion_up`
    /// per companion that runs.
    public func metrics() -> [MetricSample] {
        let kinds = health.problems.map(\.kind)
        var samples: [MetricSample] = [
            .gauge(
                "portcullis_degraded",
                "1 while something keeps portcullisd from doing all it is configured to do (portcullis status "
                    + "names it), else 0.", [], kinds.isEmpty ? 0 : 1)
        ]
        for interface in interfaces {
            samples.append(
                .gauge(
                    "portcullis_filter_attached",
                    "1 while the filter on the interface reads the daemon's maps (bans enforced), 0 when it is "
                        + "detached or reads other maps.", [("interface", interface)],
                    kinds.contains { $0.stopsEnforcement(on: interface) } ? 0 : 1))
        }
        for link in companions() {
            samples.append(
                .gauge(
                    "portcullis_companion_up",
                    "1 while the companion reaches its server (or has not tried yet), 0 when it cannot.",
                    [("companion", link.name)], link.down == nil ? 1 : 0))
        }
        return samples
    }

    public var status: String? { health.statusLine }
}
