// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Dispatch
import FoundationEssentials
import Logging
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// One host of the fleet: puts this host's bans into the NATS JetStream key-value bucket as
/// `HOST.ADDRESS` keys (the ban path only appends to a bounded queue; a thread publishes), and
/// watches the bucket, installing other hosts' bans in the XDP program's list layer with the
/// origin `fleet/HOST`, each ending when its value says. What it learned it never puts again.
///
/// At start and after each reconnection the watch reads the bucket's whole set, then its changes:
/// the first replaces every `fleet/` entry in one swap (a restart converges), a later one writes
/// the difference in place. While the servers are unreachable, the bans in force stay, local
/// banning goes on, and changes wait in the queue.
public final class FleetNode: BanPublisher, @unchecked Sendable {
    public let settings: FleetSettings
    /// The bucket's max age when this host creates it (0: none).
    public let maxAgeSeconds: UInt64
    /// The shortest max age: this host's long bans are put again every half of it. A test may
    /// set it (a bucket whose keys age out in seconds); a fleet wants minutes or more.
    public static let shortestMaxAge: UInt64 = 10
    /// Nanoseconds the link and the watch wait, within a flow of bans, for more to go with the
    /// first (batched puts and installs: `portcullis-perf fleet-load`).
    static let linger: UInt64 = 2_000_000
    let logger: Logger
    let statistics = Mutex(FleetStatistics())
    let stop = StopFlag()
    let wakeup = DispatchSemaphore(value: 0)
    let events: FleetEvents

    struct Queue {
        var changes: [FleetChange] = []
        var head = 0
        var waiting: Bool { head < changes.count }
        var count: Int { changes.count - head }
    }

    let queue = Mutex(Queue())
    /// Changes sent and not answered yet (the link's outbox): queued still, as status counts them.
    let unanswered = Atomic<Int>(0)
    /// This host's keys to put again before the bucket's max age takes them (FleetNode+Refresh).
    let refresh: Mutex<RefreshSchedule>
    /// The bucket's limits last said to differ from this host's settings.
    let saidLimits = Mutex<BucketLimits?>(nil)
    /// When this node started (wall-clock milliseconds): own keys older are an earlier run's.
    let startedAt = SystemClock.wallMilliseconds()
    let bucket = Mutex<FleetBucket?>(nil)
    private var linkThread: SystemThread?
    private var watchThread: SystemThread?
    /// This host's maps: where the watch installs, and what is put again.
    private(set) var maps: BanMaps?

    /// For the harness: called on the watch thread after each other host's change is in the maps.
    @_spi(Testing) public var installObserver: (@Sendable (String) -> Void)?

    // The watch thread's (see FleetWatch.swift).
    /// Other hosts' bans by key, each on its network.
    var claims = ListClaims<String>()
    var installer: ListInstaller?
    /// Networks whose bans of other hosts are not enforced (the driver allowlist).
    public private(set) var allowlist: [IPNetwork] = []
    /// What other hosts' networks must pass: the floors, the never-bannable ranges, the allowlist.
    var policy = ListPolicy()
    /// Hosts whose keys are skipped (`ignore_hosts`, `portcullis fleet ignore`).
    let ignoredHosts: Mutex<Set<String>>
    /// The next whole read replaces every `fleet/` entry in one swap (what an operator lifted by
    /// hand comes back with the rest).
    let replaceOnRead = Atomic<Bool>(false)
    /// Keys in force per other host (exact after each census, counted in between).
    var keysByHost: [String: Int] = [:]
    /// Hosts whose limit was said (once each).
    var limitSaid = Set<String>()
    let decoder = JSONDecoder()
    /// Networks another list's entry held when they were to be installed: tried again.
    var held = Set<IPNetwork>()
    /// Other hosts' bans taken from a bridge (the stream without a leader), by key, with when
    /// (monotonic seconds): the next whole read keeps those of the last 10 s it does not name at
    /// all (sent during the election and not stored yet: their hosts send them again every 0.5 s),
    /// rather than lifting them until then. Older ones are not kept: a key whose delete marker aged
    /// out of the bucket is not named either.
    var bridged: [String: (IPNetwork, ListClaim, Double)] = [:]
    var takingBridged = false
    /// A write into the maps failed since the last whole read (the next one replaces in one swap).
    var installFailed = false
    var lastInstallError: String?

