import FoundationEssentials
import Glibc
import PortcullisConfiguration
import PortcullisControl
import PortcullisCore
import PortcullisDaemon
import PortcullisFleet
import PortcullisMetrics
import PortcullisSystem
import Synchronization
import XDPFirewall

/// A `fleet ignore` that cannot be done, in one line.
struct FleetIgnoreError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The daemon's link to its fleet (`[fleet]`): one node that puts this host's bans into the NATS
/// bucket and installs the other hosts'. It is the daemon's ban publisher whatever node runs;
/// a SIGHUP that changes the table replaces the node (which reads the bucket's set again).
final class FleetLink: BanPublisher, @unchecked Sendable {
    private let node = Mutex<FleetNode?>(nil)
    /// The hosts `portcullis fleet ignore` named, one a line (they outlive a restart).
    let ignoredPath: String?

    init(stateDirectory: String? = nil) {
        ignoredPath = stateDirectory.map { $0 + "/fleet-ignored-hosts" }
    }

    /// The hosts `portcullis fleet ignore` named.
    func ignoredHosts() -> [String] {
        guard let ignoredPath, let text = try? TextFile.read(ignoredPath, limit: 1 << 20) else { return [] }
        return text.split(separator: "\n").map(String.init).filter { FleetSettings.isValidHost($0) }
    }

    /// `portcullis fleet ignore HOST` (`ignoring`) or `unignore HOST`: kept in the state
    /// directory, told the node, and `fleet/HOST`'s entries lifted now. - Returns: what happened.
    func ignore(_ host: String, ignoring: Bool, maps: BanMaps) throws -> String {
        guard FleetSettings.isValidHost(host) else {
            throw FleetIgnoreError("'\(host)' is no fleet host name: letters, digits, - and _")
        }
        guard let ignoredPath else { throw FleetIgnoreError("no state directory to keep the ignored hosts in") }
        var hosts = ignoredHosts()
        if ignoring { if !hosts.contains(host) { hosts.append(host) } } else { hosts.removeAll { $0 == host } }
        let directory = String(ignoredPath[..<(ignoredPath.lastIndex(of: "/") ?? ignoredPath.startIndex)])
        if !directory.isEmpty { mkdir(directory, 0o700) }
        do throws(Errno) {
            try TextFile.write(hosts.map { $0 + "\n" }.joined(), to: ignoredPath)
        } catch {
            throw FleetIgnoreError("cannot write \(ignoredPath): \(error); give a writable --state-dir")
        }
        let running = node.withLock { $0 }
        guard ignoring else {
            running?.unignore(host)
            return "fleet: host \(host)'s bans are installed again" + (running == nil ? " once [fleet] runs" : "")
        }
        running?.ignore(host)
        let lifted = try maps.removeListEntries(origins: { $0 == "fleet/" + host })
        return "fleet: host \(host) ignored (kept in \(ignoredPath)): \(lifted) of its entries lifted"
    }

    func publish(_ event: BanEvent) {
        node.withLock { $0 }?.publish(event)
    }

    /// The CrowdSec decisions this host's bouncer installs or lifts (put when `share_crowdsec`).
    func publishDecisions(_ changes: [ListChange], now: UInt64, whole: Bool) {
        node.withLock { $0 }?.publishDecisions(changes, now: now, whole: whole)
    }

