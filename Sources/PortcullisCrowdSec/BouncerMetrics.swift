// SPDX-License-Identifier: Apache-2.0
import PortcullisCore

/// The CrowdSec metric catalogue: what `portcullisd`'s Prometheus endpoint serves of the bouncer and
/// the alert pusher (docs/metrics.md).
extension CrowdSecLink {
    /// The metrics of the bouncer and the pusher that run.
    public func samples() -> [MetricSample] {
        let now = running
        let (bouncer, pusher) = (now.bouncer?.snapshot, now.pusher?.snapshot)
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
                    "How long the last pull took from its answer received to the maps (read into the set, written).",
                    [], bouncer.lastInstallSeconds),
                .gauge(
                    "portcullis_crowdsec_networks", "Networks in the maps for CrowdSec's decisions.", [],
                    Double(bouncer.networks)),
                .counter(
                    "portcullis_crowdsec_decisions_refused_total",
                    "Decisions not installed: no origin slot free (jails and lists hold all), or past the list layer's capacity.",
                    [],
                    Double(bouncer.refused)),
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
            for reason in ["queue_full", "refused", "stopping", "ended"] {
                samples.append(
                    .counter(
                        "portcullis_crowdsec_alerts_dropped_total", "Alerts never sent, by reason.",
                        [("reason", reason)], Double(pusher.dropped[reason] ?? 0)))
            }
        }
        return samples
    }
}
