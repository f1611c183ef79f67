// SPDX-License-Identifier: Apache-2.0
import Glibc
import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon: lifecycle and wiring. A line's path through it, one file each:
/// its *source* (a `ReaderGroup` of the transport, one per distinct source of the jails) →
/// `BanWorker` (read, scan with the filter of each `Jail` on that source, count in the jail's
/// offence table, decide) → `Enforcement` (install into the XDP maps; `Escalation` for repeat
/// offenders) → `BanPublisher`s (the ban log); `BanLifter` (Expiry.swift) lifts bans when they end.
/// Interface attachment is the caller's business (the daemon only needs the maps).
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    let jails: [Jail]
    /// Tests only: the first jail (the `default` jail of a daemon made from flags).
    var jail: Jail { jails[0] }
    let enforcement: Enforcement
    let lifter: BanLifter
    /// One reader group per distinct source; nil: not open (yet, or degraded).
    private var sources: [ReaderGroup?] = []
    /// Each source's reader key (what a reload compares), and the threads that read it.
    private var sourceKeys: [(source: TransportConfiguration, threads: Int)] = []
    /// Of the sources, those this daemon closes when it stops (not those a reload's daemon took).
    private var ownedSources = Set<Int>()
    /// Of the sources, those taken from the daemon this one replaced, by their index there.
    private var takenSources: [(index: Int, from: Int)] = []
    /// Sources a reload must open once the daemon it replaces has let go of its own.
    private var pendingSources: [Int] = []
    private var workers: [BanWorker] = []
    /// Of each worker, the index in `sources` of the source it reads.
    private var workerSources: [Int] = []
    /// Each source's `label`.
    private let sourceLabels: [String]
    /// The groups' jails and routes, for the workers of sources opened late.
    private var sourceJails: [(jails: [(index: Int, jail: Jail)], routes: [SyslogRoute?])] = []
    /// The sources a reload could not open, with why: their jails read nothing until a reload
    /// opens them (every other jail goes on).
    public private(set) var degradedSources: [(label: String, reason: String)] = []
    /// Of the sources, the labels of those taken over by a reload with their readers (no line lost).
    public private(set) var keptSources: [String] = []
    /// How many sources this daemon opened itself.
    public var openedSources: Int { ownedSources.count - takenSources.count }
    /// The escalation counts, when a jail escalates.
    let history: BanHistory?
    let clock: DaemonClock
    private var threads: [SystemThread] = []
    /// Held by the threads themselves (not the daemon), so they can outlive a daemon released
    /// without `stop()` until its deinit has joined them.
    private let stopping = StopFlag()
    private let startNanoseconds = SystemClock.monotonicNanoseconds()
    /// Remarks for the operator about how the settings were applied.
    public var notes: [String] { earlyNotes + lateNotes }
    private let earlyNotes: [String]
    private var lateNotes: [String] = []
    /// What is never banned, whatever the lines say: the built-in networks, this host's addresses
    /// and gateways, the allowlist.
    public var neverBanned: [String] {
        var seen = Set<String>()
        return (Allowlist.neverBannable + allowlist.descriptions).filter { seen.insert($0).inserted }
    }
    /// The daemon's allowlist with this host's addresses (each jail adds its `ignoreip`).
    let allowlist: Allowlist
    /// What the XDP program passes whatever bans cover it: the allowlist and every jail's ignoreip.
    public let driverAllowlist: [IPNetwork]

    /// What blocklists, CrowdSec's decisions and the operator's network bans must pass: the
    /// configured floors, the never-bannable ranges, the driver's allowlist.
    public var listPolicy: ListPolicy {
        ListPolicy(
            shortestIPv4: configuration.shortestListPrefix.ipv4, shortestIPv6: configuration.shortestListPrefix.ipv6,
            allowlist: driverAllowlist)
    }
    /// Bans found in the maps at start and resumed (their expiry scheduled, their counts set).
    public private(set) var resumedBans = 0
    /// The sinks of ban events it was given.
    public let publishers: [BanPublisher]
    /// Of the jails, those taken over from the daemon this one replaced, with their counts.
    public let keptJails: [String]
    /// The jails' names, in configuration order.
    public var jailNames: [String] { jails.map(\.name) }

    /// Prepares everything (tables, readers, resumed bans) without starting threads.
    /// - Parameters:
    ///   - publishers: told of every ban and lift (the ban log, a benchmark's observer).
    ///   - keeping: a daemon this one replaces (a reload): its jails that are configured the same
    ///     keep their offence tables (their counts), and its ban history is taken over.
    public convenience init(
        configuration: DaemonConfiguration, maps: any BanStore, publishers: [BanPublisher] = [],
        keeping previous: Daemon? = nil
    )
        throws(DaemonError)
    {
        try self.init(
            configuration: configuration, maps: maps, bootClock: nil, publishers: publishers, keeping: previous)
    }

    /// Tests only: a daemon whose boot time comes from `bootClock` (a clock the test steps; nil:
    /// `CLOCK_BOOTTIME`), typically over a store in memory.
    @_spi(Testing) public init(
        configuration: DaemonConfiguration, maps: any BanStore, bootClock: (@Sendable () -> UInt64)?,
        publishers: [BanPublisher] = [], keeping previous: Daemon? = nil
    )
        throws(DaemonError)
    {
        clock = DaemonClock(source: bootClock)
        try configuration.validate()
        self.configuration = configuration
        self.publishers = publishers
        var allowlist = configuration.allowlist
        if configuration.protectHost {
            for address in HostAddresses.current() { try? allowlist.add("\(address)") }
        }
        self.allowlist = allowlist
        let jailConfigurations = configuration.effectiveJails
        var historyProblem: String?
        if let previous, previous.configuration.historyPath == configuration.historyPath, let kept = previous.history {
            history = kept
        } else if jailConfigurations.contains(where: { $0.escalation != nil }) {
            let history = BanHistory(
                path: configuration.historyPath, capacity: configuration.historyEntries,
                maximumAge: configuration.historyAge)
            if let problem = history.load(wallSeconds: SystemClock.wallSeconds()) {
                historyProblem = problem
            }
            self.history = history
        } else {
            history = nil
        }
        // Each jail's bans carry its origin slot, which names it in the maps (`portcullis list`).
        let origins: [String: UInt32]
        do {
            origins = try maps.originSlots(for: jailConfigurations.map(\.name))
        } catch {
            throw .firewall("name the jails in the maps: \(error)")
        }
        var jails: [Jail] = []
        var kept: [String] = []
        for jailConfiguration in jailConfigurations {
            // The same settings: the same counts (the table is kept; the allowlist is made anew,
            // as this host's addresses may have changed).
            let same = previous?.jails.first {
                $0.configuration == jailConfiguration && $0.maxLineLength == configuration.maxLineLength
                    && previous?.configuration.regexMatchLimit == configuration.regexMatchLimit
                    && previous?.configuration.idleHorizon == configuration.idleHorizon
            }
            jails.append(
                try Jail(
                    jailConfiguration, daemon: configuration, allowlist: allowlist, history: history,
                    numaNode: configuration.tableNode, origin: origins[jailConfiguration.name] ?? 0,
                    keeping: same?.table))
            if let same { kept.append(same.name) }
        }
        for jail in jails { try jail.configuration.aggregation.check(jail: jail.name, maps: maps) }
        self.jails = jails
        keptJails = kept
        // The driver's allowlist: what no jail ever bans (the daemon's allowlist, this host's
        // addresses and gateways, every jail's ignoreip) passes even a prefix or list ban.
        var driverAllowlist = allowlist.ipNetworks
        for jail in jails { driverAllowlist += jail.configuration.ignore.ipNetworks }
        var seenNetworks = Set<IPNetwork>()
        driverAllowlist = driverAllowlist.filter { seenNetworks.insert($0).inserted }
        do {
            try maps.replaceAllowlist(driverAllowlist)
        } catch {
            throw .firewall("write the allowlist into the driver: \(error)")
        }
        self.driverAllowlist = driverAllowlist
        enforcement = Enforcement(maps: maps, clock: clock)
        lifter = BanLifter(
            enforcement: enforcement, tables: jails.map(\.table), history: history, clock: clock,
            publishers: publishers, jailNames: Self.jailNames(jails))
        let groups = SourcePlan(jails: jails).groups
        var notes = configuration.notes
        if let historyProblem { notes.append(historyProblem) }
        for group in groups {
            // A multi-line filter correlates lines (an sshd connection's): they must reach one
            // thread, in order.
            let ordered = group.jails.contains { $0.jail.configuration.filter.needsLineOrder }
            let threads = ordered ? 1 : configuration.workers
            if ordered && configuration.workers > 1 && group.source.kind != .file {
                notes.append(
                    "\(group.jails.map(\.jail.name).joined(separator: ", ")): a multi-line fail2ban filter reads its "
                        + "source with one worker (its lines must stay in order)")
            }
            sourceKeys.append((group.source, threads))
            sourceJails.append((group.jails, group.routes))
            sources.append(nil)
        }
        sourceLabels = groups.map(\.source.label)
        earlyNotes = notes
        // A reload takes over the readers of the sources configured the same (their connections,
        // positions and lines in flight stay); the others open once the old daemon has closed its
        // own (a file's position, a socket's path, a ring's reader name are theirs until then).
        for index in sourceKeys.indices {
            if let previous, configuration.readerPolicy == previous.configuration.readerPolicy,
                let from = previous.sourceKeys.indices.first(where: {
                    previous.sourceKeys[$0] == sourceKeys[index] && previous.sources[$0] != nil
                        && previous.ownedSources.contains($0)
                })
            {
                sources[index] = previous.sources[from]
                takenSources.append((index, from))
                keptSources.append(sourceLabels[index])
                addWorkers(source: index)
            } else if previous != nil {
                pendingSources.append(index)
            } else {
                do {
                    try open(source: index)
                } catch {
                    closeOwnedSources()
                    throw .transport(error)
                }
            }
        }
        do {
            try resumeBans()
        } catch {
            closeOwnedSources()
            throw error
        }
    }

    /// Opens source `index` and makes its workers.
    private func open(source index: Int) throws(TransportError) {
        // Named: a restarted daemon reads on where the last one stopped (the lines logged
        // while it was down, as far as the rings still hold them).
        var transport = sourceKeys[index].source
        transport.shm.readerName = transport.shm.readerName ?? "portcullisd"
        let readers = try transport.makeReaders(policy: configuration.readerPolicy, workers: sourceKeys[index].threads)
        sources[index] = readers
        ownedSources.insert(index)
        if let note = readers.note { lateNotes.append(note) }
        addWorkers(source: index)
    }

    private func addWorkers(source index: Int) {
        guard let readers = sources[index] else { return }
        let cpus = configuration.cpus
        for reader in readers.readers {
            let worker = workers.count
            workerSources.append(index)
            workers.append(
                BanWorker(
                    index: worker, cpu: cpus.isEmpty ? nil : cpus[worker % cpus.count], reader: reader,
                    jails: sourceJails[index].jails, routes: sourceJails[index].routes, enforcement: enforcement,
                    clock: clock, publishers: publishers,
                    wakeDelayNanoseconds: UInt64(configuration.wakeDelayMicroseconds) * 1000))
        }
    }

    private func closeOwnedSources(except kept: Set<Int> = []) {
        for index in ownedSources.sorted() where !kept.contains(index) { sources[index]?.close() }
    }

    deinit { stop() }

    /// One line per jail for the start-up log: where it reads, what it matches, what it costs.
    public var jailDescriptions: [String] { jails.map(\.configuration.description) }

    /// Tests only: how often the expiry thread sweeps the maps (default 10 s). Set before `start`.
    @_spi(Testing) public var sweepIntervalNanoseconds: UInt64 {
        get { lifter.sweepInterval }
        set { lifter.sweepInterval = newValue }
    }

    /// Benchmarks only: with false, crossings are not banned (nothing is written, scheduled or
    /// published): what the lines cost without their bans. Set before `start`.
    @_spi(Testing) public var installsBans: Bool {
        get { enforcement.installs }
        set { enforcement.installs = newValue }
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
        // Every jail counts a ban found in the maps as banned (so none bans it again while it lasts,
        // whichever made it: its origin names a jail, which may have been renamed or removed since),
        // and every count restarts when it is lifted.
        for entry in entries {
            let now = clock.tableNow
            for jail in jails {
                if case .at(let end) = entry.expiry {
                    jail.table.markBanned(entry.address, now: now, remaining: clock.tableSecond(ofBootTime: end) &- now)
                } else {
                    jail.table.markBanned(entry.address, now: now)
                }
            }
            enforcement.resume(entry.address, expiry: entry.expiry)
            resumedBans += 1
        }
    }

    /// Starts the workers and the expiry thread; returns once every worker is reading.
    ///
    /// After a reload's `init(keeping:)`, call it once the daemon replaced has stopped
    /// (`stop(handingOverTo:)`): it opens the sources that were not taken over. One that cannot be
    /// opened is degraded (said in `degradedSources`), and every other jail goes on.
    /// - Throws: when a thread cannot be started (the threads already started are stopped again),
    ///   or when no source at all could be opened (nothing would read: a supervisor should restart).
    public func start() throws(DaemonError) {
        for (index, _) in takenSources { ownedSources.insert(index) }
        for index in pendingSources {
            do throws(TransportError) {
                try open(source: index)
            } catch {
                degradedSources.append((sourceLabels[index], "\(error)"))
            }
        }
        pendingSources.removeAll()
        if !sources.isEmpty, sources.allSatisfy({ $0 == nil }) {
            stop()
            throw .transport(
                TransportError.invalidConfiguration(
                    "no source could be opened: "
                        + degradedSources.map { "\($0.label): \($0.reason)" }.joined(separator: "; ")))
        }
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
    public func stop() { stop(handingOverTo: nil) }

    /// Stops and joins every thread, and closes the sources it owns but those `next` (the daemon of
    /// a reload, not started yet) took over: their readers, connections and lines in flight go on
    /// in `next`.
    public func stop(handingOverTo next: Daemon?) {
        guard !stopping.set() else { return }
        for thread in threads { thread.join() }
        threads.removeAll()
        closeOwnedSources(except: Set(next?.takenSources.map(\.from) ?? []))  // statistics survive the close
        for publisher in publishers { publisher.flush() }
    }

    /// Counters now.
    public var status: DaemonStatus {
        let lifted = lifter.counts
        let transport = sources.reduce(ReaderStatistics()) { $0 + ($1?.statistics ?? ReaderStatistics()) }
        let snapshots = workers.map(\.snapshot)
        var perJail = jails.map { JailStatus(name: $0.name, counters: WorkerCounters()) }
        // Per source, its jails' counters from the workers that read it.
        var perSource = zip(sources, sourceLabels).map { source, label in
            SourceStatus(
                label: label, statistics: source?.statistics ?? ReaderStatistics(), jails: [],
                degraded: degradedSources.first { $0.label == label }?.reason)
        }
        for (workerIndex, (worker, snapshot)) in zip(workers, snapshots).enumerated() {
            let source = workerSources[workerIndex]
            for (position, counters) in snapshot.jails.enumerated() {
                let jail = worker.jails[position].index
                perJail[jail].counters = perJail[jail].counters + counters
                if let known = perSource[source].jails.firstIndex(where: { $0.name == jails[jail].name }) {
                    perSource[source].jails[known].counters = perSource[source].jails[known].counters + counters
                } else {
                    perSource[source].jails.append(JailStatus(name: jails[jail].name, counters: counters))
                }
            }
        }
        return DaemonStatus(
            workers: snapshots.map(\.total), workerCPUs: workers.map(\.cpu), jails: perJail, sources: perSource,
            tables: jails.map { TableStatus(jail: $0.name, bins: $0.table.bins, occupied: $0.table.occupied) },
            unbans: lifted.unbans,
            sweptUnbans: lifted.swept, unbannedByOperator: lifted.unbannedByOperator,
            scheduledBans: enforcement.schedule.count, tableBins: jails.reduce(0) { $0 + $1.table.occupied },
            tableReclaimed: jails.reduce(0) { $0 + $1.table.reclaimedStale },
            tableEvicted: jails.reduce(0) { $0 + $1.table.evictedLive },
            linesLost: transport.linesLost, transportRejected: transport.linesRejected,
            writersRefused: transport.writersRefused, filesRefused: transport.filesRefused,
            expiryCPUNanoseconds: lifted.cpuNanoseconds,
            uptime: Double(SystemClock.monotonicNanoseconds() - startNanoseconds) / 1e9)
    }
}
