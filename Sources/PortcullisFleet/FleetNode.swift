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
    private let wakeup = DispatchSemaphore(value: 0)
    let events: FleetEvents

    private struct Queue {
        var changes: [FleetChange] = []
        var head = 0
        var waiting: Bool { head < changes.count }
        var count: Int { changes.count - head }
    }

    private let queue = Mutex(Queue())
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
        let queued = queue.withLock { $0.count }
        var snapshot = statistics.withLock { $0 }
        snapshot.connected = connected
        // Connected once, cut off since: nats.c reconnects on its own, and no error is kept for it.
        if made == false, snapshot.lastError == nil {
            snapshot.lastError =
                "disconnected from \(events.server ?? settings.servers.joined(separator: ",")); reconnecting"
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

    private func encode(_ change: FleetChange, refresh: Bool) -> [UInt8] {
        let value = FleetValue(
            end: change.end, at: change.at, jail: change.jail, host: settings.host, level: change.level,
            refresh: refresh ? true : nil)
        return value.bytes
    }

    /// Connects (again and again until it can), then publishes the queue as it fills.
    private func runLink() {
        var lastSaid: String?
        var saidRefusal = false
        var saidRejection = false
        var failures = 0
        // When the bucket was made, as last seen: one made anew lost every key (a server's store).
        var bucketMade: Int64?
        func madeAnew(_ bucket: FleetBucket) -> Bool {
            guard case .at(let made) = bucket.made(settings.bucket) else { return false }
            defer { bucketMade = made }
            return bucketMade.map { $0 != made } ?? false
        }
        // Keys due again, taken from the schedule and not yet acknowledged.
        var refreshing: [FleetChange] = []
        // When the last batch went (monotonic nanoseconds), when the bucket's limits were read.
        var lastBatch: UInt64 = 0
        var limitsRead = SystemClock.monotonicSeconds()
        while !stop.isSet {
            guard let bucket = bucket.withLock({ $0 }) else {
                do throws(FleetError) {
                    let made = try FleetBucket(settings: settings, maxAgeSeconds: maxAgeSeconds, events: events)
                    adoptLimits(made)
                    limitsRead = SystemClock.monotonicSeconds()
                    self.bucket.withLock { $0 = made }
                    let line =
                        "host \(settings.host) connected to \(events.server ?? settings.servers.joined(separator: ",")), bucket "
                        + "\(settings.bucket)\(lastSaid == nil ? "" : " (again)")"
                    logger.info("\(line)")
                    lastSaid = nil
                    failures = 0
                    statistics.withLock { $0.lastError = nil }
                    // The bucket made anew since this host last saw it (a server's store lost): what this
                    // host bans is put again.
                    if madeAnew(made) { republishOwn() }
                } catch {
                    failures += 1
                    let line = explain(error)
                    if error.kind + String(error.status.rawValue) != lastSaid {
                        logger.warning("\(line); banning goes on alone, retrying")
                    }
                    lastSaid = error.kind + String(error.status.rawValue)
                    statistics.withLock { $0.lastError = line }
                    let wait = min(settings.reconnectWait * Double(1 << min(failures - 1, 4)), 10)
                    _ = wakeup.wait(timeout: .now() + wait)
                }
                continue
            }
            // Closed for good (its credentials refused on a reconnection) or its bucket gone (a server
            // that lost its store): connected and bound again, the batch tried again.
            guard bucket.isUsable else {
                let why =
                    bucket.callbacks.closed.load(ordering: .acquiring)
                    ? "the connection was closed" : "the bucket is gone from the server"
                logger.warning("\(why); connecting again")
                lastSaid = why
                self.bucket.withLock { $0 = nil }
                continue
            }
            // Back from a reconnection: a server that lost its store has no bucket (made again
            // here), or one another host made again (this host's bans are put again).
            if events.reconnected.exchange(false, ordering: .acquiring) {
                if bucket.made(settings.bucket) == .missing {
                    bucket.callbacks.bucketMissing.store(true, ordering: .releasing)
                    continue
                }
                if madeAnew(bucket) { republishOwn() }
            }
            // The bucket's limits again each minute (an operator's `nats stream edit` is followed).
            if SystemClock.monotonicSeconds() - limitsRead >= 60 {
                limitsRead = SystemClock.monotonicSeconds()
                adoptLimits(bucket)
            }
            // Within a flow (the last batch less than 5 ms before), what comes in the next 2 ms
            // goes with what waits: fewer wake-ups and acknowledgement waits for the same bans.
            if SystemClock.monotonicNanoseconds() &- lastBatch < 5_000_000, queue.withLock({ $0.count < 1000 }) {
                SystemClock.sleep(nanoseconds: Self.linger)
            }
            // A copy: the ban path's appends meanwhile must not copy the queue (a shared buffer).
            var batch: [FleetChange] = queue.withLock { queue in
                Array(queue.changes[queue.head..<min(queue.head + 1000, queue.changes.count)])
            }
            let now = SystemClock.wallMilliseconds()
            // New bans first: keys due again go only when none waits.
            let isRefresh = batch.isEmpty
            if isRefresh {
                let waiting = refreshing
                refreshing = refresh.withLock { schedule in waiting.filter { schedule.isStillDue($0, now: now) } }
                if refreshing.isEmpty { refreshing = dueRefreshes(now: now) }
                batch = refreshing
            }
            guard !batch.isEmpty, bucket.isConnected else {
                _ = wakeup.wait(timeout: .now() + 0.2)
                continue
            }
            lastBatch = SystemClock.monotonicNanoseconds()
            // Bans that ended while they waited are not put (a receiver would skip them).
            let live = batch.filter { $0.isDelete || $0.end == 0 || $0.end > now }
            let before = events.state.withLock { ($0.refusedPublishes, $0.rejectedPublishes) }
            let (done, error) =
                live.isEmpty ? (0, nil) : bucket.publish(live[...], encode: { encode($0, refresh: isRefresh) })
            let (refused, rejected, refusal, rejection) = events.state.withLock {
                (
                    Int($0.refusedPublishes - before.0), Int($0.rejectedPublishes - before.1), $0.lastAsyncError,
                    $0.lastRejection
                )
            }
            // Acknowledged, or refused or rejected by the server (its permissions, its limits:
            // trying again would meet them again): the batch is done. Unless the bucket is gone.
            let answered = done == live.count || refused + rejected > 0
            if answered, !bucket.callbacks.bucketMissing.load(ordering: .acquiring) {
                if isRefresh { refreshing = [] } else { queue.withLock { $0.head += batch.count } }
                sent(live, at: now)
                statistics.withLock {
                    $0.published += UInt64(max(live.count - refused - rejected, 0))
                    if isRefresh { $0.republished += UInt64(live.count) }
                    if refused > 0 { $0.dropped["refused", default: 0] += UInt64(refused) }
                    if rejected > 0 { $0.dropped["rejected", default: 0] += UInt64(rejected) }
                    if !isRefresh, batch.count > live.count {
                        $0.dropped["ended", default: 0] += UInt64(batch.count - live.count)
                    }
                }
            }
            if refused > 0, !saidRefusal {
                let line =
                    "the server refused \(refused) change(s) of \(settings.host) (\(refusal ?? "refused")): let "
                    + "this host publish to $KV.\(settings.bucket).\(settings.host).> (an account for it: "
                    + "/usr/share/doc/portcullis/examples/nats-fleet-accounts.conf)"
                logger.warning("\(line)")
            }
            if rejected > 0, !saidRejection {
                let line =
                    "the server rejected \(rejected) change(s) of \(settings.host) (\(rejection ?? "rejected")): "
                    + "see the server's JetStream limits and store"
                logger.warning("\(line)")
            }
            saidRefusal = refused > 0 || (saidRefusal && done < live.count)
            saidRejection = rejected > 0 || (saidRejection && done < live.count)
            if let error, !answered {
                statistics.withLock { $0.lastError = explain(error) }
                _ = wakeup.wait(timeout: .now() + 0.2)
            }
        }
        let left = queue.withLock { $0.count }
        if left > 0 { statistics.withLock { $0.dropped["stopping", default: 0] += UInt64(left) } }
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
