import BanEngine
import CPortcullis
import Glibc
import LogTransport
import XDPFirewall

/// Counters of one ban worker. Written by that worker only; read by anyone (64-bit loads).
public struct WorkerCounters: Sendable, Equatable {
    public var lines: UInt64 = 0
    public var matched: UInt64 = 0
    public var notMatching: UInt64 = 0
    public var tooLong: UInt64 = 0
    public var invalidAddress: UInt64 = 0
    public var matchLimit: UInt64 = 0
    public var allowlisted: UInt64 = 0
    public var tableFull: UInt64 = 0
    public var bans: UInt64 = 0
    public var banFailures: UInt64 = 0
    /// Bans that failed and wait for their next try (in this worker).
    public var pendingRetries: UInt64 = 0
    /// CPU time the worker thread used, in nanoseconds (updated once per batch).
    public var cpuNanoseconds: UInt64 = 0

    public init() {}

    /// Every counter, for sums (a new counter added above must be listed here too).
    nonisolated(unsafe) static let fields: [WritableKeyPath<WorkerCounters, UInt64>] = [
        \.lines, \.matched, \.notMatching, \.tooLong, \.invalidAddress, \.matchLimit, \.allowlisted,
        \.tableFull, \.bans, \.banFailures, \.pendingRetries, \.cpuNanoseconds,
    ]

    static func + (left: WorkerCounters, right: WorkerCounters) -> WorkerCounters {
        var sum = left
        for field in fields { sum[keyPath: field] += right[keyPath: field] }
        return sum
    }
}

/// A snapshot of the whole daemon.
public struct DaemonStatus: Sendable {
    public var workers: [WorkerCounters]
    public var total: WorkerCounters { workers.reduce(WorkerCounters(), +) }
    public var unbans: UInt64
    /// Of the unbans, those the periodic sweep of the maps found rather than the schedule.
    public var sweptUnbans: UInt64
    /// Bans with an end the daemon is waiting for.
    public var scheduledBans: Int
    /// Bins of the offence table in use.
    public var tableBins: UInt64
    /// Lines the transport reported lost (lossy modes).
    public var linesLost: UInt64
    /// CPU time of the expiry thread (known once it has stopped), in nanoseconds.
    public var expiryCPUNanoseconds: UInt64
    /// Bans that failed (a full map) and wait for their next try.
    public var pendingRetries: UInt64 { workers.reduce(0) { $0 + $1.pendingRetries } }
    /// Seconds since the daemon started.
    public var uptime: Double
}

