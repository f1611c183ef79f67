import CPortcullis
import Foundation
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import Synchronization
import XDPFirewall

/// Why a key of another host was not enforced.
public enum FleetSkip: String, Sendable, CaseIterable {
    /// Its end had passed when it came (NATS 2.9 keeps a key until the bucket's max age).
    case ended
    /// A value that is not the JSON of a ban, or that names another host than its key.
    case malformed
    /// A key that is not `HOST.ADDRESS`.
    case key
    /// Inside the driver allowlist: never enforced.
    case allowlisted
}

/// Counters of a fleet node (read by the metrics and the status at any time).
public struct FleetStatistics: Sendable {
    public var connected = false
    /// Puts and deletes of this host's bans the server acknowledged.
    public var published: UInt64 = 0
    /// Changes waiting for the server.
    public var queued = 0
    /// Changes never published, by reason: `queue_full`, `refused` (the server's permissions or
    /// limits), `ended` (ended while waiting), `stopping`.
    public var dropped: [String: UInt64] = [:]
    /// Puts and deletes of other hosts' keys the watch delivered.
    public var received: UInt64 = 0
    /// Other hosts' bans written into the maps, and lifted by their deletion.
    public var installed: UInt64 = 0
    public var lifted: UInt64 = 0
    public var skipped: [FleetSkip: UInt64] = [:]
    /// Other hosts' bans in force, and the networks they name (hosts may share one).
    public var bans = 0
    public var networks = 0
    /// Bans in force by origin host.
    public var byHost: [String: Int] = [:]
    /// The propagation lag: from the origin's ban (its maps' write) to this host's, seconds.
    public var lagSeconds = 0.0
    public var lagCount: UInt64 = 0
    public var lastLagSeconds = 0.0
    /// Connections made again by nats.c, and whole-set reads of the bucket (at start and after each).
    public var reconnects: UInt64 = 0
    public var resyncs: UInt64 = 0
    public var lastError: String?
}

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
    /// The bucket's max age when this host creates it.
    public let maxAgeSeconds: UInt64
    private let say: @Sendable (String, Bool) -> Void
    private let statistics = Mutex(FleetStatistics())
    private let stop = StopFlag()
    private let wakeup = DispatchSemaphore(value: 0)
    private let events: FleetEvents

    private struct Queue {
        var changes: [FleetChange] = []
        var head = 0
        var waiting: Bool { head < changes.count }
        var count: Int { changes.count - head }
    }

    private let queue = Mutex(Queue())
    private let bucket = Mutex<FleetBucket?>(nil)
    private var linkThread: SystemThread?
    private var watchThread: SystemThread?

    /// For the harness: called on the watch thread after each other host's change is in the maps.
    @_spi(Testing) public var installObserver: (@Sendable (String) -> Void)?

    /// - Parameters:
    ///   - maxAgeSeconds: the bucket's max age should this host create it (0: none).
    ///   - say: one line for the daemon's log (true: an error, on stderr).
    public init(settings: FleetSettings, maxAgeSeconds: UInt64, say: @escaping @Sendable (String, Bool) -> Void) {
        self.settings = settings
        self.maxAgeSeconds = settings.maxAge > 0 ? settings.maxAge : maxAgeSeconds
        self.say = say
        let wakeup = self.wakeup
        events = FleetEvents(wake: { wakeup.signal() })
    }

    public var snapshot: FleetStatistics {
        let (connected, reconnects, queued) = (
            events.state.withLock { $0.connected }, events.state.withLock { $0.reconnects }, queue.withLock { $0.count }
        )
        var snapshot = statistics.withLock { $0 }
        snapshot.connected = connected && snapshot.connected
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
                changes.append(FleetChange(key: key, end: 0, at: now, jail: "", level: 0, isDelete: true))
            }
        }
        enqueue(changes)
    }

    /// Puts CrowdSec's decisions this host enforces (`share_crowdsec`) as `HOST.crowdsec.ADDRESS`,
    /// with the jail `crowdsec/ORIGIN`, and deletes those gone.
    public func publishDecisions(_ changes: [ListChange], now boot: UInt64) {
        guard settings.shareCrowdSec, !changes.isEmpty else { return }
        let now = SystemClock.wallMilliseconds()
        enqueue(
            changes.map { change in
                let key = FleetKey.key(host: settings.host, change.network, decision: true)
                switch change {
                case .install(_, let claim):
                    let left = claim.end > boot ? (claim.end - boot) / 1_000_000 : 0
                    return FleetChange(
                        key: key, end: claim.end == .max ? 0 : now &+ left, at: now, jail: "crowdsec/" + claim.origin,
                        level: 0, isDelete: false)
                case .remove:
                    return FleetChange(key: key, end: 0, at: now, jail: "", level: 0, isDelete: true)
                }
            })
    }

    /// Appends to the queue what fits (the rest is counted), waking the link when it was empty.
    private func enqueue(_ changes: [FleetChange]) {
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

    private let encoder = JSONEncoder()

    private func encode(_ change: FleetChange) -> [UInt8] {
        let value = FleetValue(
            end: change.end, at: change.at, jail: change.jail, host: settings.host, level: change.level)
        return (try? Array(encoder.encode(value))) ?? []
    }

    /// Connects (again and again until it can), then publishes the queue as it fills.
    private func runLink() {
        var lastSaid: String?
        var saidRefusal = false
        var failures = 0
        while !stop.isSet {
            guard let bucket = bucket.withLock({ $0 }) else {
                do throws(FleetError) {
                    let made = try FleetBucket(settings: settings, maxAgeSeconds: maxAgeSeconds, events: events)
                    self.bucket.withLock { $0 = made }
                    say(
                        "fleet: host \(settings.host) connected to \(settings.servers.joined(separator: ",")), bucket "
                            + "\(settings.bucket)" + (lastSaid == nil ? "" : " (again)"), false)
                    lastSaid = nil
                    failures = 0
                    statistics.withLock {
                        $0.connected = true
                        $0.lastError = nil
                    }
                } catch {
                    failures += 1
                    let line = explain(error)
                    if error.kind + String(error.status.rawValue) != lastSaid {
                        say("fleet: " + line + "; banning goes on alone, retrying", true)
                    }
                    lastSaid = error.kind + String(error.status.rawValue)
                    statistics.withLock {
                        $0.connected = false
                        $0.lastError = line
                    }
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
                say("fleet: \(why); connecting again", true)
                lastSaid = why
                self.bucket.withLock { $0 = nil }
                continue
            }
            let batch: ArraySlice<FleetChange> = queue.withLock { queue in
                queue.changes[queue.head..<min(queue.head + 1000, queue.changes.count)]
            }
            guard !batch.isEmpty, bucket.isConnected else {
                _ = wakeup.wait(timeout: .now() + 0.2)
                continue
            }
            // Bans that ended while they waited are not put (a receiver would skip them).
            let now = SystemClock.wallMilliseconds()
            let live = batch.filter { $0.isDelete || $0.end == 0 || $0.end > now }
            let refusedBefore = events.state.withLock { $0.refusedPublishes }
            let (done, error) = live.isEmpty ? (0, nil) : bucket.publish(live[...], encode: encode)
            let refused = Int(events.state.withLock { $0.refusedPublishes } - refusedBefore)
            // Acknowledged, or refused by the server (its permissions or limits: trying again
            // would be refused again): the batch is done. Unless the bucket is gone: then again.
            if (done == live.count || refused > 0), !bucket.callbacks.bucketMissing.load(ordering: .acquiring) {
                queue.withLock { $0.head += batch.count }
                statistics.withLock {
                    $0.published += UInt64(max(live.count - refused, 0))
                    if refused > 0 { $0.dropped["refused", default: 0] += UInt64(refused) }
                    if batch.count > live.count { $0.dropped["ended", default: 0] += UInt64(batch.count - live.count) }
                }
            }
            if refused > 0 {
                let text = events.state.withLock { $0.lastAsyncError } ?? "refused"
                if !saidRefusal {
                    say(
                        "fleet: the server refused \(refused) change(s) of \(settings.host) (\(text)): let this host "
                            + "publish to $KV.\(settings.bucket).\(settings.host).> (README, \"Share bans across a fleet\")",
                        true)
                }
                saidRefusal = true
            } else if done == live.count {
                saidRefusal = false
            }
            if let error, done < live.count, refused == 0 {
                statistics.withLock { $0.lastError = explain(error) }
                _ = wakeup.wait(timeout: .now() + 0.2)
            }
        }
        let left = queue.withLock { $0.count }
        if left > 0 { statistics.withLock { $0.dropped["stopping", default: 0] += UInt64(left) } }
    }

    private func explain(_ error: FleetError) -> String {
        switch error.kind {
        case "refused":
            "the NATS server refused this host's credentials or permissions (\(error)): give the user, token, "
                + "credentials or nkey its account has"
        case "tls": "TLS with the NATS server failed (\(error)): check ca_cert_path, cert_path and key_path"
        default: "\(error)"
        }
    }

    // MARK: Watching

    /// Other hosts' bans by key, each on its network.
    private var claims = ListClaims<String>()
    private var installer: ListInstaller?
    /// Networks whose bans of other hosts are not enforced (the driver allowlist).
    public private(set) var allowlist: [IPNetwork] = []
    private let decoder = JSONDecoder()

    /// Starts the link (connect, publish) and, with `maps`, the watch.
    public func start(maps: BanMaps?, allowlist: [IPNetwork]) throws(Errno) {
        self.allowlist = allowlist
        installer = maps.map { ListInstaller(maps: $0, prefix: "fleet/") }
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

    /// Stops both threads and closes the connection. Other hosts' bans stay in force.
    public func stopAndJoin() {
        stop.set()
        wakeup.signal()
        linkThread?.join()
        watchThread?.join()
        linkThread = nil
        watchThread = nil
        bucket.withLock { $0 = nil }
    }

    private func runWatch() {
        var watcher: OpaquePointer?
        // The connection the watcher reads (a new one is read in whole again).
        weak var watched: FleetBucket?
        var installedOnce = false
        var lastSaid: String?
        var censusDue = false
        var lastCensus = 0.0
        defer { if let watcher { kvWatcher_Destroy(watcher) } }
        while !stop.isSet {
            // The counts by host walk every claim: at most once a second.
            if censusDue, SystemClock.monotonicSeconds() - lastCensus >= 1 {
                updateCensus()
                censusDue = false
                lastCensus = SystemClock.monotonicSeconds()
            }
            guard let bucket = bucket.withLock({ $0 }) else {
                SystemClock.sleep(nanoseconds: 20_000_000)
                continue
            }
            if watcher == nil || watched !== bucket || events.resync.exchange(false, ordering: .acquiring) {
                if let old = watcher { kvWatcher_Destroy(old) }
                watcher = nil
                do throws(FleetError) {
                    watcher = try readWhole(bucket, replacing: !installedOnce)
                    watched = bucket
                    installedOnce = true
                    lastSaid = nil
                } catch {
                    if "\(error.status)" != lastSaid {
                        say("fleet: cannot watch the bucket: \(explain(error)); retrying", true)
                    }
                    lastSaid = "\(error.status)"
                    statistics.withLock { $0.lastError = explain(error) }
                    SystemClock.sleep(nanoseconds: UInt64(settings.reconnectWait * 1e9))
                }
                continue
            }
            var entry: OpaquePointer?
            let waited = SystemClock.monotonicNanoseconds()
            let status = kvWatcher_Next(&entry, watcher, 100)
            if status == NATS_OK, let entry {
                var taken: [Taken] = []
                if let key = take(entry, into: &claims) { taken.append(key) }
                kvEntry_Destroy(entry)
                // An entry that was waiting already: a burst (a host's thousands of bans, the
                // queue of one back from an outage). What else waits goes in the same batched
                // write, until an entry has to be waited for (it is written with them at once) or
                // none comes within a millisecond; a ban that came alone is written at once.
                if SystemClock.monotonicNanoseconds() - waited < 100_000 {
                    while taken.count < 1024 {
                        var more: OpaquePointer?
                        let asked = SystemClock.monotonicNanoseconds()
                        guard kvWatcher_Next(&more, watcher, 1) == NATS_OK, let more else { break }
                        if let key = take(more, into: &claims) { taken.append(key) }
                        kvEntry_Destroy(more)
                        if SystemClock.monotonicNanoseconds() - asked >= 100_000 { break }
                    }
                }
                if !taken.isEmpty {
                    record(taken)
                    censusDue = true
                }
            } else if status == NATS_TIMEOUT || status == NATS_OK {
                let ended = claims.purge(now: SystemClock.bootNanoseconds())
                if !ended.isEmpty {
                    install(ended)
                    censusDue = true
                }
            } else {
                // Stopped or failed (the server's stream gone): made again.
                if let old = watcher { kvWatcher_Destroy(old) }
                watcher = nil
                SystemClock.sleep(nanoseconds: UInt64(settings.reconnectWait * 1e9))
            }
        }
    }

    /// Writes what `taken` changed into the maps (a network several entries touched once, as it
    /// is now) and counts it.
    private func record(_ taken: [Taken]) {
        var seen = Set<IPNetwork>(minimumCapacity: taken.count)
        var changes: [ListChange] = []
        changes.reserveCapacity(taken.count)
        for key in taken.reversed() where seen.insert(key.change.network).inserted {
            changes.append(claims.change(key.change.network))
        }
        install(changes)
        let (bans, networks) = (claims.count, claims.networks)
        statistics.withLock { stats in
            stats.bans = bans
            stats.networks = networks
            for key in taken {
                stats.received += 1
                if key.put { stats.installed += 1 } else { stats.lifted += 1 }
                if let lag = key.lag {
                    stats.lagSeconds += lag
                    stats.lagCount += 1
                    stats.lastLagSeconds = lag
                }
            }
        }
        if let installObserver { for key in taken { installObserver(key.key) } }
    }

    /// Reads the bucket's whole set into a new claim set and installs it: in one swap the first
    /// time (stale `fleet/` entries of an earlier run go), else the difference in place.
    /// - Returns: the watcher, now delivering changes.
    private func readWhole(_ bucket: FleetBucket, replacing: Bool) throws(FleetError) -> OpaquePointer {
        let started = SystemClock.monotonicSeconds()
        var options = kvWatchOptions()
        kvWatchOptions_Init(&options)
        var watcher: OpaquePointer?
        let status = kvStore_WatchAll(&watcher, bucket.store, &options)
        guard status == NATS_OK, let watcher else { throw FleetError.last(status, "watching the bucket") }
        var fresh = ListClaims<String>()
        var count = 0
        while !stop.isSet {
            var entry: OpaquePointer?
            let next = kvWatcher_Next(&entry, watcher, 5000)
            if next == NATS_OK, entry == nil { break }  // the whole set is in
            guard next == NATS_OK, let entry else {
                kvWatcher_Destroy(watcher)
                throw FleetError.last(next, "reading the bucket's set")
            }
            if take(entry, into: &fresh) != nil { count += 1 }
            kvEntry_Destroy(entry)
        }
        let before = Dictionary(claims.wanted(), uniquingKeysWith: { first, _ in first })
        claims = fresh
        let installStarted = SystemClock.monotonicSeconds()
        if replacing {
            do throws(FirewallError) {
                _ = try installer?.replaceAll(claims.wanted())
            } catch {
                say("fleet: the maps refused the bucket's bans: \(error)", true)
            }
        } else {
            install(claims.changes(since: before))
        }
        let took = SystemClock.monotonicSeconds()
        // The census before the count: whoever sees the read done sees what it holds.
        updateCensus()
        statistics.withLock { $0.resyncs += 1 }
        say(
            "fleet: read bucket \(settings.bucket): \(claims.count) ban(s) of other hosts on \(claims.networks) "
                + "network(s) in force (\(count) taken) in \(Int((took - started) * 1000)) ms, installed in "
                + "\(Int((took - installStarted) * 1000)) ms", false)
        return watcher
    }

    private struct Taken {
        let key: String
        let change: ListChange
        let put: Bool
        let lag: Double?
    }

    /// Applies one entry of the bucket to `set`. - Returns: what changed (nil: own, or skipped).
    private func take(_ entry: OpaquePointer, into set: inout ListClaims<String>) -> Taken? {
        guard let keyPointer = kvEntry_Key(entry) else { return nil }
        let key = String(cString: keyPointer)
        guard let (host, network) = FleetKey.parse(key) else {
            skip(.key)
            return nil
        }
        // Own keys are this host's bans, in its own maps already.
        guard host != settings.host else { return nil }
        let operation = kvEntry_Operation(entry)
        guard operation == kvOp_Put else {
            guard set.remove(key) != nil else { return nil }
            return Taken(key: key, change: set.change(network), put: false, lag: nil)
        }
        let length = Int(kvEntry_ValueLen(entry))
        guard let bytes = kvEntry_Value(entry), length > 0,
            let value = try? decoder.decode(FleetValue.self, from: Data(bytes: bytes, count: length)),
            value.host == host
        else {
            // A value not understood lifts what the key held before (its ban is no longer known).
            skip(.malformed)
            guard set.remove(key) != nil else { return nil }
            return Taken(key: key, change: set.change(network), put: false, lag: nil)
        }
        if allowlist.contains(where: {
            $0.family == network.family && $0.length <= network.length && $0.contains(network.address)
        }) {
            skip(.allowlisted)
            return nil
        }
        let now = SystemClock.wallMilliseconds()
        let end: UInt64
        if value.end == 0 {
            end = .max
        } else if value.end > now {
            end = SystemClock.bootNanoseconds() &+ (value.end - now) &* 1_000_000
        } else {
            skip(.ended)
            guard set.remove(key) != nil else { return nil }
            return Taken(key: key, change: set.change(network), put: false, lag: nil)
        }
        set.set(key, network, ListClaim(end: end, origin: host))
        return Taken(
            key: key, change: set.change(network), put: true, lag: now >= value.at ? Double(now - value.at) / 1000 : 0)
    }

    private func skip(_ reason: FleetSkip) {
        statistics.withLock { $0.skipped[reason, default: 0] += 1 }
    }

    private func install(_ changes: [ListChange]) {
        guard let installer, !changes.isEmpty else { return }
        do throws(FirewallError) {
            _ = try installer.apply(changes)
        } catch {
            say("fleet: the maps refused other hosts' bans: \(error); resynchronising", true)
            events.resync.store(true, ordering: .releasing)
        }
    }

    private func updateCensus() {
        var byHost: [String: Int] = [:]
        claims.forEachClaim { _, claim in byHost[claim.origin, default: 0] += 1 }
        let (bans, networks) = (claims.count, claims.networks)
        statistics.withLock {
            $0.bans = bans
            $0.networks = networks
            $0.byHost = byHost
        }
    }
}