    private static let say: @Sendable (String, Bool) -> Void = { line, error in
        Console.say("portcullisd: " + line, to: error ? STDERR_FILENO : STDOUT_FILENO)
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

    /// Starts (or replaces, or stops) the node for `configuration`: before the daemon's workers
    /// (its first bans are queued already), with the maps open for the watch.
    /// - Returns: lines for the log.
    func start(
        _ configuration: FleetConfiguration?, daemon: DaemonConfiguration, maps: BanMaps, allowlist: [IPNetwork]
    ) throws -> [String] {
        var settings = configuration?.settings
        if settings != nil {
            for host in ignoredHosts() where !settings!.ignoreHosts.contains(host) {
                settings!.ignoreHosts.append(host)
            }
        }
        let previous = node.withLock { $0 }
        if let previous, previous.settings == settings, previous.allowlist == allowlist { return [] }
        guard let settings else {
            node.withLock { $0 = nil }
            previous?.stopAndJoin()
            // Other hosts' bans of a fleet this host is no longer in drop nothing more (nor after a restart).
            let lifted = (try? maps.removeListEntries(origins: { $0.hasPrefix("fleet/") })) ?? 0
            return (previous == nil ? [] : ["fleet: stopped (no [fleet] any more)"])
                + (lifted > 0
                    ? ["fleet: no [fleet]: \(lifted) entries of other hosts' bans removed from the maps"] : [])
        }
        let made = FleetNode(settings: settings, maxAgeSeconds: Self.longestBan(daemon), say: Self.say)
        // Bans from now on go to the new node; what the old one had not put yet goes before them
        // (its keys are the new one's when the host and the bucket stay).
        node.withLock { $0 = made }
        if let previous {
            previous.stopAndJoin()
            let left = previous.takeQueue()
            if previous.settings.host == settings.host, previous.settings.bucket == settings.bucket {
                made.adopt(left)
            }
        }
        do {
            try made.start(maps: maps, allowlist: allowlist)
        } catch {
            node.withLock { $0 = nil }
            throw error
        }
        return [
            "fleet: host \(settings.host) shares its bans through bucket \(settings.bucket) on "
                + settings.servers.joined(separator: ",")
                + (settings.shareCrowdSec ? ", CrowdSec's decisions too" : "")
        ]
    }

    func stop() {
        let running = node.withLock { node in
            defer { node = nil }
            return node
        }
        running?.stopAndJoin()
    }

    /// What the node does, for `portcullis status` (nil: no `[fleet]`).
    func controlState() -> FleetState? {
        guard let node = node.withLock({ $0 }) else { return nil }
        let snapshot = node.snapshot
        return FleetState(
            host: node.settings.host, bucket: node.settings.bucket, servers: node.settings.servers,
            connected: snapshot.connected, published: snapshot.published, queued: snapshot.queued,
            dropped: snapshot.dropped.values.reduce(0, +), received: snapshot.received, bans: snapshot.bans,
            hosts: snapshot.byHost.count, republished: snapshot.republished, lastError: snapshot.lastError)
    }

    /// The node's metrics.
    func samples() -> [MetricSample] {
        guard let snapshot = node.withLock({ $0 })?.snapshot else { return [] }
        var samples: [MetricSample] = [
            .gauge(
                "portcullis_fleet_connected", "1 when connected to a NATS server of the fleet.", [],
                snapshot.connected ? 1 : 0),
            .counter(
                "portcullis_fleet_published_total", "This host's ban changes the bucket took.", [],
                Double(snapshot.published)),
            .gauge(
                "portcullis_fleet_queue", "This host's ban changes waiting for the server.", [],
                Double(snapshot.queued)),
            .counter(
                "portcullis_fleet_received_total", "Other hosts' ban changes the watch delivered.", [],
                Double(snapshot.received)),
            .counter(
                "portcullis_fleet_installed_total", "Other hosts' bans written into the maps.", [],
                Double(snapshot.installed)),
            .counter(
                "portcullis_fleet_lifted_total", "Other hosts' bans lifted by their deletion.", [],
                Double(snapshot.lifted)),
            .gauge("portcullis_fleet_bans", "Other hosts' bans in force here.", [], Double(snapshot.bans)),
            .gauge(
                "portcullis_fleet_networks", "Networks in the maps for other hosts' bans.", [],
                Double(snapshot.networks)),
            .seconds(
                "portcullis_fleet_propagation_seconds_total",
                "From the origin host's ban to its install here, summed (divide by the installs it counts).", [],
                snapshot.lagSeconds),
            .counter(
                "portcullis_fleet_propagations_total", "Installs whose propagation lag is summed.", [],
                Double(snapshot.lagCount)),
            .gauge(
                "portcullis_fleet_last_propagation_seconds", "The last install's propagation lag.", [],
                snapshot.lastLagSeconds),
            .counter(
                "portcullis_fleet_reconnects_total", "Connections nats.c made again.", [],
                Double(snapshot.reconnects)),
            .counter(
                "portcullis_fleet_resyncs_total",
                "Reads of the bucket's whole set: at start and after each reconnection.",
                [], Double(snapshot.resyncs)),
            .counter(
                "portcullis_fleet_republished_total",
                "This host's bans in force put again: after a connection made anew, before the max age takes them.",
                [], Double(snapshot.republished)),
        ]
        for (host, count) in snapshot.byHost.sorted(by: { $0.key < $1.key }) {
            samples.append(
                .gauge(
                    "portcullis_fleet_bans_by_host", "Other hosts' bans in force here, by origin host.",
                    [("host", host)], Double(count)))
        }
        for reason in FleetSkip.allCases {
            samples.append(
                .counter(
                    "portcullis_fleet_skipped_total",
                    "Other hosts' keys not enforced: ended, malformed, a bad key, allowlisted, too wide, never bannable, "
                        + "over the host's limit, an ignored host.",
                    [("reason", reason.rawValue)], Double(snapshot.skipped[reason] ?? 0)))
        }
        for reason in ["queue_full", "refused", "rejected", "ended", "stopping"] {
            samples.append(
                .counter(
                    "portcullis_fleet_dropped_total", "This host's ban changes never published, by reason.",
                    [("reason", reason)], Double(snapshot.dropped[reason] ?? 0)))
        }
        return samples
    }
}
