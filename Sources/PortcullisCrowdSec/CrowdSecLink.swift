// SPDX-License-Identifier: Apache-2.0
import Glibc
import Logging
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon's link to CrowdSec (`[crowdsec]`): the bouncer's thread and the alert pusher's,
/// started with the daemon and, when a reload changes the table, replaced (a new bouncer
/// resynchronises in full). It is the daemon's ban publisher for the alerts whatever pusher runs.
public final class CrowdSecLink: BanPublisher, @unchecked Sendable {
    private struct State {
        var bouncerSettings: BouncerSettings?
        var policy = ListPolicy()
        var alertSettings: AlertSettings?
        var bouncer: Bouncer?
        var pusher: AlertPusher?
    }

    private let state = Mutex(State())
    private let jails = Mutex<[String: JailDescription]>([:])
    /// Told the bouncer's changes (the fleet puts them with `share_crowdsec`).
    private let observer: (@Sendable ([ListChange], UInt64, Bool) -> Void)?

    /// Where the alert pusher keeps the alerts still queued at its stop (`crowdsec-alerts.json` in
    /// the state directory), for the next one.
    private let keptAlertsPath: String?

    /// - Parameter stateDirectory: the daemon's `--state-dir` (nil: queued alerts are not kept).
    public init(stateDirectory: String? = nil, observer: (@Sendable ([ListChange], UInt64, Bool) -> Void)? = nil) {
        keptAlertsPath = stateDirectory.map { $0 + "/crowdsec-alerts.json" }
        self.observer = observer
    }

    public func publish(_ event: BanEvent) {
        state.withLock { $0.pusher }?.publish(event)
    }

    /// `portcullisd: crowdsec: ...`
    private static let logger = ConsoleLogHandler.logger("portcullisd.crowdsec")

    /// Starts (or replaces, or stops) the alert pusher for `configuration`, and describes the
    /// jails whose bans become alerts (their thresholds and find times). Called before the
    /// daemon starts, so that its first bans are queued already, and at each reload.
    /// - Returns: lines for the log.
    public func startAlerts(_ settings: AlertSettings?, jails described: [String: JailDescription]) throws -> [String] {
        jails.withLock { $0 = described }
        let previous = state.withLock { ($0.alertSettings, $0.pusher) }
        guard previous.0 != settings else { return [] }
        let stopped = (previous.1?.stopAndJoin() ?? []).map { "crowdsec: " + $0 }
        state.withLock {
            $0.alertSettings = nil
            $0.pusher = nil
        }
        guard let settings else { return stopped + ["crowdsec: alerts stopped (no login in [crowdsec] any more)"] }
        let pusher = try AlertPusher(
            settings: settings, jails: { [weak self] name in self?.jails.withLock { $0[name] } },
            keptPath: keptAlertsPath, logger: Self.logger)
        let restored = pusher.restoreKept().map { "crowdsec: " + $0 }
        try pusher.start()
        state.withLock {
            $0.alertSettings = settings
            $0.pusher = pusher
        }
        return stopped + [
            "crowdsec: alerts of the jails' bans to \(settings.connection.displayURL) as \(settings.identity)"
                + (settings.carryDecisions ? ", with Portcullis's decisions" : ", CrowdSec's profiles decide")
        ] + restored
    }

    /// Starts (or replaces, or stops) the bouncer for `configuration`, once the daemon runs (the
    /// maps are open; its allowlist is known). A bouncer replaced resynchronises in full.
    /// - Returns: lines for the log.
    public func startBouncer(_ settings: BouncerSettings?, maps: BanMaps, policy: ListPolicy) throws -> [String] {
        let previous = state.withLock { ($0.bouncerSettings, $0.policy, $0.bouncer) }
        // Decisions of a Local API no longer configured drop nothing more (nor after a restart).
        var lifted = 0
        if settings == nil { lifted = (try? maps.removeListEntries(origins: { $0.hasPrefix("crowdsec/") })) ?? 0 }
        let liftedLine =
            lifted > 0
            ? ["crowdsec: no bouncer in [crowdsec]: \(lifted) entries of CrowdSec's decisions removed from the maps"]
            : []
        guard previous.0 != settings || (settings != nil && previous.1 != policy) else { return liftedLine }
        previous.2?.stopAndJoin()
        state.withLock {
            $0.bouncerSettings = nil
            $0.bouncer = nil
        }
        guard let settings else {
            return (previous.0 == nil ? [] : ["crowdsec: bouncer stopped (no api_key in [crowdsec] any more)"])
                + liftedLine
        }
        let bouncer = try Bouncer(settings: settings, maps: maps, policy: policy, logger: Self.logger)
        bouncer.observer = observer
        try bouncer.start()
        state.withLock {
            $0.bouncerSettings = settings
            $0.policy = policy
            $0.bouncer = bouncer
        }
        return [
            "crowdsec: bouncer of \(settings.connection.displayURL), every \(settings.updateFrequency) s, scopes "
                + settings.filter.scopes.map(\.rawValue).sorted().joined(separator: ",")
                + (settings.filter.origins.isEmpty ? "" : ", origins " + settings.filter.origins.joined(separator: ","))
                + (settings.apiKey == nil ? ", by the client certificate \(settings.connection.certPath ?? "")" : "")
        ]
    }

    /// Stops the bouncer alone (the pusher goes on taking the last bans' alerts); its decisions
    /// stay in the maps.
    public func stopBouncer() {
        let bouncer = state.withLock { state in
            defer {
                state.bouncer = nil
                state.bouncerSettings = nil
            }
            return state.bouncer
        }
        bouncer?.stopAndJoin()
    }

    /// Stops both. - Returns: lines for the stop summary (the alerts kept for the next start, or lost).
    @discardableResult
    public func stop() -> [String] {
        let running = state.withLock { state in
            defer { state = State() }
            return state
        }
        running.bouncer?.stopAndJoin()
        return (running.pusher?.stopAndJoin() ?? []).map { "crowdsec: " + $0 }
    }

    /// The bouncer and the alert pusher that run now (for their status).
    public var running: (bouncer: Bouncer?, pusher: AlertPusher?) {
        state.withLock { ($0.bouncer, $0.pusher) }
    }
}