/// The daemon's engine: ban workers reading lines from the transport, counting offences in one
/// offence table, banning into the pinned BPF maps in batches; an expiry thread lifting bans in
/// batches when they end. Interface attachment is the caller's business (it only needs the maps).
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    let maps: BanMaps
    let table: OffenceTable
    let schedule = ExpirySchedule()
    private var workers: [BanWorker] = []
    private var threads: [pthread_t] = []
    private let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    private let unbanCount = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Of those, bans the 10 s sweep found (not on the schedule: an operator's, or a lost end).
    private let sweptCount = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let expiryCPU = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Held while bans are installed and while the expiry thread lifts: a lift looks a ban up,
    /// finds it ended, then deletes it; a worker re-banning the client in between (its offences
    /// since the end crossed the threshold again) would see its new ban deleted with the old.
    let banMapLock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Tests only: a pause between a lift's look-ups and its delete, to widen that window.
    var liftPauseMicroseconds: UInt32 = 0
    private let startNanoseconds = monotonicNanoseconds()
    private var readersToClose: [LogReader] = []
    /// Lines the transport reported lost, kept when the readers close at stop.
    private var linesLostAtStop: UInt64 = 0
    private var shmReader: ShmReader?
    /// Remarks for the operator about how the settings were applied.
    public private(set) var notes: [String] = []
    /// Bans found in the maps at start and resumed (their expiry scheduled, their counts set).
    public private(set) var resumedBans = 0
    /// Called after each batch of bans is installed, with the clients and the time (monotonic ns);
    /// the pipeline benchmark measures line-to-ban latency with it. Set before `start()`.
    public var banObserver: (@Sendable ([AddressKey], UInt64) -> Void)?
    /// Where bans and lifts are logged (`--ban-log`); set before `start()`.
    public var banLog: BanLog?

    /// Prepares everything (table, readers, resumed bans) without starting threads.
    public init(configuration: DaemonConfiguration, maps: BanMaps) throws(DaemonError) {
        try configuration.validate()
        self.configuration = configuration
        self.maps = maps
        var node = configuration.numaNode
        if node == nil, let cpu = configuration.cpus.first, numa_available() >= 0 {
            node = Int(numa_node_of_cpu(Int32(cpu)))
        }
        do {
            table = try OffenceTable(bins: configuration.tableBins, threshold: configuration.threshold,
                                     findTime: configuration.findTime,
                                     banTime: UInt32(clamping: configuration.banTime), numaNode: node)
        } catch {
            throw .invalidSetting(error.description)
        }
        stopFlag.initialize(to: 0)
        pthread_mutex_init(banMapLock, nil)
        unbanCount.initialize(to: 0)
        sweptCount.initialize(to: 0)
        expiryCPU.initialize(to: 0)
        try resumeBans()
        try makeWorkers()
    }

    deinit {
        stop()
        stopFlag.deallocate()
        unbanCount.deallocate()
        sweptCount.deallocate()
        expiryCPU.deallocate()
        pthread_mutex_destroy(banMapLock)
        banMapLock.deallocate()
    }

    /// Seconds on the table's clock: since the daemon started, on CLOCK_BOOTTIME like the bans'
    /// ends, so that a ban's end can be placed on it (also across a suspend).
    var tableClock: UInt32 { tableSecond(ofBootTime: BootClock.nanoseconds()) }
    private let startBootNanoseconds = BootClock.nanoseconds()

    /// The table-clock second of a CLOCK_BOOTTIME time (0 for a time before the start).
    func tableSecond(ofBootTime time: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: (time > startBootNanoseconds ? time - startBootNanoseconds : 0) / 1_000_000_000)
    }

    /// Bans already in the maps (a restart): keep enforcing them, and end them when they end.
    private func resumeBans() throws(DaemonError) {
        let entries: [BanEntry]
        do {
            entries = try maps.entries()
        } catch {
            throw .firewall("read the pinned bans: \(error)")
        }
        for entry in entries {
            let key = AddressKey(entry.address)
            if case .at(let end) = entry.expiry {
                let now = tableClock
                table.markBanned(key, now: now, remaining: tableSecond(ofBootTime: end) &- now)
                schedule.add(key, end: end)
            } else {
                table.markBanned(key, now: tableClock)
            }
            resumedBans += 1
        }
    }

    private func makeWorkers() throws(DaemonError) {
        var count = configuration.workers
        var receivers: [LineSource] = []
        do throws(TransportError) {
            switch configuration.transport.kind {
            case .shm:
                let reader = try ShmReader(options: configuration.transport.shm, policy: .block,
                                           workloadStealing: configuration.transport.workloadStealing)
                shmReader = reader
                readersToClose.append(reader)
                for index in 0..<count { receivers.append(.shm(reader, worker: index, workers: count)) }
            case .socket:
                let primary = try SocketReader(options: configuration.transport.socket, policy: .block)
                readersToClose.append(primary)
                var readers = [primary]
                for _ in 1..<max(count, 1) {
                    let shared = try SocketReader(sharing: primary)
                    readersToClose.append(shared)
                    readers.append(shared)
                }
                receivers += readers.map { .reader($0) }
            case .file:
                if count > 1 {
                    notes.append("file transport: one worker tails the file (--workers \(count) applies to shm and socket)")
                    count = 1
                }
                let reader = try FileReader(options: configuration.transport.file)
                readersToClose.append(reader)
                receivers.append(.reader(reader))
            }
        } catch {
            for reader in readersToClose { reader.close() }
            throw .transport(error)
        }
        let regexes: [FailRegex]
        do {
            regexes = try configuration.failRegexes.map { pattern throws(FailRegexError) in try FailRegex(pattern) }
        } catch {
            throw .invalidSetting(error.description)
        }
        for index in 0..<count {
            let cpu = configuration.cpus.isEmpty ? nil : configuration.cpus[index % configuration.cpus.count]
            workers.append(BanWorker(index: index, cpu: cpu, daemon: self, source: receivers[index], regexes: regexes))
        }
    }

    var isStopping: Bool { cportcullis_load_acquire_u32(stopFlag) != 0 }

    /// Starts the workers and the expiry thread; returns once every worker is reading.
    public func start() {
        let running = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        running.initialize(to: 0)
        defer { running.deallocate() }
        nonisolated(unsafe) let counter = running
        for worker in workers {
            threads.append(spawn {
                worker.run(started: { _ = cportcullis_fetch_add_seq_cst_u32(counter, 1) })
            })
        }
        // Unowned: the daemon may be released without stop(); its deinit stops and joins this thread.
        threads.append(spawn { [unowned self] in runExpiry() })
        while cportcullis_load_acquire_u32(running) < UInt32(workers.count) { sched_yield() }
    }

    /// Stops and joins every thread (each notices within ~100 ms) and detaches from the transport.
    public func stop() {
        guard cportcullis_load_acquire_u32(stopFlag) == 0 else { return }
        cportcullis_store_release_u32(stopFlag, 1)
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
        linesLostAtStop = readersToClose.reduce(0) { $0 + $1.statistics.linesLost }
        for reader in readersToClose { reader.close() }
        readersToClose.removeAll()
    }

    /// Counters now.
    public var status: DaemonStatus {
        DaemonStatus(workers: workers.map(\.counters), unbans: cportcullis_load_acquire_u64(unbanCount),
                     sweptUnbans: cportcullis_load_acquire_u64(sweptCount),
                     scheduledBans: schedule.count, tableBins: table.occupied,
                     linesLost: linesLostAtStop + readersToClose.reduce(0) { $0 + $1.statistics.linesLost },
                     expiryCPUNanoseconds: cportcullis_load_acquire_u64(expiryCPU),
                     uptime: Double(monotonicNanoseconds() - startNanoseconds) / 1e9)
    }

    /// The one-line status `--status-interval` prints.
    public func statusLine(previousLines: UInt64, interval: Double) -> String {
        let status = status
        let total = status.total
        let rate = interval > 0 ? Double(total.lines &- previousLines) / interval : 0
        return "status: \(format(status.uptime)) s, lines \(total.lines) (\(Int(rate))/s), matched \(total.matched), "
            + "bans \(total.bans), unbans \(status.unbans), in force \(status.scheduledBans), "
            + "not matching \(total.notMatching), invalid address \(total.invalidAddress), too long \(total.tooLong), "
            + "allowlisted \(total.allowlisted), table \(status.tableBins) bins, table full \(total.tableFull), "
            + "ban failures \(total.banFailures), lines lost \(status.linesLost)"
    }

    /// The summary printed at exit: totals, then one line per worker.
    public func summaryLines() -> [String] {
        let status = status
        let total = status.total
        var lines = ["stopped after \(format(status.uptime)) s: \(total.lines) lines read, \(total.matched) matched, "
            + "\(total.notMatching) not matching, \(total.invalidAddress) invalid address, \(total.tooLong) too long, "
            + "\(total.matchLimit) over the regex match limit, \(total.allowlisted) allowlisted, "
            + "\(total.bans) bans, \(status.unbans) unbans (\(status.sweptUnbans) found by the sweep), "
            + "\(total.banFailures) ban failures, \(status.pendingRetries) bans waiting for a retry, "
            + "\(total.tableFull) table full, \(status.linesLost) lines lost"]
        for (index, worker) in status.workers.enumerated() {
            let cpu = workers[index].cpu.map { "cpu \($0)" } ?? "unpinned"
            let perLine = worker.lines > 0 ? Double(worker.cpuNanoseconds) / Double(worker.lines) : 0
            lines.append("worker \(index) (\(cpu)): \(worker.lines) lines, \(worker.matched) matched, "
                + "\(worker.bans) bans, \(format(Double(worker.cpuNanoseconds) / 1e9)) s CPU (\(Int(perLine)) ns/line)")
        }
        return lines
    }

    // MARK: Expiry

    /// Deletes the bans of `keys` that have really ended (an operator may have banned a client
    /// again, longer or for good, since) and resets their counts; a ban already gone (`portcullis
    /// unban`) just resets. Works in chunks, each under `banMapLock`, so that workers installing
    /// bans wait for one chunk at most. - Returns: bans deleted.
    private func lift(_ keys: [AddressKey]) -> UInt64 {
        var removed: UInt64 = 0
        var start = 0
        while start < keys.count {
            let chunk = keys[start..<min(start + Self.liftChunk, keys.count)]
            start += chunk.count
            var ended: [(key: AddressKey, end: UInt64)] = []
            pthread_mutex_lock(banMapLock)
            for key in chunk {
                switch Result(catching: { () throws(FirewallError) in try maps.lookup(key.ipAddress) }) {
                case .success(let entry?) where entry.isExpired(now: BootClock.nanoseconds()):
                    if case .at(let end) = entry.expiry { ended.append((key, end)) }
                case .success(nil):
                    table.reset(key)
                default:
                    continue
                }
            }
            if liftPauseMicroseconds > 0 { usleep(liftPauseMicroseconds) }
            let deleted = (try? maps.unban(batch: ended.map(\.key.ipAddress))) ?? 0
            // Only the count of the ban that ended: one that restarted, or crossed again, since
            // its end is kept.
            for (key, end) in ended { table.resetEnded(key, endedAt: tableSecond(ofBootTime: end)) }
            pthread_mutex_unlock(banMapLock)
            removed += UInt64(deleted)
            if deleted > 0 { banLog?.record("unban", ended.map(\.key)) }
        }
        return removed
    }

    /// Keys a lift handles per hold of `banMapLock`.
    static let liftChunk = 512

    /// Lifts due bans in batches every 100 ms, resets their counts, and every 10 s sweeps the maps
    /// for expired bans the schedule does not know (an operator's `portcullis ban --for`).
    private func runExpiry() {
        var lastSweep = monotonicNanoseconds()
        while !isStopping {
            var pause = timespec(tv_sec: 0, tv_nsec: 100_000_000)
            nanosleep(&pause, nil)
            let now = BootClock.nanoseconds()
            let scheduled = schedule.takeDue(now: now)
            if !scheduled.isEmpty { _ = cportcullis_fetch_add_u64(unbanCount, lift(scheduled)) }
            if monotonicNanoseconds() - lastSweep > 10_000_000_000 {
                lastSweep = monotonicNanoseconds()
                if let entries = try? maps.entries() {
                    let swept = entries.filter { $0.isExpired(now: now) }.map { AddressKey($0.address) }
                    if !swept.isEmpty {
                        let removed = lift(swept)
                        _ = cportcullis_fetch_add_u64(unbanCount, removed)
                        _ = cportcullis_fetch_add_u64(sweptCount, removed)
                    }
                }
            }
        }
        cportcullis_store_release_u64(expiryCPU, threadCPUNanoseconds())
    }
}

