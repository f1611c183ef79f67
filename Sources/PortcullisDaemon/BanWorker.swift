import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization

/// One ban worker, on a thread of its own: reads a batch of lines from its reader, scans each with
/// its jail's filter, counts the offences in the jail's table, and bans the crossings in batches.
final class BanWorker: @unchecked Sendable {
    let index: Int
    let cpu: Int?
    private let reader: LogReader
    private let jail: Jail
    private let enforcement: Enforcement
    private let clock: DaemonClock
    private let publishers: [BanPublisher]
    private let published = Mutex(WorkerCounters())

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
        var counters = WorkerCounters()
        var crossed: [IPAddress] = []
        /// A set: a client whose ban waits for a retry crosses again after a ban time (its count
        /// restarts), and must not be queued twice.
        var retry = Set<IPAddress>()
        var lastRetry: UInt64 = 0
        var retryInterval = BanWorker.retryInterval
        /// Whether the crossings being installed are (also) retries.
        var retrying = false
    }

    init(
        index: Int, cpu: Int?, reader: LogReader, jail: Jail, enforcement: Enforcement, clock: DaemonClock,
        publishers: [BanPublisher]
    ) {
        self.index = index
        self.cpu = cpu
        self.reader = reader
        self.jail = jail
        self.enforcement = enforcement
        self.clock = clock
        self.publishers = publishers
    }

    /// The counters as of the last batch.
    var counters: WorkerCounters { published.withLock { $0 } }

    /// The worker's loop, until `isStopping` says so.
    /// - Parameter started: called once the thread is pinned and about to read.
    func run(isStopping: () -> Bool, started: () -> Void) {
        if let cpu { try? SystemThread.pinCurrent(to: cpu) }
        let filter = jail.makeFilter()
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        let pending = UnsafeMutablePointer<IPAddress>.allocate(capacity: Self.prefetchGroup)
        defer { pending.deallocate() }
        var state = State()
        started()
        while !isStopping() {
            let received = receive(into: batch)
            if received > 0 {
                state.counters.lines += UInt64(received)
                scan(batch, filter: filter, pending: pending, state: &state)
            }
            retryFailed(&state)
            if !state.crossed.isEmpty { installCrossings(&state) }
            state.counters.pendingRetries = UInt64(state.retry.count)
            let before = counters
            if received > 0 || state.counters.bans != before.bans
                || state.counters.pendingRetries != before.pendingRetries
            {
                publish(&state.counters)
            }
        }
        publish(&state.counters)
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
        _ batch: LineBatch, filter: LineFilter, pending: UnsafeMutablePointer<IPAddress>,
        state: inout State
    ) {
        let now = clock.tableNow
        // Finer than the table's seconds (about a millisecond): which equal counts went quiet first.
        let stamp = UInt32(truncatingIfNeeded: SystemClock.monotonicNanoseconds() >> 20)
        let allowlist = jail.allowlist
        let table = jail.table
        var pendingCount = 0
        batch.forEachLine { line in
            switch filter.scan(line) {
            case .offence(let address):
                state.counters.matched += 1
                if address.isNeverBannable || allowlist.contains(address) {
                    state.counters.allowlisted += 1
                    return
                }
                table.prefetch(address)
                pending[pendingCount] = address
                pendingCount += 1
                if pendingCount == Self.prefetchGroup {
                    record(pending, pendingCount, now: now, stamp: stamp, state: &state)
                    pendingCount = 0
                }
            case .notMatching: state.counters.notMatching += 1
            case .tooLong: state.counters.tooLong += 1
            case .invalidAddress: state.counters.invalidAddress += 1
            case .matchLimit: state.counters.matchLimit += 1
            case .ignored: state.counters.ignored += 1
            }
        }
        record(pending, pendingCount, now: now, stamp: stamp, state: &state)
    }

    /// Records `count` offences in the table; crossings are collected and, past `flushThreshold`,
    /// installed.
    @inline(__always)
    private func record(
        _ addresses: UnsafeMutablePointer<IPAddress>, _ count: Int, now: UInt32, stamp: UInt32, state: inout State
    ) {
        let table = jail.table
        for index in 0..<count {
            switch table.record(addresses[index], now: now, stamp: stamp) {
            case .crossed:
                state.crossed.append(addresses[index])
                if state.crossed.count >= Self.flushThreshold { installCrossings(&state) }
            case .full: state.counters.tableFull += 1
            case .counted: break
            }
        }
    }

    /// Bans that failed join the next installation a second after the first failure.
    private func retryFailed(_ state: inout State) {
        let now = SystemClock.monotonicNanoseconds()
        if state.retry.isEmpty {
            state.lastRetry = now  // the first retry comes a second after a failure
            state.retryInterval = Self.retryInterval
        } else if now - state.lastRetry > state.retryInterval {
            state.lastRetry = now
            state.crossed += Array(state.retry)  // they stay in `retry` until they go in
            state.retrying = true
        }
    }

    /// Installs the crossings collected; those that fail (a full map) wait for a retry, their
    /// counts at the threshold (nothing is lost); each client's failure is counted once.
    private func installCrossings(_ state: inout State) {
        do {
            let result = enforcement.install(state.crossed, policy: jail.policy, clock: clock)
            for address in result.failed where state.retry.insert(address).inserted {
                state.counters.banFailures += 1
            }
            for address in result.banned { state.retry.remove(address) }
            for address in result.kept { state.retry.remove(address) }
            if state.retrying {
                // Nothing went in: the map is still full; wait longer before the next try.
                state.retryInterval =
                    result.banned.isEmpty ? min(state.retryInterval * 2, Self.longestRetryInterval) : Self.retryInterval
                state.retrying = false
            }
            state.counters.bans += UInt64(result.banned.count)
            state.counters.keptLonger += UInt64(result.kept.count)
            if !result.banned.isEmpty {
                let event = BanEvent(
                    kind: .ban, addresses: result.banned, monotonicNanoseconds: SystemClock.monotonicNanoseconds())
                for publisher in publishers { publisher.publish(event) }
            }
        }
        // After the result (which may share its storage) is gone: emptied in place, not copied.
        state.crossed.removeAll(keepingCapacity: true)
    }

    private func publish(_ counters: inout WorkerCounters) {
        counters.cpuNanoseconds = SystemClock.threadCPUNanoseconds()
        let snapshot = counters
        published.withLock { $0 = snapshot }
    }
}
