// SPDX-License-Identifier: Apache-2.0
import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization

/// One ban worker, on a thread of its own: reads a batch of lines from its reader (one source),
/// scans each with the filter of every jail on that source, counts the offences in each jail's
/// table, and bans the crossings in batches. A log that several jails watch is read once.
final class BanWorker: @unchecked Sendable {
    let index: Int
    let cpu: Int?
    private let reader: LogReader
    /// The jails on this worker's source, with their index in the daemon's jails.
    let jails: [(index: Int, jail: Jail)]
    private let enforcement: Enforcement
    private let clock: DaemonClock
    private let publishers: [BanPublisher]
    /// Per jail: which lines of a syslog source are its (nil: every line, whole).
    private let routes: [SyslogRoute?]
    private let published: Mutex<WorkerSnapshot>
    /// Wake-up moderation (`DaemonConfiguration.wakeDelayMicroseconds`).
    private let wakeDelay: UInt64

    /// A read of fewer lines than this is followed by the wake-up delay: the reader is not busy,
    /// and lines that come meanwhile are read with one wake-up. A read of this many or more goes
    /// on at once (a busy reader never waits).
    static let moderatedBatch = 1024

    /// Crossings collected before a batched map update within one batch of lines: the first client
    /// of a batch of 8,192 lines waits for 256 bans at most.
    static let flushThreshold = 256
    /// Offences scanned (and their bins prefetched) before they are recorded.
    static let prefetchGroup = 16
    /// A ban that failed (a full map) is tried again after this long, doubling while retries
    /// install nothing, up to `longestRetryInterval`.
    static let retryInterval: UInt64 = 1_000_000_000
    static let longestRetryInterval: UInt64 = 32_000_000_000

    /// What the loop carries from batch to batch.
    private struct State {
        /// Lines read, CPU time, retries waiting: the worker's own (the rest is per jail).
        var counters = WorkerCounters()
        /// Crossings of the jail being scanned.
        var crossed: [IPAddress] = []
        /// Per jail, bans that wait for a retry. A set: a client whose ban waits for a retry
        /// crosses again after a ban time (its count restarts), and must not be queued twice.
        var retry: [Set<IPAddress>]
        var lastRetry: UInt64 = 0
        var retryInterval = BanWorker.retryInterval
        /// When the last batch arrived (a ban's line-to-ban latency starts there).
        var readNanoseconds: UInt64 = 0
        /// Per jail: what its filter made of the lines, and its bans.
        let jails: UnsafeMutablePointer<WorkerCounters>

        init(jails: Int) {
            retry = Array(repeating: [], count: jails)
            self.jails = .allocate(capacity: jails)
            self.jails.initialize(repeating: WorkerCounters(), count: jails)
        }
    }

    init(
        index: Int, cpu: Int?, reader: LogReader, jails: [(index: Int, jail: Jail)], routes: [SyslogRoute?]? = nil,
        enforcement: Enforcement, clock: DaemonClock, publishers: [BanPublisher], wakeDelayNanoseconds: UInt64 = 0
    ) {
        wakeDelay = wakeDelayNanoseconds
        self.routes = routes ?? Array(repeating: nil, count: jails.count)
        self.index = index
        self.cpu = cpu
        self.reader = reader
        self.jails = jails
        self.enforcement = enforcement
        self.clock = clock
        self.publishers = publishers
        published = Mutex(WorkerSnapshot(jails: jails.count))
    }

    /// The counters as of the last batch: the worker's (line outcomes summed over its jails), and
    /// each jail's.
    var snapshot: WorkerSnapshot { published.withLock { $0 } }
    var counters: WorkerCounters { snapshot.total }

    /// The worker's loop, until `isStopping` says so.
    /// - Parameter started: called once the thread is pinned and about to read.
    func run(isStopping: () -> Bool, started: () -> Void) {
        if let cpu { try? SystemThread.pinCurrent(to: cpu) }
        let filters = jails.indices.map { jails[$0].jail.makeFilter(route: routes[$0]) }
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        let pending = UnsafeMutablePointer<IPAddress>.allocate(capacity: Self.prefetchGroup)
        var state = State(jails: jails.count)
        defer {
            pending.deallocate()
            state.jails.deallocate()
        }
        started()
        while !isStopping() {
            let received = receive(into: batch)
            if received > 0 { state.readNanoseconds = SystemClock.monotonicNanoseconds() }
            let bansBefore = state.counters.bans
            if received > 0 {
                state.counters.lines += UInt64(received)
                for jail in 0..<jails.count {
                    scan(batch, jail: jail, filter: filters[jail], pending: pending, state: &state)
                    if !state.crossed.isEmpty { installCrossings(jail: jail, &state) }
                }
            }
            retryFailed(&state)
            let waiting = UInt64(state.retry.reduce(0) { $0 + $1.count })
            if received > 0 || state.counters.bans != bansBefore || waiting != state.counters.pendingRetries {
                state.counters.pendingRetries = waiting
                publish(&state)
            }
            // Little came: let more gather before the next read instead of waking for each line.
            if received > 0 && received < Self.moderatedBatch && wakeDelay > 0 {
                SystemClock.sleep(nanoseconds: wakeDelay)
            }
        }
        publish(&state)
    }