/// One ban worker: reads batches of lines, scans them, counts offences, bans crossings in batches.
final class BanWorker: @unchecked Sendable {
    let index: Int
    let cpu: Int?
    unowned let daemon: Daemon
    let source: LineSource
    let matchers: [FailRegex.Matcher]
    private let shared = UnsafeMutablePointer<WorkerCounters>.allocate(capacity: 1)

    /// Crossings collected before a batched map update within one batch of lines.
    static let flushThreshold = 256

    init(index: Int, cpu: Int?, daemon: Daemon, source: LineSource, regexes: [FailRegex]) {
        self.index = index
        self.cpu = cpu
        self.daemon = daemon
        self.source = source
        matchers = regexes.map { FailRegex.Matcher($0) }
        shared.initialize(to: WorkerCounters())
    }

    deinit { shared.deallocate() }

    var counters: WorkerCounters { shared.pointee }

    /// - Parameter started: called once the thread is pinned and about to read.
    func run(started: () -> Void) {
        if let cpu { cportcullis_pin_thread(Int32(cpu)) }
        let scanner = LineScanner(maxLineLength: daemon.configuration.maxLineLength)
        let allowlist = daemon.configuration.allowlist
        let table = daemon.table
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        let pending = UnsafeMutablePointer<AddressKey>.allocate(capacity: Self.prefetchGroup)
        defer { pending.deallocate() }
        var counters = WorkerCounters()
        var crossed: [AddressKey] = []
        // A set: a client whose ban waits for a retry crosses again after a ban time (its count
        // restarts), and must not be queued twice.
        var retry = Set<AddressKey>()
        var lastRetry: UInt64 = 0
        started()
        while !daemon.isStopping {
            batch.removeAll()
            let received: Int
            do {
                received = try source.receive(into: batch, timeoutMilliseconds: 100)
            } catch {
                // A transport error (a socket gone bad) must not end the daemon; try again shortly.
                var pause = timespec(tv_sec: 0, tv_nsec: 10_000_000)
                nanosleep(&pause, nil)
                continue
            }
            if received > 0 {
                let now = daemon.tableClock
                counters.lines += UInt64(received)
                // Scan a group of lines and prefetch their table bins, then record them: the bins'
                // cache misses overlap (measured: see BUILD.md, pipeline suite).
                var pendingCount = 0
                batch.forEachLine { line in
                    var outcome = ScanOutcome.notMatching
                    if matchers.isEmpty {
                        outcome = scanner.scan(line)
                    } else if line.count > scanner.maxLineLength {
                        outcome = .tooLong
                    } else {
                        for matcher in matchers {
                            outcome = matcher.scan(line)
                            if outcome != .notMatching { break }
                        }
                    }
                    switch outcome {
                    case .offence(let key):
                        counters.matched += 1
                        if allowlist.contains(key) {
                            counters.allowlisted += 1
                            return
                        }
                        table.prefetch(key)
                        pending[pendingCount] = key
                        pendingCount += 1
                        if pendingCount == Self.prefetchGroup {
                            record(pending, pendingCount, now: now, counters: &counters, crossed: &crossed, retry: &retry)
                            pendingCount = 0
                        }
                    case .notMatching: counters.notMatching += 1
                    case .tooLong: counters.tooLong += 1
                    case .invalidAddress: counters.invalidAddress += 1
                    case .matchLimit: counters.matchLimit += 1
                    }
                }
                record(pending, pendingCount, now: now, counters: &counters, crossed: &crossed, retry: &retry)
            }
            if retry.isEmpty {
                lastRetry = monotonicNanoseconds()  // the first retry comes a second after a failure
            } else if monotonicNanoseconds() - lastRetry > 1_000_000_000 {
                lastRetry = monotonicNanoseconds()
                crossed += Array(retry)
                retry.removeAll()
            }
            if !crossed.isEmpty {
                install(crossed, counters: &counters, retry: &retry)
                crossed.removeAll(keepingCapacity: true)
            }
            counters.pendingRetries = UInt64(retry.count)
            if received > 0 || counters.bans != shared.pointee.bans || counters.pendingRetries != shared.pointee.pendingRetries {
                counters.cpuNanoseconds = threadCPUNanoseconds()
                shared.pointee = counters
            }
        }
        counters.cpuNanoseconds = threadCPUNanoseconds()
        shared.pointee = counters
    }

