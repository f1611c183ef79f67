// SPDX-License-Identifier: Apache-2.0
import LogTransport
import PortcullisSystem

/// Counters of one ban worker. Kept by that worker; published once per batch under a lock, so a
/// reader always sees one batch's consistent copy.
public struct WorkerCounters: Sendable, Equatable {
    public var lines: UInt64 = 0
    public var matched: UInt64 = 0
    public var notMatching: UInt64 = 0
    public var tooLong: UInt64 = 0
    public var invalidAddress: UInt64 = 0
    public var matchLimit: UInt64 = 0
    /// Lines a filter's ignoreregex kept from counting.
    public var ignored: UInt64 = 0
    public var allowlisted: UInt64 = 0
    public var tableFull: UInt64 = 0
    public var bans: UInt64 = 0
    /// Crossings of clients already banned longer (or for good) by someone else: left as they were.
    public var keptLonger: UInt64 = 0
    /// Clients whose ban failed (a full map), each counted once however often it is retried.
    public var banFailures: UInt64 = 0
    /// Bans that failed and wait for their next try (in this worker).
    public var pendingRetries: UInt64 = 0
    /// CPU time the worker thread used, in nanoseconds (updated once per batch).
    public var cpuNanoseconds: UInt64 = 0
    /// Times the worker thread slept and woke (its context switches), updated once per batch.
    public var wakeups: UInt64 = 0

    public init() {}

    /// Every counter, for sums (a new counter added above must be listed here too).
    nonisolated(unsafe) static let fields: [WritableKeyPath<WorkerCounters, UInt64>] = [
        \.lines, \.matched, \.notMatching, \.tooLong, \.invalidAddress, \.matchLimit, \.ignored, \.allowlisted,
        \.tableFull, \.bans, \.keptLonger, \.banFailures, \.pendingRetries, \.cpuNanoseconds, \.wakeups,
    ]

    static func + (left: WorkerCounters, right: WorkerCounters) -> WorkerCounters {
        var sum = left
        for field in fields { sum[keyPath: field] += right[keyPath: field] }
        return sum
    }
}

/// One jail's counters, summed over the workers of its source.
public struct JailStatus: Sendable {
    public var name: String
    /// `lines` are the lines the jail's filter looked at.
    public var counters: WorkerCounters
}

/// One source's reading: what its transport counted, and what each jail reading it made of its
/// lines.
public struct SourceStatus: Sendable {
    /// `TransportConfiguration.label`: `file:/var/log/auth.log`, `journal:_COMM=sshd`...
    public var label: String
    public var statistics: ReaderStatistics
    /// The jails that read this source, in configuration order, with this source's share of their counters.
    public var jails: [JailStatus]
    /// Why a reload could not open this source (its jails read nothing from it), or nil.
    public var degraded: String? = nil
}

/// One jail's offence table.
public struct TableStatus: Sendable {
    public var jail: String
    public var bins: Int
    public var occupied: UInt64
}

/// A snapshot of the whole daemon.
public struct DaemonStatus: Sendable {
    public var workers: [WorkerCounters]
    /// The CPU each worker is pinned to (nil: not pinned).
    public var workerCPUs: [Int?]
    /// Per jail, in configuration order.
    public var jails: [JailStatus] = []
    /// Per source, in the order of the jails that read them first.
    public var sources: [SourceStatus] = []
    /// Per jail, its table.
    public var tables: [TableStatus] = []
    public var total: WorkerCounters { workers.reduce(WorkerCounters(), +) }
    public var unbans: UInt64
    /// Of the unbans, those the periodic sweep of the maps found rather than the schedule.
    public var sweptUnbans: UInt64
    /// The daemon's bans an operator lifted (their counts started over).
    public var unbannedByOperator: UInt64 = 0
    /// Bans with an end the daemon is waiting for.
    public var scheduledBans: Int
    /// Bins of the offence table in use.
    public var tableBins: UInt64
    /// Bins new clients took over: from stale counts, and from live ones in full windows.
    public var tableReclaimed: UInt64 = 0
    public var tableEvicted: UInt64 = 0
    /// Lines the transport reported lost (lossy modes).
    public var linesLost: UInt64
    /// What the transport refused before a line reached a worker: lines it could not frame (a
    /// file's overlong line, one cut by rotation), writers of untrusted users, files refused at
    /// the log path.
    public var transportRejected: UInt64 = 0
    public var writersRefused: UInt64 = 0
    public var filesRefused: UInt64 = 0
    /// CPU time of the expiry thread (known once it has stopped), in nanoseconds.
    public var expiryCPUNanoseconds: UInt64
    /// Bans that failed (a full map) and wait for their next try.
    public var pendingRetries: UInt64 { workers.reduce(0) { $0 + $1.pendingRetries } }
    /// Seconds since the daemon started.
    public var uptime: Double

