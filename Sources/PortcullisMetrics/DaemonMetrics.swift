// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import Prometheus
import Synchronization
import XDPFirewall

/// The daemon's metrics in Prometheus' text format (swift-prometheus keeps the registry and writes
/// the format). Two kinds of input:
/// - ban events, as a `BanPublisher`: bans per jail and origin, unbans per origin, and the
///   line-to-ban latency, recorded as they happen (atomics; no lock on the worker's path);
/// - everything else read at scrape time (`render`): the daemon's counters (kept by its workers
///   as they are, so scraping costs the hot path nothing), the maps, the XDP counters summed over
///   CPUs, the process. Counters the daemon restarts (a reload's new jails count from 0) stay
///   monotonic here: each scrape adds what grew since the last one.
public final class DaemonMetrics: BanPublisher, @unchecked Sendable {
    /// What a scrape reads, from the daemon running at that moment.
    public struct Inputs {
        public var status: DaemonStatus
        public var maps: BanMaps
        /// Control socket counters by name (`requests`, `unauthorised`, `malformed`...).
        public var control: [(name: String, value: UInt64)]
        /// SIGHUPs that reloaded, and those whose configuration was refused.
        public var reloads: UInt64
        public var reloadsRefused: UInt64
        /// Series of the daemon's companions (the CrowdSec bouncer and alert pusher).
        public var samples: [MetricSample]

        public init(
            status: DaemonStatus, maps: BanMaps, control: [(name: String, value: UInt64)], reloads: UInt64,
            reloadsRefused: UInt64, samples: [MetricSample] = []
        ) {
            self.samples = samples
            self.status = status
            self.maps = maps
            self.control = control
            self.reloads = reloads
            self.reloadsRefused = reloadsRefused
        }
    }

