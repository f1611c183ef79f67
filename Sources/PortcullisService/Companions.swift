// SPDX-License-Identifier: Apache-2.0
import PortcullisConfiguration
import PortcullisControl
import PortcullisCore
import PortcullisCrowdSec
import PortcullisDaemon
import PortcullisFleet
import XDPFirewall

/// CrowdSec's alert pusher (`[crowdsec]` with a login): started before the daemon's workers, so
/// that their first bans are alerts too, and stopped after them.
public final class CrowdSecAlertsComponent: Component {
    public struct Settings: Equatable {
        public var alerts: AlertSettings?
        /// The jails whose bans become alerts: their thresholds and find times.
        public var jails: [String: JailDescription]

        public init(_ configuration: LoadedConfiguration) {
            alerts = configuration.crowdsec?.alerts
            var jails: [String: JailDescription] = [:]
            for jail in configuration.daemon.effectiveJails {
                jails[jail.name] = JailDescription(
                    threshold: Int(jail.policy.threshold), findSeconds: Double(jail.policy.findTime))
            }
            self.jails = jails
        }
    }

    public let name = "crowdsec"
    public let link: CrowdSecLink

    public init(link: CrowdSecLink) { self.link = link }

    public func start(_ settings: Settings) throws -> [LogLine] {
        try link.startAlerts(settings.alerts, jails: settings.jails).map { LogLine($0) }
    }

    public func reload(_ settings: Settings) throws -> ReloadVerdict {
        let lines = try link.startAlerts(settings.alerts, jails: settings.jails)
        return .applied(outcome: nil, lines: lines.map { LogLine("SIGHUP: " + $0) })
    }

    public func stop() {
        for line in link.stop() { say(LogLine(line)) }
    }

    /// The bouncer's and the pusher's (the bouncer's component serves none of its own).
    public func metrics() -> [MetricSample] { link.samples() }
}

/// CrowdSec's bouncer (`[crowdsec]` with an api_key): started once the daemon runs (the maps are
/// open, its allowlist known); a changed table or list policy replaces it, and it resynchronises.
public final class CrowdSecBouncerComponent: Component {
    public struct Settings: Equatable {
        public var bouncer: BouncerSettings?
        public var policy: ListPolicy

        public init(bouncer: BouncerSettings?, policy: ListPolicy) {
            self.bouncer = bouncer
            self.policy = policy
        }
    }

    public let name = "crowdsec"
    private let link: CrowdSecLink
    private let firewall: FirewallComponent

    public init(link: CrowdSecLink, firewall: FirewallComponent) {
        self.link = link
        self.firewall = firewall
    }

    public func start(_ settings: Settings) throws -> [LogLine] {
        do {
            return try link.startBouncer(settings.bouncer, maps: firewall.maps!, policy: settings.policy)
                .map { LogLine($0) }
        } catch {
            throw DaemonError.invalidSetting("crowdsec: cannot start: \(error)")
        }
    }

    public func reload(_ settings: Settings) throws -> ReloadVerdict {
        let lines = try link.startBouncer(settings.bouncer, maps: firewall.maps!, policy: settings.policy)
        return .applied(outcome: nil, lines: lines.map { LogLine("SIGHUP: " + $0) })
    }

    public func stop() { link.stopBouncer() }

    /// What the bouncer and the pusher do, for `portcullis status` (nil: neither runs).
    public var controlState: CrowdSecState? {
        let (bouncer, pusher) = link.running
        guard bouncer != nil || pusher != nil else { return nil }
        return CrowdSecState(
            bouncer: bouncer.map { bouncer in
                let snapshot = bouncer.snapshot
                let decisions = snapshot.inForce.values.reduce(0) { $0 + $1.ip + $1.range }
                return CrowdSecState.Bouncer(
                    url: bouncer.settings.connection.displayURL, connected: snapshot.connected,
                    decisions: max(decisions, snapshot.keptFromLastRun), networks: snapshot.networks,
                    kept: snapshot.keptFromLastRun, pulls: snapshot.pulls, lastError: snapshot.lastError)
            },
            alerts: pusher.map { pusher in
                let snapshot = pusher.snapshot
                return CrowdSecState.Alerts(
                    url: pusher.settings.connection.displayURL, connected: snapshot.connected, pushed: snapshot.pushed,
                    queued: snapshot.queued, dropped: snapshot.dropped.values.reduce(0, +),
                    lastError: snapshot.lastError)
            })
    }
}

/// The fleet's node (`[fleet]`): started before the daemon's workers (their first bans are put),
/// with the allowlist the other hosts' bans are not enforced in; a changed table replaces the node,
/// which reads the bucket again.
public final class FleetComponent: Component {
    public struct Settings: Equatable {
        public var fleet: FleetSettings?
        /// The bucket's max age: the longest ban the jails give (0: one is for good).
        public var maxAgeSeconds: UInt64
        public var allowlist: [IPNetwork]

        public init(_ configuration: LoadedConfiguration, allowlist: [IPNetwork]) {
            fleet = configuration.fleet?.settings
            maxAgeSeconds = Self.longestBan(configuration.daemon)
            self.allowlist = allowlist
        }

        /// The longest ban the jails give, in seconds (0: one is for good): the bucket's max age.
        /// (Longer bans, an operator's or CrowdSec's, are put again before their keys age out.)
        static func longestBan(_ configuration: DaemonConfiguration) -> UInt64 {
            var longest: UInt64 = 1
            for jail in configuration.effectiveJails {
                let base = jail.policy.banTime
                guard base > 0 else { return 0 }
                // Escalation without maxtime grows without end; its rndtime adds up to that much.
                let grown =
                    jail.escalation.map { escalation in
                        escalation.maxTime.map { $0 + (escalation.randomTime ?? 0) } ?? 0
                    } ?? base
                guard grown > 0 else { return 0 }
                longest = max(longest, base, grown)
            }
            return longest
        }
    }

    public let name = "fleet"
    public let link: FleetLink
    private let firewall: FirewallComponent

    public init(link: FleetLink, firewall: FirewallComponent) {
        self.link = link
        self.firewall = firewall
    }

    public func start(_ settings: Settings) throws -> [LogLine] {
        try link.start(
            settings.fleet, maxAgeSeconds: settings.maxAgeSeconds, maps: firewall.maps!, allowlist: settings.allowlist
        ).map { LogLine($0) }
    }

    public func reload(_ settings: Settings) throws -> ReloadVerdict {
        let lines = try link.start(
            settings.fleet, maxAgeSeconds: settings.maxAgeSeconds, maps: firewall.maps!, allowlist: settings.allowlist)
        return .applied(outcome: nil, lines: lines.map { LogLine("SIGHUP: " + $0) })
    }

    public func stop() { link.stop() }

    public func metrics() -> [MetricSample] { link.samples() }

    /// What the node does, for `portcullis status` (nil: no `[fleet]`).
    public var controlState: FleetState? {
        guard let node = link.running else { return nil }
        let snapshot = node.snapshot
        return FleetState(
            host: node.settings.host, bucket: node.settings.bucket, servers: node.settings.servers,
            connected: snapshot.connected, published: snapshot.published, queued: snapshot.queued,
            dropped: snapshot.dropped.values.reduce(0, +), received: snapshot.received, bans: snapshot.bans,
            hosts: snapshot.byHost.count, republished: snapshot.republished, lastError: snapshot.lastError,
            server: node.server)
    }
}