    /// The one-line status `--status-interval` prints.
    public func statusLine(previousLines: UInt64, interval: Double) -> String {
        let total = total
        let rate = interval > 0 && total.lines >= previousLines ? Double(total.lines - previousLines) / interval : 0
        return
            "status: \(tenths(uptime)) s, lines \(total.lines) (\(Int(rate.rounded()))/s), matched \(total.matched), "
            + "bans \(total.bans), unbans \(unbans), in force \(scheduledBans), kept (banned longer) \(total.keptLonger), "
            + "not matching \(total.notMatching), invalid address \(total.invalidAddress), too long \(total.tooLong), "
            + "allowlisted \(total.allowlisted), table \(tableBins) bins (\(tableReclaimed) reclaimed, \(tableEvicted) "
            + "evicted), table full \(total.tableFull), "
            + "ban failures \(total.banFailures), lines lost \(linesLost), transport rejected \(transportRejected), "
            + "writers refused \(writersRefused), files refused \(filesRefused)"
    }

    /// The summary printed at exit: totals, then one line per worker.
    public func summaryLines() -> [String] {
        let total = total
        var lines = [
            "stopped after \(tenths(uptime)) s: \(total.lines) lines read, \(total.matched) matched, "
                + "\(total.notMatching) not matching, \(total.invalidAddress) invalid address, \(total.tooLong) too long, "
                + "\(total.matchLimit) over the regex match limit, \(total.ignored) ignored, "
                + "\(total.allowlisted) allowlisted, \(total.bans) bans, \(total.keptLonger) kept (banned longer already), \(unbans) unbans "
                + "(\(sweptUnbans) found by the sweep), \(unbannedByOperator) unbanned by an operator, "
                + "\(total.banFailures) ban failures, \(pendingRetries) bans waiting for a retry, "
                + "\(total.tableFull) table full, \(tableReclaimed) table bins reclaimed, \(tableEvicted) evicted, "
                + "\(linesLost) lines lost, \(transportRejected) rejected by the transport, \(writersRefused) writers "
                + "refused, \(filesRefused) files refused"
        ]
        for jail in jails {
            let counters = jail.counters
            lines.append(
                "jail \(jail.name): \(counters.lines) lines, \(counters.matched) matched, \(counters.ignored) ignored, "
                    + "\(counters.notMatching) not matching, \(counters.invalidAddress) not an address, "
                    + "\(counters.tooLong) too long, \(counters.matchLimit) over the match limit, "
                    + "\(counters.allowlisted) allowlisted, \(counters.bans) bans")
        }
        for (index, worker) in workers.enumerated() {
            let cpu = workerCPUs[index].map { "cpu \($0)" } ?? "unpinned"
            let perLine = worker.lines > 0 ? Double(worker.cpuNanoseconds) / Double(worker.lines) : 0
            lines.append(
                "worker \(index) (\(cpu)): \(worker.lines) lines, \(worker.matched) matched, "
                    + "\(worker.bans) bans, \(tenths(Double(worker.cpuNanoseconds) / 1e9)) s CPU (\(Int(perLine)) ns/line), "
                    + "\(worker.wakeups) wake-ups"
            )
        }
        return lines
    }

    /// The exit summary for scripts (`--summary-json`; the testbed's experiment runner reads it).
    public func summary(cpuSeconds: Double) -> DaemonSummary {
        let total = total
        return DaemonSummary(
            uptimeSeconds: uptime, cpuSeconds: cpuSeconds, lines: total.lines, matched: total.matched,
            notMatching: total.notMatching, invalidAddress: total.invalidAddress, tooLong: total.tooLong,
            allowlisted: total.allowlisted, tableFull: total.tableFull, bans: total.bans, unbans: unbans,
            sweptUnbans: sweptUnbans, banFailures: total.banFailures, pendingRetries: pendingRetries,
            linesLost: linesLost, tableReclaimed: tableReclaimed, tableEvicted: tableEvicted,
            keptLonger: total.keptLonger, unbannedByOperator: unbannedByOperator, transportRejected: transportRejected,
            writersRefused: writersRefused, filesRefused: filesRefused, workers: workers.count,
            ignored: total.ignored, matchLimit: total.matchLimit)
    }

    private func tenths(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

/// The daemon's counters at exit, as JSON (snake_case keys).
public struct DaemonSummary: Encodable, Sendable {
    public let uptimeSeconds: Double
    public let cpuSeconds: Double
    public let lines, matched, notMatching, invalidAddress, tooLong, allowlisted, tableFull: UInt64
    public let bans, unbans, sweptUnbans, banFailures, pendingRetries, linesLost, tableReclaimed, tableEvicted: UInt64
    public let keptLonger, unbannedByOperator, transportRejected, writersRefused, filesRefused: UInt64
    public let workers: Int
    /// Lines an ignoreregex matched, and lines over the regex match limit (as the text summary).
    public let ignored, matchLimit: UInt64

    enum CodingKeys: String, CodingKey {
        case uptimeSeconds = "uptime_seconds", cpuSeconds = "cpu_seconds", lines, matched
        case notMatching = "not_matching", invalidAddress = "invalid_address", tooLong = "too_long", allowlisted
        case tableFull = "table_full", bans, unbans, sweptUnbans = "swept_unbans", banFailures = "ban_failures"
        case pendingRetries = "pending_retries", linesLost = "lines_lost", tableReclaimed = "table_reclaimed"
        case tableEvicted = "table_evicted", keptLonger = "kept_longer", unbannedByOperator = "unbanned_by_operator"
        case transportRejected = "transport_rejected", writersRefused = "writers_refused", filesRefused =
            "files_refused"
        case workers
        case ignored, matchLimit = "match_limit"
    }
}