    /// Offences scanned (and their bins prefetched) before they are recorded.
    static let prefetchGroup = 16

    /// Records `count` offences in the table; crossings are collected and, past `flushThreshold`,
    /// installed.
    @inline(__always)
    private func record(_ keys: UnsafeMutablePointer<AddressKey>, _ count: Int, now: UInt32,
                        counters: inout WorkerCounters, crossed: inout [AddressKey], retry: inout Set<AddressKey>) {
        let table = daemon.table
        for index in 0..<count {
            switch table.record(keys[index], now: now) {
            case .crossed:
                crossed.append(keys[index])
                // A burst of crossings is installed as it grows, not after the whole batch:
                // the first client of a batch of 8,192 lines waits for 256 bans at most.
                if crossed.count >= Self.flushThreshold {
                    install(crossed, counters: &counters, retry: &retry)
                    crossed.removeAll(keepingCapacity: true)
                }
            case .full: counters.tableFull += 1
            case .counted: break
            }
        }
    }

    /// Installs bans with one batched update; on failure (a full map) one by one, keeping the ones
    /// that still fail for a later retry (their counts stay at the threshold: nothing is lost).
    private func install(_ keys: [AddressKey], counters: inout WorkerCounters, retry: inout Set<AddressKey>) {
        let configuration = daemon.configuration
        pthread_mutex_lock(daemon.banMapLock)
        let now = BootClock.nanoseconds()
        let expiry: BanExpiry = configuration.banTime == 0
            ? .permanent : BanExpiry.after(seconds: configuration.banTime, now: now) ?? .permanent
        let requests = keys.map { BanRequest($0.ipAddress, expiry) }
        var installed: [AddressKey] = []
        do {
            try daemon.maps.ban(batch: requests)
            installed = keys
        } catch {
            for (key, request) in zip(keys, requests) {
                do {
                    try daemon.maps.insert(request)
                    installed.append(key)
                } catch {
                    counters.banFailures += 1
                    retry.insert(key)
                }
            }
        }
        if case .at(let end) = expiry {
            for key in installed { daemon.schedule.add(key, end: end) }
        }
        for key in installed { retry.remove(key) }
        pthread_mutex_unlock(daemon.banMapLock)
        counters.bans += UInt64(installed.count)
        if let observer = daemon.banObserver, !installed.isEmpty { observer(installed, monotonicNanoseconds()) }
        daemon.banLog?.record("ban", installed)
    }
}