    public let registry = PrometheusCollectorRegistry()
    /// Upper bounds of the line-to-ban latency's buckets, in seconds.
    public static let latencyBuckets: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]
    private let latency: DurationHistogram
    private let unbansExpired: Counter
    private let unbansOperator: Counter
    private let unbansAggregate: Counter
    /// Scrapes run one at a time: the deltas and the gauges' series are theirs.
    private let scrape = Mutex(ScrapeState())

    private struct ScrapeState {
        /// Per counter series (name and labels), the daemon's value the last scrape saw.
        var last: [String: UInt64] = [:]
        /// Gauge series set by the last scrape: those not set again are removed (a jail gone).
        var gauges: [String: Gauge] = [:]
        /// The last walk of the ban maps, reused by scrapes within `mapWalkNanoseconds` of it.
        var mapWalk: MapWalk?
        /// Walks of the ban maps so far.
        var mapWalks: UInt64 = 0
    }

    /// What a walk of the ban maps counted (the walk costs about 58 ms with 100,000 bans).
    private struct MapWalk {
        var at: UInt64
        var byJail: [String: Int]
        var byFamily: [String: Int]
    }

    /// How long a walk of the ban maps serves scrapes: scraping in a loop costs one walk a second.
    public static let mapWalkNanoseconds: UInt64 = 1_000_000_000

    /// Walks of the ban maps so far (a scrape within `mapWalkNanoseconds` of the last walk reuses it).
    public var mapWalks: UInt64 { scrape.withLock { $0.mapWalks } }

    public init(version: String) {
        latency = registry.makeDurationHistogram(
            descriptor: Self.descriptor(
                "portcullis_line_to_ban_seconds",
                "From the arrival of the lines that made a client cross its threshold at the ban worker to its "
                    + "ban in the XDP maps."),
            buckets: Self.latencyBuckets.map { .nanoseconds(Int64($0 * 1e9)) })
        let unbans = Self.descriptor("portcullis_unbans_total", "Bans lifted, by who lifted them.")
        unbansExpired = registry.makeCounter(descriptor: unbans, labels: [("origin", "expiry")])
        unbansOperator = registry.makeCounter(descriptor: unbans, labels: [("origin", "operator")])
        unbansAggregate = registry.makeCounter(descriptor: unbans, labels: [("origin", "aggregate")])
        registry.makeGauge(
            descriptor: Self.descriptor("portcullis_build_info", "The running build (always 1)."),
            labels: [("version", version), ("abi", "\(PC_ABI_VERSION)")]
        ).set(to: 1)
    }

    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    // MARK: Ban events

    public func publish(_ event: BanEvent) {
        switch event.kind {
        case .ban:
            let count = Int64(event.addresses.count)
            registry.makeCounter(
                descriptor: Self.bans, labels: [("jail", event.jail ?? "manual"), ("origin", event.origin.rawValue)]
            ).increment(by: count)
            if let read = event.readNanoseconds, read > 0, event.monotonicNanoseconds >= read {
                // One observation per ban: every client of the batch waited as long.
                let waited = Duration.nanoseconds(Int64(event.monotonicNanoseconds - read))
                for _ in 0..<count { latency.record(waited) }
            }
        case .unban:
            let counter =
                switch event.origin {
                case .operator: unbansOperator
                case .aggregate: unbansAggregate
                case .expiry, .filter: unbansExpired
                }
            counter.increment(by: Int64(event.addresses.count))
        }
    }

    private static var bans: MetricNameDescriptor {
        descriptor("portcullis_bans_total", "Bans made, by jail (manual: an operator's own) and origin.")
    }

    // MARK: Scrapes

    /// The text exposition of every metric, with the scrape-time ones read from `inputs` (nil: no
    /// daemon runs yet; only the process and the events so far).
    public func render(_ inputs: Inputs?) -> [UInt8] {
        scrape.withLock { state in
            var seen = Set<String>()
            if let inputs { collect(inputs, into: &state, seen: &seen) }
            collectProcess(into: &state, seen: &seen)
            for (key, gauge) in state.gauges where !seen.contains(key) {
                registry.unregisterGauge(gauge)
                state.gauges[key] = nil
            }
            return registry.emitToBuffer()
        }
    }

    /// Counts the bans in force per origin and the entries per family (nil when the maps cannot be read).
    private static func walk(_ maps: BanMaps, at monotonic: UInt64) -> MapWalk? {
        let now = SystemClock.bootNanoseconds()
        guard let entries = try? maps.entries(), let names = try? maps.originNames() else { return nil }
        var byJail: [String: Int] = [:]
        var byFamily: [String: Int] = ["ipv4": 0, "ipv6": 0]
        for entry in entries {
            byFamily[entry.address.family == .ipv4 ? "ipv4" : "ipv6", default: 0] += 1
            if !entry.isExpired(now: now) { byJail[names[entry.origin] ?? "manual", default: 0] += 1 }
        }
        // Prefix and CIDR bans count as one ban each (blocklists are not bans of a jail).
        for entry in (try? maps.networkBans()) ?? [] where !entry.isExpired(now: now) {
            byJail[names[entry.origin] ?? "manual", default: 0] += 1
        }
        return MapWalk(at: monotonic, byJail: byJail, byFamily: byFamily)
    }

    private func collect(_ inputs: Inputs, into state: inout ScrapeState, seen: inout Set<String>) {
        let status = inputs.status
        func count(_ name: String, _ help: String, _ labels: [(String, String)], _ value: UInt64) {
            add(name, help, labels, value, into: &state)
        }
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) {
            set(name, help, labels, value, into: &state, seen: &seen)
        }
        for sample in inputs.samples {
            switch sample.kind {
            case .counter: count(sample.name, sample.help, sample.labels, UInt64(max(sample.value, 0)))
            case .gauge: gauge(sample.name, sample.help, sample.labels, sample.value)
            case .seconds:
                set(sample.name, sample.help, sample.labels, sample.value, into: &state, seen: &seen, kind: .counter)
            }
        }
        for source in status.sources {
            let where_ = ("source", source.label)
            let statistics = source.statistics
            count(
                "portcullis_source_lines_received_total", "Lines the source's transport delivered.", [where_],
                statistics.linesReceived)
            count(
                "portcullis_source_lines_lost_total",
                "Lines the transport knows it lost (lapped shm rings, socket writers that dropped; lossy modes).",
                [where_], statistics.linesLost)
            count(
                "portcullis_source_lines_rejected_total",
                "Lines the transport could not frame (a file's overlong line, one cut by rotation).", [where_],
                statistics.linesRejected)
            count(
                "portcullis_source_writers_refused_total", "Socket writers refused (a user not allowed).", [where_],
                statistics.writersRefused)
            gauge(
                "portcullis_source_degraded",
                "1 when a reload could not open the source (its jails read nothing from it), else 0.", [where_],
                source.degraded == nil ? 0 : 1)
            count(
                "portcullis_source_files_refused_total",
                "Log files refused at the path (a symbolic link, not a regular file, an untrusted owner).", [where_],
                statistics.filesRefused)
            for jail in source.jails {
                let labels = [("jail", jail.name), where_]
                let counters = jail.counters
                count("portcullis_lines_total", "Lines the jail's filter looked at.", labels, counters.lines)
                count(
                    "portcullis_lines_matched_total", "Lines the jail's filter found an offence in.", labels,
                    counters.matched)
                let rejected = "Lines that counted no offence, by why."
                for (reason, value) in [
                    ("not_matching", counters.notMatching), ("ignored", counters.ignored),
                    ("invalid_address", counters.invalidAddress), ("too_long", counters.tooLong),
                    ("match_limit", counters.matchLimit), ("allowlisted", counters.allowlisted),
                    ("table_full", counters.tableFull),
                ] {
                    count("portcullis_lines_rejected_total", rejected, labels + [("reason", reason)], value)
                }
            }
        }
        for jail in status.jails {
            let labels = [("jail", jail.name)]
            // Every jail's bans series exists from the first scrape on (0 until it bans).
            _ = registry.makeCounter(
                descriptor: Self.bans, labels: labels + [("origin", BanEvent.Origin.filter.rawValue)])
            count(
                "portcullis_ban_failures_total", "Clients whose ban failed (the ban map full), each counted once.",
                labels, jail.counters.banFailures)
            count(
                "portcullis_bans_kept_longer_total",
                "Crossings of clients already banned longer (or for good): their ban was left as it was.", labels,
                jail.counters.keptLonger)
            gauge(
                "portcullis_ban_retries_pending", "Bans that failed and wait for their next try.", labels,
                Double(jail.counters.pendingRetries))
        }
        for table in status.tables {
            let labels = [("jail", table.jail)]
            gauge("portcullis_offence_table_bins", "Bins of the jail's offence table.", labels, Double(table.bins))
            gauge(
                "portcullis_offence_table_bins_used", "Bins of the jail's offence table holding a client.", labels,
                Double(table.occupied))
        }
        count(
            "portcullis_offence_table_reclaimed_total", "Table bins new clients took over from stale counts.", [],
            status.tableReclaimed)
        count(
            "portcullis_offence_table_evicted_total", "Table bins new clients took over from live counts.", [],
            status.tableEvicted)
        gauge(
            "portcullis_bans_scheduled",
            "Ban ends the daemon waits for (bans for good not included; one lifted or replaced early counts until that end).",
            [],
            Double(status.scheduledBans))

        // The maps: what is enforced now, whoever wrote it.
        let monotonic = SystemClock.monotonicNanoseconds()
        let fresh = state.mapWalk.map { monotonic - $0.at < Self.mapWalkNanoseconds } ?? false
        if !fresh {
            state.mapWalk = Self.walk(inputs.maps, at: monotonic)
            if state.mapWalk != nil { state.mapWalks += 1 }
        }
        if let walk = state.mapWalk {
            let (byJail, byFamily) = (walk.byJail, walk.byFamily)
            for jail in Set(byJail.keys).union(status.jails.map(\.name)) {
                gauge(
                    "portcullis_bans_in_force",
                    "Bans in the XDP maps not yet ended (addresses and networks), by the jail that made them.",
                    [("jail", jail)], Double(byJail[jail] ?? 0))
            }
            for (family, used) in byFamily {
                gauge(
                    "portcullis_ban_map_entries", "Entries in the ban map of each address family (ended ones too).",
                    [("family", family)], Double(used))
                gauge(
                    "portcullis_ban_map_capacity_entries", "Entries the ban map of each address family holds at most.",
                    [("family", family)], Double(inputs.maps.capacity))
            }
        }
        if let filter = try? inputs.maps.counters() {
            for (verdict, value) in filter.named {
                count(
                    "portcullis_xdp_packets_total",
                    "Packets the XDP filter saw, by verdict (dropped: from a banned source), summed over CPUs.",
                    [("verdict", verdict)], value.packets)
                count(
                    "portcullis_xdp_bytes_total", "Bytes of the packets the XDP filter saw, by verdict.",
                    [("verdict", verdict)], value.bytes)
            }
        }
        // Per origin: series of a named origin exist from its naming on (0 until its bans drop).
        for drops in (try? inputs.maps.dropsByOrigin()) ?? [] {
            let labels = [
                ("origin", drops.kind.rawValue), ("name", drops.name),
                ("family", drops.family == .ipv4 ? "ipv4" : "ipv6"),
            ]
            count(
                "portcullis_dropped_packets_total",
                "Packets the XDP filter dropped, by the origin of the ban (jail, manual, list, crowdsec, fleet; name: "
                    + "the jail, list, CrowdSec origin or fleet host) and the source's family, summed over CPUs.",
                labels, drops.count.packets)
            count(
                "portcullis_dropped_bytes_total", "Bytes of the packets the XDP filter dropped, by origin and family.",
                labels, drops.count.bytes)
        }
        for (name, value) in inputs.control {
            count(
                "portcullis_control_requests_total",
                "Control socket requests (result ok), and those refused, by why.", [("result", name)], value)
        }
        count("portcullis_reloads_total", "Reloads (SIGHUP), by outcome.", [("result", "reloaded")], inputs.reloads)
        count(
            "portcullis_reloads_total", "Reloads (SIGHUP), by outcome.", [("result", "refused")], inputs.reloadsRefused)
    }

    /// The process: the names every Prometheus client library uses.
    private func collectProcess(into state: inout ScrapeState, seen: inout Set<String>) {
        let process = ProcessSample.current()
        set(
            "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", [],
            Double(SystemClock.processCPUNanoseconds()) / 1e9, into: &state, seen: &seen, kind: .counter)
        set(
            "process_resident_memory_bytes", "Resident memory size in bytes.", [], Double(process.residentBytes),
            into: &state, seen: &seen)
        set(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", [], Double(process.virtualBytes),
            into: &state, seen: &seen)
        set(
            "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", [],
            process.startTimeSeconds, into: &state, seen: &seen)
        set(
            "process_open_fds", "Number of open file descriptors.", [], Double(process.openFileDescriptors),
            into: &state, seen: &seen)
        set(
            "process_max_fds", "Maximum number of open file descriptors.", [], Double(process.maximumFileDescriptors),
            into: &state, seen: &seen)
    }

    private enum Kind { case gauge, counter }

    /// A counter series grown to the daemon's `value` (a value lower than the last one: the daemon
    /// counted anew, and all of it is new).
    private func add(
        _ name: String, _ help: String, _ labels: [(String, String)], _ value: UInt64, into state: inout ScrapeState
    ) {
        let key = Self.key(name, labels)
        let last = state.last[key] ?? 0
        let grown = value >= last ? value - last : value
        state.last[key] = value
        let counter = registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
        if grown > 0 { counter.increment(by: Int64(clamping: grown)) }
    }

    /// A gauge series set to `value` (or, for the process' CPU time, a counter the library cannot
    /// set: kept as a gauge series under a counter's name would mislead, so it is grown instead).
    private func set(
        _ name: String, _ help: String, _ labels: [(String, String)], _ value: Double, into state: inout ScrapeState,
        seen: inout Set<String>, kind: Kind = .gauge
    ) {
        let key = Self.key(name, labels)
        switch kind {
        case .gauge:
            let gauge =
                state.gauges[key]
                ?? registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels)
            gauge.set(to: value)
            state.gauges[key] = gauge
            seen.insert(key)
        case .counter:
            let counter = registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels)
            let nanos = UInt64(value * 1e9)
            let last = state.last[key] ?? 0
            if nanos > last { counter.increment(by: Double(nanos - last) / 1e9) }
            state.last[key] = max(nanos, last)
        }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        labels.reduce(name) { $0 + "\u{0}" + $1.0 + "=" + $1.1 }
    }
}

/// What /proc says of this process.
struct ProcessSample {
    var residentBytes: UInt64 = 0
    var virtualBytes: UInt64 = 0
    var startTimeSeconds: Double = 0
    var openFileDescriptors = 0
    var maximumFileDescriptors: UInt64 = 0

    static func current() -> ProcessSample {
        var sample = ProcessSample()
        // /proc/self/stat: the fields after the command's closing parenthesis, from field 3 on.
        if let stat = read("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
            // starttime is field 22, vsize 23, rss 24 (fields[0] is field 3).
            if fields.count > 21, let start = Double(fields[19]), let vsize = UInt64(fields[20]),
                let rss = UInt64(fields[21])
            {
                sample.virtualBytes = vsize
                sample.residentBytes = rss * page
                if let boot = bootTime() { sample.startTimeSeconds = boot + start / ticks }
            }
        }
        sample.openFileDescriptors = Descriptors.openCount() ?? 0
        sample.maximumFileDescriptors = Descriptors.limits.soft
        return sample
    }

    private static func bootTime() -> Double? {
        guard let stat = read("/proc/stat") else { return nil }
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst("btime ".count))
        }
        return nil
    }

    private static func read(_ path: String) -> String? {
        try? TextFile.read(path)
    }
}