    /// Waits up to 100 ms for lines. A transport error (a socket gone bad) must not end the
    /// daemon: the worker tries again shortly.
    private func receive(into batch: LineBatch) -> Int {
        batch.removeAll()
        do {
            return try reader.wait(into: batch, timeoutMilliseconds: 100)
        } catch {
            SystemClock.sleep(nanoseconds: 10_000_000)
            return 0
        }
    }

    /// Scans a group of lines and prefetches their table bins, then records them: the bins' cache
    /// misses overlap (measured: see BUILD.md, pipeline suite).
    private func scan(
        _ batch: LineBatch, jail index: Int, filter: LineFilter, pending: UnsafeMutablePointer<IPAddress>,
        state: inout State
    ) {
        let now = clock.tableNow
        // Finer than the table's seconds (about a millisecond): which equal counts went quiet first.
        let stamp = UInt32(truncatingIfNeeded: SystemClock.monotonicNanoseconds() >> 20)
        let jail = jails[index].jail
        let allowlist = jail.allowlist
        let aggregation = jail.configuration.aggregation
        let table = jail.table
        let counters = state.jails + index
        counters.pointee.lines += UInt64(batch.count)
        var pendingCount = 0
        batch.forEachLine { whole in
            var line = whole
            if let route = filter.route {
                // Another jail's syslog line: not this jail's to look at.
                guard let routed = route.select(whole) else {
                    counters.pointee.lines -= 1
                    return
                }
                line = routed
            }
            switch filter.scan(line) {
            case .offence(let address):
                counters.pointee.matched += 1
                if address.isNeverBannable || allowlist.contains(address) {
                    counters.pointee.allowlisted += 1
                    return
                }
                // Counted (and banned) as its network when the jail says so.
                let counted = aggregation.counted(address)
                table.prefetch(counted)
                pending[pendingCount] = counted
                pendingCount += 1
                if pendingCount == Self.prefetchGroup {
                    record(pending, pendingCount, jail: index, now: now, stamp: stamp, state: &state)
                    pendingCount = 0
                }
            case .notMatching: counters.pointee.notMatching += 1
            case .tooLong: counters.pointee.tooLong += 1
            case .invalidAddress: counters.pointee.invalidAddress += 1
            case .matchLimit: counters.pointee.matchLimit += 1
            case .ignored: counters.pointee.ignored += 1
            }
        }
        record(pending, pendingCount, jail: index, now: now, stamp: stamp, state: &state)
    }

    /// Records `count` offences in the table; crossings are collected and, past `flushThreshold`,
    /// installed.
    @inline(__always)
    private func record(
        _ addresses: UnsafeMutablePointer<IPAddress>, _ count: Int, jail: Int, now: UInt32, stamp: UInt32,
        state: inout State
    ) {
        let table = jails[jail].jail.table
        for index in 0..<count {
            switch table.record(addresses[index], now: now, stamp: stamp) {
            case .crossed:
                state.crossed.append(addresses[index])
                if state.crossed.count >= Self.flushThreshold { installCrossings(jail: jail, &state) }
            case .full: state.jails[jail].tableFull += 1
            case .counted: break
            }
        }
    }

    /// Bans that failed join the next installation a second after the first failure.
    private func retryFailed(_ state: inout State) {
        let now = SystemClock.monotonicNanoseconds()
        if state.retry.allSatisfy(\.isEmpty) {
            state.lastRetry = now  // the first retry comes a second after a failure
            state.retryInterval = Self.retryInterval
        } else if now - state.lastRetry > state.retryInterval {
            state.lastRetry = now
            var installed = false
            for jail in 0..<jails.count where !state.retry[jail].isEmpty {
                state.crossed = Array(state.retry[jail])  // they stay in `retry` until they go in
                let before = state.counters.bans
                installCrossings(jail: jail, &state)
                installed = installed || state.counters.bans != before
            }
            // Nothing went in: the map is still full; wait longer before the next try.
            state.retryInterval =
                installed ? Self.retryInterval : min(state.retryInterval * 2, Self.longestRetryInterval)
        }
    }

