// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import PortcullisSystem

/// Why a key of another host was not enforced.
public enum FleetSkip: String, Sendable, CaseIterable {
    /// Its end had passed when it came (NATS 2.9 keeps a key until the bucket's max age).
    case ended
    /// A value that is not the JSON of a ban, or that names another host than its key.
    case malformed
    /// A key that is not `HOST.ADDRESS`.
    case key
    /// Inside the driver allowlist: never enforced.
    case allowlisted
    /// A network shorter than `min_prefix_v4`/`min_prefix_v6`.
    case tooWide = "too_wide"
    /// A network touching a never-bannable range (loopback, link-local, multicast, reserved).
    case neverBannable = "never_bannable"
    /// A key beyond its host's `max_keys_per_host`.
    case overLimit = "over_limit"
    /// A key of a host `ignore_hosts` or `portcullis fleet ignore` names.
    case ignored
}

/// Counters of a fleet node (read by the metrics and the status at any time).
public struct FleetStatistics: Sendable {
    public var connected = false
    /// Puts and deletes of this host's bans the server acknowledged.
    public var published: UInt64 = 0
    /// Changes waiting for the server.
    public var queued = 0
    /// Changes never published, by reason: `queue_full`, `refused` (the server's permissions),
    /// `rejected` (the server's limits: a value too large), `ended` (ended while waiting), `stopping`.
    public var dropped: [String: UInt64] = [:]
    /// Puts and deletes of other hosts' keys the watch delivered.
    public var received: UInt64 = 0
    /// Other hosts' bans written into the maps, and lifted by their deletion.
    public var installed: UInt64 = 0
    /// Other hosts' bans lifted by their key's deletion, and by a whole read of the bucket that no
    /// longer had them (after a reconnection, a failover).
    public var lifted: UInt64 = 0
    public var liftedByResync: UInt64 = 0
    /// Other hosts' keys put again (before the bucket's max age took them) the watch delivered:
    /// not propagations.
    public var refreshed: UInt64 = 0
    public var skipped: [FleetSkip: UInt64] = [:]
    /// Other hosts' bans in force, and the networks they name (hosts may share one).
    public var bans = 0
    public var networks = 0
    /// Bans in force by origin host.
    public var byHost: [String: Int] = [:]
    /// The propagation lag of new bans: from the origin's ban (its maps' write) to this host's,
    /// seconds; the last, and when it was counted (monotonic seconds; 0: none yet).
    public var lagSeconds = 0.0
    public var lagCount: UInt64 = 0
    public var lastLagSeconds = 0.0
    public var lastLagAt = 0.0
    /// Connections made again by nats.c, and whole-set reads of the bucket (at start and after each).
    public var reconnects: UInt64 = 0
    public var resyncs: UInt64 = 0
    /// This host's bans in force put again: into a bucket made anew (a server's lost store), and
    /// before the bucket's max age would take the keys of those that outlast it.
    public var republished: UInt64 = 0
    /// The bucket's max age as its stream has it (nil: not read yet).
    public var bucketMaxAgeSeconds: UInt64?
    public var lastError: String?
}

/// The fleet's metric catalogue: what `portcullisd`'s Prometheus endpoint serves of the node
/// (docs/metrics.md).
extension FleetLink {
    /// The node's metrics.
    public func samples() -> [MetricSample] {
        guard let snapshot = running?.snapshot else { return [] }
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
                "portcullis_fleet_installed_total", "Other hosts' new bans written into the maps.", [],
                Double(snapshot.installed)),
            .counter(
                "portcullis_fleet_refreshed_total",
                "Other hosts' keys put again before the bucket's max age took them (not propagations).", [],
                Double(snapshot.refreshed)),
            .counter(
                "portcullis_fleet_lifted_total",
                "Other hosts' bans lifted: by their key's deletion, by a whole read of the bucket without them.",
                [("reason", "deleted")], Double(snapshot.lifted)),
            .counter(
                "portcullis_fleet_lifted_total",
                "Other hosts' bans lifted: by their key's deletion, by a whole read of the bucket without them.",
                [("reason", "resync")], Double(snapshot.liftedByResync)),
            .gauge("portcullis_fleet_bans", "Other hosts' bans in force here.", [], Double(snapshot.bans)),
            .gauge(
                "portcullis_fleet_networks", "Networks in the maps for other hosts' bans.", [],
                Double(snapshot.networks)),
            .seconds(
                "portcullis_fleet_propagation_seconds_total",
                "From the origin host's new ban to its install here, summed (divide by the installs it counts).", [],
                snapshot.lagSeconds),
            .counter(
                "portcullis_fleet_propagations_total", "Installs whose propagation lag is summed.", [],
                Double(snapshot.lagCount)),
            .gauge(
                "portcullis_fleet_last_propagation_seconds", "The last new ban's propagation lag.", [],
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
        if snapshot.lagCount > 0 {
            samples.append(
                .gauge(
                    "portcullis_fleet_last_propagation_age_seconds",
                    "Seconds since the last new ban's install (the last propagation's age: an idle fleet's grows).",
                    [], max(SystemClock.monotonicSeconds() - snapshot.lastLagAt, 0)))
        }
        if let age = snapshot.bucketMaxAgeSeconds {
            samples.append(
                .gauge(
                    "portcullis_fleet_bucket_max_age_seconds",
                    "The bucket's max age as its stream has it (0: none): longer bans' keys are put again.", [],
                    Double(age)))
        }
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