    /// The keys of CrowdSec's decisions this host shares (`share_crowdsec`): those in the bucket
    /// (what the watch read), and the bouncer's whole set at its first pull; the keys in the bucket
    /// and not in that set are deleted, once both are known.
    struct SharedDecisions {
        var inBucket = Set<String>()
        var bucketRead = false
        var firstSet: Set<String>?
    }

    let shared = Mutex(SharedDecisions())

    /// - Parameters:
    ///   - maxAgeSeconds: the bucket's max age should this host create it (0: none); at least
    ///     `shortestMaxAge`.
    ///   - logger: the daemon's log (a problem is a warning).
    public init(settings: FleetSettings, maxAgeSeconds: UInt64, logger: Logger) {
        self.settings = settings
        let age = settings.maxAge > 0 ? settings.maxAge : maxAgeSeconds
        self.maxAgeSeconds = age == 0 ? 0 : max(age, Self.shortestMaxAge)
        // This host's max age until the bucket's is read (before anything is put).
        refresh = Mutex(RefreshSchedule(maxAgeMilliseconds: self.maxAgeSeconds &* 1000))
        self.logger = logger
        ignoredHosts = Mutex(Set(settings.ignoreHosts))
        let wakeup = self.wakeup
        events = FleetEvents(wake: { wakeup.signal() }, logger: logger)
    }

    public var snapshot: FleetStatistics {
        let made = bucket.withLock { $0.map(\.isUp) }
        let connected = made ?? false
        let reconnects = events.state.withLock { $0.reconnects }
        let queued = queue.withLock { $0.count } + unanswered.load(ordering: .relaxed)
        var snapshot = statistics.withLock { $0 }
        snapshot.connected = connected
        // Connected once, cut off since: nats.c reconnects on its own. Said first (a put's timeout
        // may have come before the disconnection was noticed).
        if made == false {
            let server = events.server ?? settings.servers.joined(separator: ",")
            snapshot.lastError =
                "disconnected from \(server); reconnecting" + (snapshot.lastError.map { " (before: \($0))" } ?? "")
        }
        snapshot.reconnects = reconnects
        snapshot.queued = queued
        return snapshot
    }

    // MARK: Publishing

    /// Queues the change of a jail's or the operator's bans (never an expiry's: the end travels in
    /// the value). Runs on the ban path: the keys made, an append under a lock, a wake-up when the
    /// queue was empty.
    public func publish(_ event: BanEvent) {
        switch event.origin {
        case .filter, .operator, .aggregate: break
        case .expiry: return
        }
        let now = SystemClock.wallMilliseconds()
        var changes: [FleetChange] = []
        changes.reserveCapacity(event.addresses.count)
        for (index, address) in event.addresses.enumerated() {
            let length =
                index < event.prefixLengths.count ? event.prefixLengths[index] : IPNetwork.fullLength(address.family)
            let key = FleetKey.key(host: settings.host, IPNetwork(containing: address, length: length))
            if event.kind == .ban {
                let seconds = index < event.seconds.count ? event.seconds[index] : 0
                changes.append(
                    FleetChange(
                        key: key, end: seconds == 0 ? 0 : now &+ seconds &* 1000, at: now, jail: event.jail ?? "manual",
                        level: index < event.levels.count ? event.levels[index] : 0, isDelete: false))
            } else {
                changes.append(.delete(key, at: now))
            }
        }
        enqueue(changes)
    }

    /// Puts CrowdSec's decisions this host enforces (`share_crowdsec`) as `HOST.crowdsec.ADDRESS`,
    /// with the jail `crowdsec/ORIGIN`, and deletes those gone. `whole`: the bouncer's first pull,
    /// its whole set (what the bucket holds beyond it is gone: deleted).
    public func publishDecisions(_ changes: [ListChange], now boot: UInt64, whole: Bool) {
        guard settings.shareCrowdSec else { return }
        let now = SystemClock.wallMilliseconds()
        var puts: [FleetChange] = []
        puts.reserveCapacity(changes.count)
        for change in changes {
            let key = FleetKey.key(host: settings.host, change.network, decision: true)
            switch change {
            case .install(_, let claim):
                let left = claim.end > boot ? (claim.end - boot) / 1_000_000 : 0
                puts.append(
                    FleetChange(
                        key: key, end: claim.end == .max ? 0 : now &+ left, at: now, jail: "crowdsec/" + claim.origin,
                        level: 0, isDelete: false))
            case .remove:
                puts.append(.delete(key, at: now))
            }
        }
        if whole {
            let keys = Set(puts.map(\.key))
            let stale = shared.withLock { shared -> Set<String> in
                // Before the watch has read the bucket, it does this when it has.
                guard shared.bucketRead else {
                    shared.firstSet = keys
                    return []
                }
                return shared.inBucket.subtracting(keys)
            }
            puts += stale.sorted().map { .delete($0, at: now) }
        }
        enqueue(puts)
    }

