import Glibc
import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon: lifecycle and wiring. A line's path through it, one file each:
/// its *source* (a `ReaderGroup` of the transport) → `BanWorker` (read, scan with the `Jail`'s
/// filter, count in its offence table, decide) → `Enforcement` (install into the XDP maps) →
/// `BanPublisher`s (the ban log); `BanLifter` (Expiry.swift) lifts bans when they end.
/// Interface attachment is the caller's business (the daemon only needs the maps).
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    let jail: Jail
    private let enforcement: Enforcement
    private let lifter: BanLifter
    private let readers: ReaderGroup
    private let workers: [BanWorker]
    private let clock = DaemonClock()
    private var threads: [SystemThread] = []
    /// Held by the threads themselves (not the daemon), so they can outlive a daemon released
    /// without `stop()` until its deinit has joined them.
    private let stopping = StopFlag()
    private let startNanoseconds = SystemClock.monotonicNanoseconds()
    /// Remarks for the operator about how the settings were applied.
    public let notes: [String]
    /// What is never banned, whatever the lines say: the built-in networks, this host's addresses
    /// and gateways, the allowlist.
    public var neverBanned: [String] {
        var seen = Set<String>()
        return (Allowlist.neverBannable + jail.allowlist.descriptions).filter { seen.insert($0).inserted }
    }
    /// Bans found in the maps at start and resumed (their expiry scheduled, their counts set).
    public private(set) var resumedBans = 0

    /// Prepares everything (table, readers, resumed bans) without starting threads.
    /// - Parameter publishers: told of every ban and lift (the ban log, a benchmark's observer).
    public init(
        configuration: DaemonConfiguration, maps: BanMaps, publishers: [BanPublisher] = []
    )
        throws(DaemonError)
    {
        try configuration.validate()
        self.configuration = configuration
        jail = try Jail(name: "default", configuration: configuration, numaNode: configuration.tableNode)
        enforcement = Enforcement(maps: maps)
        lifter = BanLifter(enforcement: enforcement, jail: jail, clock: clock, publishers: publishers)
        do {
            // Named: a restarted daemon reads on where the last one stopped (the lines logged while
            // it was down, as far as the rings still hold them).
            var transport = configuration.transport
            transport.shm.readerName = transport.shm.readerName ?? "portcullisd"
            readers = try transport.makeReaders(policy: configuration.readerPolicy, workers: configuration.workers)
        } catch {
            throw .transport(error)
        }
        notes = readers.note.map { [$0] } ?? []
        let cpus = configuration.cpus
        workers = readers.readers.enumerated().map { [jail, enforcement, clock] index, reader in
            BanWorker(
                index: index, cpu: cpus.isEmpty ? nil : cpus[index % cpus.count], reader: reader, jail: jail,
                enforcement: enforcement, clock: clock, publishers: publishers)
        }
        do {
            try resumeBans()
        } catch {
            readers.close()
            throw error
        }
    }

    deinit { stop() }

    /// Tests only: how often the expiry thread sweeps the maps (default 10 s). Set before `start`.
    @_spi(Testing) public var sweepIntervalNanoseconds: UInt64 {
        get { lifter.sweepInterval }
        set { lifter.sweepInterval = newValue }
    }

    /// Tests only: a pause inside each lift, between its look-ups and its delete.
    @_spi(Testing) public var liftPauseMicroseconds: UInt32 {
        get { UInt32(enforcement.liftPauseNanoseconds / 1000) }
        set { enforcement.liftPauseNanoseconds = UInt64(newValue) * 1000 }
    }

    /// Bans already in the maps (a restart): keep enforcing them, and end them when they end.
    private func resumeBans() throws(DaemonError) {
        let entries: [BanEntry]
        do {
            entries = try enforcement.maps.entries()
        } catch {
            throw .firewall("read the pinned bans: \(error)")
        }
        for entry in entries {
            let now = clock.tableNow
            if case .at(let end) = entry.expiry {
                jail.table.markBanned(entry.address, now: now, remaining: clock.tableSecond(ofBootTime: end) &- now)
            } else {
                jail.table.markBanned(entry.address, now: now)
            }
            enforcement.resume(entry.address, expiry: entry.expiry)
            resumedBans += 1
        }
    }

    /// Starts the workers and the expiry thread; returns once every worker is reading.
    /// - Throws: when a thread cannot be started (the threads already started are stopped again).
    public func start() throws(DaemonError) {
        final class Running: Sendable { let count = Atomic<Int>(0) }
        let running = Running()
        let stopping = stopping
        do throws(Errno) {
            for worker in workers {
                threads.append(
                    try SystemThread.spawn {
                        worker.run(
                            isStopping: { stopping.isSet }, started: { running.count.add(1, ordering: .releasing) })
                    })
            }
            threads.append(try SystemThread.spawn { [lifter] in lifter.run(isStopping: { stopping.isSet }) })
        } catch {
            stop()
            throw .invalidSetting("cannot start a thread: \(error); lower --workers or raise the process's limits")
        }
        while running.count.load(ordering: .acquiring) < workers.count { sched_yield() }
    }

    /// Stops and joins every thread (each notices within ~100 ms) and detaches from the transport.
    public func stop() {
        guard !stopping.set() else { return }
        for thread in threads { thread.join() }
        threads.removeAll()
        readers.close()  // statistics survive the close
    }

    /// Counters now.
    public var status: DaemonStatus {
        let lifted = lifter.counts
        let transport = readers.statistics
        return DaemonStatus(
            workers: workers.map(\.counters), workerCPUs: workers.map(\.cpu), unbans: lifted.unbans,
            sweptUnbans: lifted.swept, unbannedByOperator: lifted.unbannedByOperator,
            scheduledBans: enforcement.schedule.count, tableBins: jail.table.occupied,
            tableReclaimed: jail.table.reclaimedStale, tableEvicted: jail.table.evictedLive,
            linesLost: transport.linesLost, transportRejected: transport.linesRejected,
            writersRefused: transport.writersRefused, filesRefused: transport.filesRefused,
            expiryCPUNanoseconds: lifted.cpuNanoseconds,
            uptime: Double(SystemClock.monotonicNanoseconds() - startNanoseconds) / 1e9)
    }
}