/// Where a worker's lines come from: its share of the shm reader, or a reader of its own.
enum LineSource {
    case shm(ShmReader, worker: Int, workers: Int)
    case reader(LogReader)

    func receive(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        switch self {
        case .shm(let reader, let worker, let workers):
            reader.wait(into: batch, timeoutMilliseconds: timeoutMilliseconds, worker: worker, workers: workers)
        case .reader(let reader):
            try reader.wait(into: batch, timeoutMilliseconds: timeoutMilliseconds)
        }
    }
}

extension AddressKey {
    /// The address as XDPFirewall spells it (IPv4-mapped keys become IPv4).
    var ipAddress: IPAddress {
        IPAddress(ipv6Bytes: withUnsafeBytes(of: self) { $0.loadUnaligned(as: in6_addr.self) })
    }

    init(_ address: IPAddress) {
        var bytes = [UInt8](repeating: 0, count: 16)
        address.withUnsafeBytes { raw in
            if raw.count == 4 {
                bytes[10] = 0xff
                bytes[11] = 0xff
                for index in 0..<4 { bytes[12 + index] = raw[index] }
            } else {
                for index in 0..<16 { bytes[index] = raw[index] }
            }
        }
        self.init(bytes: bytes)
    }
}

/// Starts a joinable pthread running `body`.
func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let result = pthread_create(&thread, nil, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    // Without its threads the daemon cannot do its work at all: say so and stop.
    precondition(result == 0, "portcullisd: cannot start a thread: \(String(cString: strerror(result)))")
    return thread
}

/// CPU time of the calling thread (RUSAGE_THREAD's user + system), in nanoseconds.
func threadCPUNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func format(_ value: Double) -> String {
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