    /// Appends to the queue what fits (the rest is counted), waking the link when it was empty.
    func enqueue(_ changes: [FleetChange]) {
        guard !changes.isEmpty else { return }
        let limit = settings.queueLimit
        let (wasEmpty, dropped) = queue.withLock { queue -> (Bool, Int) in
            let wasEmpty = !queue.waiting
            // What was published goes, now and then (not per change: the head moves instead).
            if queue.head > 4096, queue.head * 2 > queue.changes.count {
                queue.changes.removeFirst(queue.head)
                queue.head = 0
            }
            let room = max(limit - queue.count, 0)
            queue.changes.append(contentsOf: changes.prefix(room))
            return (wasEmpty, max(changes.count - room, 0))
        }
        if dropped > 0 { statistics.withLock { $0.dropped["queue_full", default: 0] += UInt64(dropped) } }
        if wasEmpty { wakeup.signal() }
    }

    /// What waits in the queue, taken out (a node replaced by a reload hands it to the next).
    public func takeQueue() -> [FleetChange] {
        queue.withLock { queue in
            defer { queue = Queue() }
            return Array(queue.changes[queue.head...])
        }
    }

    /// Puts `changes` (an earlier node's queue) before what this one queued.
    public func adopt(_ changes: [FleetChange]) {
        guard !changes.isEmpty else { return }
        let room = queue.withLock { queue -> Int in
            let room = max(settings.queueLimit - queue.count, 0)
            queue.changes = Array(changes.prefix(room)) + queue.changes[queue.head...]
            queue.head = 0
            return room
        }
        if changes.count > room {
            statistics.withLock { $0.dropped["queue_full", default: 0] += UInt64(changes.count - room) }
        }
        wakeup.signal()
    }

    func encode(_ change: FleetChange, refresh: Bool) -> [UInt8] {
        let value = FleetValue(
            end: change.end, at: change.at, jail: change.jail, host: settings.host, level: change.level,
            refresh: refresh ? true : nil)
        return value.bytes
    }

    func explain(_ error: FleetError) -> String {
        switch error.kind {
        case "refused":
            "the NATS server refused this host's credentials or permissions (\(error)): give the user, token, "
                + "credentials or nkey its account has"
        case "tls": "TLS with the NATS server failed (\(error)): check ca_cert_path, cert_path and key_path"
        default: "\(error)"
        }
    }

    /// Starts the link (connect, publish) and, with `maps`, the watch.
    public func start(maps: BanMaps?, allowlist: [IPNetwork]) throws(Errno) {
        self.maps = maps
        self.allowlist = allowlist
        policy = ListPolicy(
            shortestIPv4: settings.shortestIPv4, shortestIPv6: settings.shortestIPv6, allowlist: allowlist)
        installer = maps.map { ListInstaller(maps: $0, prefix: "fleet/", namedOrigins: 64) }
        linkThread = try SystemThread.spawn { [self] in runLink() }
        if installer != nil {
            do throws(Errno) {
                watchThread = try SystemThread.spawn { [self] in runWatch() }
            } catch {
                stopAndJoin()
                throw error
            }
        }
    }

    /// Installs no more keys of `host`, and lifts those in force (the watch reads the bucket again).
    public func ignore(_ host: String) {
        ignoredHosts.withLock { _ = $0.insert(host) }
        replaceOnRead.store(true, ordering: .releasing)
        events.resync.store(true, ordering: .releasing)
    }

    /// Installs `host`'s keys again (the watch reads the bucket again).
    public func unignore(_ host: String) {
        ignoredHosts.withLock { _ = $0.remove(host) }
        replaceOnRead.store(true, ordering: .releasing)
        events.resync.store(true, ordering: .releasing)
    }

    /// Stops both threads and closes the connection. Other hosts' bans stay in force.
    public func stopAndJoin() {
        stop.set()
        events.stopping.store(true, ordering: .releasing)
        wakeup.signal()
        linkThread?.join()
        watchThread?.join()
        linkThread = nil
        watchThread = nil
        bucket.withLock { $0 = nil }
    }
}