    /// Installs the crossings collected; those that fail (a full map) wait for a retry, their
    /// counts at the threshold (nothing is lost); each client's failure is counted once.
    private func installCrossings(jail index: Int, _ state: inout State) {
        do {
            let jail = jails[index].jail
            let result = enforcement.install(state.crossed, jail: jail, clock: clock)
            let counters = state.jails + index
            for address in result.failed where state.retry[index].insert(address).inserted {
                counters.pointee.banFailures += 1
            }
            if !state.retry[index].isEmpty {
                for address in result.banned { state.retry[index].remove(address) }
                for address in result.kept { state.retry[index].remove(address) }
            }
            state.counters.bans += UInt64(result.banned.count)
            counters.pointee.bans += UInt64(result.banned.count)
            counters.pointee.keptLonger += UInt64(result.kept.count)
            if !result.banned.isEmpty {
                let event = BanEvent(
                    kind: .ban, origin: .filter, addresses: result.banned,
                    monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: jail.name, seconds: result.seconds,
                    readNanoseconds: state.readNanoseconds, prefixLengths: result.prefixLengths, levels: result.levels)
                for publisher in publishers { publisher.publish(event) }
                if let aggregator = jail.aggregator { aggregate(result, jail: jail, aggregator: aggregator) }
            }
        }
        // After the result (which may share its storage) is gone: emptied in place, not copied.
        state.crossed.removeAll(keepingCapacity: true)
    }

    /// Bans the prefixes whose members' bans now number the jail's `aggregate-v4`/`-v6`, and
    /// lifts the members' own bans (the ban log says both).
    private func aggregate(_ result: Enforcement.Installed, jail: Jail, aggregator: BanAggregator) {
        let now = clock.bootNow
        let bans = result.banned.indices.map { index in
            (
                network: IPNetwork(containing: result.banned[index], length: result.prefixLengths[index]),
                expiry: BanPolicy.expiry(seconds: result.seconds[index], now: now)
            )
        }
        for prefix in aggregator.record(bans, now: now) where enforcement.aggregate(prefix, jail: jail) {
            let seconds: UInt64
            if case .at(let end) = prefix.expiry { seconds = max((end &- now) / 1_000_000_000, 1) } else { seconds = 0 }
            let clock = SystemClock.monotonicNanoseconds()
            let ban = BanEvent(
                kind: .ban, origin: .filter, addresses: [prefix.network.address], monotonicNanoseconds: clock,
                jail: jail.name, seconds: [seconds], prefixLengths: [prefix.network.length])
            let lifted = BanEvent(
                kind: .unban, origin: .aggregate, addresses: prefix.members.map(\.address), monotonicNanoseconds: clock,
                prefixLengths: prefix.members.map(\.length),
                liftedJails: Array(repeating: jail.name, count: prefix.members.count))
            for publisher in publishers {
                publisher.publish(ban)
                publisher.publish(lifted)
            }
        }
    }

    private func publish(_ state: inout State) {
        state.counters.cpuNanoseconds = SystemClock.threadCPUNanoseconds()
        state.counters.wakeups = SystemClock.threadContextSwitches()
        let snapshot = WorkerSnapshot(
            worker: state.counters, jails: Array(UnsafeBufferPointer(start: state.jails, count: jails.count)))
        published.withLock { $0 = snapshot }
    }
}

/// A worker's counters as published: its own, and each of its jails'.
struct WorkerSnapshot: Sendable {
    /// Lines read, bans, CPU time and retries waiting (the line outcomes are the jails').
    var worker = WorkerCounters()
    var jails: [WorkerCounters]

    init(jails: Int) {
        self.jails = Array(repeating: WorkerCounters(), count: jails)
    }

    init(worker: WorkerCounters, jails: [WorkerCounters]) {
        self.worker = worker
        self.jails = jails
    }

    /// The worker's counters with its jails' outcomes summed (with several jails on one source, a
    /// line has an outcome in each).
    var total: WorkerCounters {
        var total = jails.reduce(WorkerCounters(), +)
        total.lines = worker.lines
        total.cpuNanoseconds = worker.cpuNanoseconds
        total.wakeups = worker.wakeups
        total.pendingRetries = worker.pendingRetries
        return total
    }
}
