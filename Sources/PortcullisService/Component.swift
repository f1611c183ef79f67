// SPDX-License-Identifier: Apache-2.0
import PortcullisCore

/// A part of the service that the `Supervisor` starts, reloads and stops: the daemon, the control
/// socket, the metrics endpoint, a companion (CrowdSec, the fleet, the blocklists), a watch.
///
/// Each component takes its own `Settings`, which the supervisor projects out of the service's
/// configuration. A reload asks only the components whose settings changed (unless
/// `reloadsUnchanged`), in start order.
public protocol Component<Settings>: AnyObject {
    associatedtype Settings: Equatable

    /// What the log calls it ("crowdsec", "fleet").
    var name: String { get }

    /// True for a component that reloads even when its settings did not change (the daemon: a
    /// reload opens again a source that could not be opened).
    var reloadsUnchanged: Bool { get }

    /// Starts it. A throw stops the start: what started before it is stopped, in reverse.
    /// - Returns: lines for the log.
    func start(_ settings: Settings) throws -> [LogLine]

    /// Runs it on `settings` from now on.
    /// - Returns: how it went; a throw is a failed reload, reported as `DEGRADED`.
    func reload(_ settings: Settings) throws -> ReloadVerdict

    /// Stops it; called once, after a `start` that succeeded.
    func stop()

    /// Undoes its start, when a component started after it failed to start (by default: `stop`).
    func rollBack()

    /// Periodic work (a watch, a status line) at `now` (monotonic seconds).
    /// - Returns: when it wants the next tick, nil for none.
    func tick(now: Double) -> Double?

    /// Its metrics, read at scrape time.
    func metrics() -> [MetricSample]

    /// A line for the service manager's status (`systemctl status`), nil: nothing to say.
    var status: String? { get }
}

extension Component {
    public var reloadsUnchanged: Bool { false }
    public func rollBack() { stop() }
    public func tick(now: Double) -> Double? { nil }
    public func metrics() -> [MetricSample] { [] }
    public var status: String? { nil }
}

/// The settings of a component that a reload never changes (its flags are restart-only: the
/// firewall, the control socket, the metrics endpoint, the watches). Such a component needs no
/// `reload` and is added without a projection.
public struct NoSettings: Equatable, Sendable {
    public init() {}
}

extension Component where Settings == NoSettings {
    /// Never called: its settings never change.
    public func reload(_ settings: NoSettings) throws -> ReloadVerdict { .applied(outcome: nil, lines: []) }
}

/// A line for the log, and whether it goes to stderr.
public struct LogLine: Sendable, Equatable {
    public let text: String
    public let isError: Bool

    public init(_ text: String, isError: Bool = false) {
        self.text = text
        self.isError = isError
    }

    public static func error(_ text: String) -> LogLine { LogLine(text, isError: true) }
}

/// How a component's reload went.
public enum ReloadVerdict: Sendable, Equatable {
    /// It runs on the new settings. `outcome`: the reload's answer, when this component gives it
    /// (the daemon's "reloaded: ...").
    case applied(outcome: String?, lines: [LogLine])
    /// It runs on the new settings with a part that does not (a source it could not open).
    case degraded(outcome: String, lines: [LogLine])
    /// It keeps its running settings, and the components after it are not reloaded.
    case refused(String)
}
