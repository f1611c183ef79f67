import Glibc
import PortcullisConfiguration
import PortcullisControl
import PortcullisCore
import PortcullisCrowdSec
import PortcullisDaemon
import PortcullisMetrics
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon's link to CrowdSec (`[crowdsec]`): the bouncer's thread and the alert pusher's,
/// started with the daemon and, when a SIGHUP changes the table, replaced (a new bouncer
/// resynchronises in full). It is the daemon's ban publisher for the alerts whatever pusher runs.
final class CrowdSecLink: BanPublisher, @unchecked Sendable {
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

    init(observer: (@Sendable ([ListChange], UInt64, Bool) -> Void)? = nil) { self.observer = observer }

    func publish(_ event: BanEvent) {
        state.withLock { $0.pusher }?.publish(event)
    }

    private static let say: @Sendable (String, Bool) -> Void = { line, error in
        Console.say("portcullisd: " + line, to: error ? STDERR_FILENO : STDOUT_FILENO)
    }

    /// Starts (or replaces, or stops) the alert pusher for `configuration`, and describes the
    /// jails whose bans become alerts (their thresholds and find times). Called before the
    /// daemon starts, so that its first bans are queued already, and at each reload.
    /// - Returns: lines for the log.
    func startAlerts(_ configuration: CrowdSecConfiguration?, jails daemon: DaemonConfiguration) throws -> [String] {
        var described: [String: JailDescription] = [:]
        for jail in daemon.effectiveJails {
            described[jail.name] = JailDescription(
                threshold: Int(jail.policy.threshold), findSeconds: Double(jail.policy.findTime))
        }
        jails.withLock { $0 = described }
        let settings = configuration?.alerts
        let previous = state.withLock { ($0.alertSettings, $0.pusher) }
        guard previous.0 != settings else { return [] }
        previous.1?.stopAndJoin()
        state.withLock {
            $0.alertSettings = nil
            $0.pusher = nil
        }
        guard let settings else { return ["crowdsec: alerts stopped (no login in [crowdsec] any more)"] }
        let pusher = try AlertPusher(
            settings: settings, jails: { [weak self] name in self?.jails.withLock { $0[name] } }, say: Self.say)
        try pusher.start()
        state.withLock {
            $0.alertSettings = settings
            $0.pusher = pusher
        }
        return [
            "crowdsec: alerts of the jails' bans to \(settings.connection.displayURL) as machine \(settings.login)"
                + (settings.carryDecisions ? ", with Portcullis's decisions" : ", CrowdSec's profiles decide")
        ]
    }

    /// Starts (or replaces, or stops) the bouncer for `configuration`, once the daemon runs (the
    /// maps are open; its allowlist is known). A bouncer replaced resynchronises in full.
    /// - Returns: lines for the log.
    func startBouncer(_ configuration: CrowdSecConfiguration?, maps: BanMaps, daemon: Daemon) throws -> [String] {
        let settings = configuration?.bouncer
        let policy = daemon.listPolicy
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
        let bouncer = try Bouncer(settings: settings, maps: maps, policy: policy, say: Self.say)
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
        ]
    }

    func stop() {
        let running = state.withLock { state in
            defer { state = State() }
            return state
        }
        running.bouncer?.stopAndJoin()
        running.pusher?.stopAndJoin()
    }

    /// What the bouncer and the pusher do, for `portcullis status` (nil: neither runs).
    func controlState() -> CrowdSecState? {
        let (bouncer, pusher) = state.withLock { ($0.bouncer, $0.pusher) }
        guard bouncer != nil || pusher != nil else { return nil }
        return CrowdSecState(
            bouncer: bouncer.map { bouncer in
                let snapshot = bouncer.snapshot
                let decisions = snapshot.inForce.values.reduce(0) { $0 + $1.ip + $1.range }
                return CrowdSecState.Bouncer(
                    url: bouncer.settings.connection.displayURL, connected: snapshot.connected, decisions: decisions,
                    networks: snapshot.networks, pulls: snapshot.pulls, lastError: snapshot.lastError)
            },
            alerts: pusher.map { pusher in
                let snapshot = pusher.snapshot
                return CrowdSecState.Alerts(
                    url: pusher.settings.connection.displayURL, connected: snapshot.connected, pushed: snapshot.pushed,
                    queued: snapshot.queued, dropped: snapshot.dropped.values.reduce(0, +),
                    lastError: snapshot.lastError)
            })
    }

    /// The metrics of the bouncer and the pusher that run.
    func samples() -> [MetricSample] {
        let (bouncer, pusher) = state.withLock { ($0.bouncer?.snapshot, $0.pusher?.snapshot) }
        var samples: [MetricSample] = []
        if let bouncer {
            for (origin, count) in bouncer.inForce {
                for (scope, value) in [("Ip", count.ip), ("Range", count.range)] where value > 0 {
                    samples.append(
                        .gauge(
                            "portcullis_crowdsec_decisions", "CrowdSec decisions enforced, by origin and scope.",
                            [("origin", origin), ("scope", scope)], Double(value)))
                }
            }
            samples += [
                .counter(
                    "portcullis_crowdsec_decisions_received_total", "Decisions the stream delivered, new or deleted.",
                    [("action", "new")], Double(bouncer.received.new)),
                .counter(
                    "portcullis_crowdsec_decisions_received_total", "Decisions the stream delivered, new or deleted.",
                    [("action", "deleted")], Double(bouncer.received.deleted)),
                .counter(
                    "portcullis_crowdsec_pulls_total", "Pulls of the decision stream that succeeded.", [],
                    Double(bouncer.pulls)),
                .counter(
                    "portcullis_crowdsec_resyncs_total", "Full pulls (startup=true): at start and after a failure.", [],
                    Double(bouncer.resyncs)),
                .seconds(
                    "portcullis_crowdsec_pull_seconds_total",
                    "Time the successful pulls took, fetch, parse and install (divide by the pulls).", [],
                    bouncer.pullSeconds),
                .counter(
                    "portcullis_crowdsec_repaired_total",
                    "Networks a periodic full pull (resync_frequency) found wrong: decisions the deltas missed.", [],
                    Double(bouncer.repaired)),
                .gauge(
                    "portcullis_crowdsec_last_pull_seconds", "How long the last successful pull took.", [],
                    bouncer.lastPullSeconds),
                .gauge(
                    "portcullis_crowdsec_last_install_seconds",
                    "How long writing the last pull's changes into the maps took.", [], bouncer.lastInstallSeconds),
                .gauge(
                    "portcullis_crowdsec_networks", "Networks in the maps for CrowdSec's decisions.", [],
                    Double(bouncer.networks)),
                .gauge(
                    "portcullis_crowdsec_connected", "1 when the last pull succeeded.", [],
                    bouncer.connected ? 1 : 0),
            ]
            for reason in SkipReason.allCases {
                samples.append(
                    .counter(
                        "portcullis_crowdsec_decisions_skipped_total",
                        "Decisions not enforced: not a ban, a scope or origin left out, malformed, allowlisted, ended, too wide, never bannable.",
                        [("reason", reason.rawValue)], Double(bouncer.skipped[reason] ?? 0)))
            }
            for kind in ["unreachable", "refused", "status", "malformed", "install"] {
                samples.append(
                    .counter(
                        "portcullis_crowdsec_pull_errors_total", "Pulls that failed, by kind.", [("kind", kind)],
                        Double(bouncer.pullErrors[kind] ?? 0)))
            }
        }
        if let pusher {
            samples += [
                .counter(
                    "portcullis_crowdsec_alerts_pushed_total", "Alerts of the jails' bans the LAPI took.", [],
                    Double(pusher.pushed)),
                .gauge(
                    "portcullis_crowdsec_alert_queue", "Alerts waiting for the LAPI.", [], Double(pusher.queued)),
                .counter(
                    "portcullis_crowdsec_logins_total", "Machine logins (a token got or renewed).", [],
                    Double(pusher.logins)),
            ]
            for reason in ["queue_full", "refused", "stopping"] {
                samples.append(
                    .counter(
                        "portcullis_crowdsec_alerts_dropped_total", "Alerts never sent, by reason.",
                        [("reason", reason)], Double(pusher.dropped[reason] ?? 0)))
            }
        }
        return samples
    }
}
