// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNATS
import FoundationEssentials
import Logging
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// The watch thread of a fleet node: the bucket's whole set, then its changes, into the maps.
extension FleetNode {
    /// Stopped while reading the bucket's set (nothing is installed from half a set).
    struct Stopped: Error {}

    func runWatch() {
        var watcher: FleetWatcher?
        // The connection the watcher reads (a new one is read in whole again).
        weak var watched: FleetBucket?
        var installedOnce = false
        var rereadAt = 0.0
        var lastSaid: String?
        var censusDue = false
        var exactCensusDue = false
        var lastCensus = 0.0
        var lastHeldTry = 0.0
        var lastEntry: UInt64 = 0
        // A whole read is due (the watcher a bridge until it is done).
        var reading = false
        func say(_ error: Error) {
            let fleetError = error as? FleetError
            let text = fleetError.map { explain($0) } ?? "\(error)"
            if text != lastSaid { logger.warning("cannot watch the bucket: \(text); retrying") }
            lastSaid = text
            statistics.withLock { $0.lastError = text }
        }
        while !stop.isSet {
            let now = SystemClock.monotonicSeconds()
            // The counts by host: as takes keep them (exact), at most once a second; after claims
            // ended (their hosts not counted down), from a walk of every claim.
            if censusDue, now - lastCensus >= 1 {
                if exactCensusDue { updateCensus() } else { updateCounts() }
                censusDue = false
                exactCensusDue = false
                lastCensus = now
            }
            guard let bucket = bucket.withLock({ $0 }) else {
                SystemClock.sleep(nanoseconds: 20_000_000)
                continue
            }
            // A write into the maps failed: the whole set again, in one swap, 5 s later.
            if installFailed, rereadAt == 0 { rereadAt = now + 5 }
            let reread = events.resync.exchange(false, ordering: .acquiring)
            if watcher == nil || watched !== bucket || reread || (rereadAt > 0 && now >= rereadAt) {
                // The plain subscription first (what is sent meanwhile waits in it), a bridge until
                // the stream's whole set is read. A bridge of this connection is kept (what it
                // holds is newer than the stream's set, and taken after it), but after a
                // reconnection (what it holds may be older than what it missed).
                if watcher?.isBridge != true || watched !== bucket || reread {
                    do {
                        watcher = try FleetWatcher(bucket, host: settings.host)
                        watched = bucket
                    } catch {
                        say(error)
                        watcher = nil
                        SystemClock.sleep(nanoseconds: UInt64(settings.reconnectWait * 1e9))
                        continue
                    }
                }
                rereadAt = 0
                reading = true
            }
            // The stream's whole set, once the stream answers and a consumer is made (no leader:
            // the bridge meanwhile).
            if reading, let bridge = watcher, bridge.isBridge, let made = bridge.consuming() {
                let replacing = !installedOnce || installFailed || replaceOnRead.exchange(false, ordering: .acquiring)
                do {
                    try made.get()
                    try readWhole(bridge, replacing: replacing, counting: !installedOnce)
                    installedOnce = true
                    reading = false
                    lastSaid = nil
                } catch let error as FleetError {
                    if replacing, installedOnce { replaceOnRead.store(true, ordering: .releasing) }
                    say(error)
                    bridge.dropConsumer()
                    // No leader to read the stream from (an election): the hosts' changes as they
                    // are sent meanwhile, on the bans the last read left; read whole again soon.
                    if !installedOnce || !FleetBucket.isElection(error.status, jsErrCode(rawValue: 0)) {
                        watcher = nil
                        SystemClock.sleep(nanoseconds: UInt64(settings.reconnectWait * 1e9))
                    }
                } catch {
                    break  // stopped
                }
                continue
            }
            // Before the first whole read, the plain messages wait (they come after it).
            if reading, !installedOnce {
                SystemClock.sleep(nanoseconds: 20_000_000)
                continue
            }
            guard let reading = watcher else { continue }
            takingBridged = reading.isBridge
            let waited = SystemClock.monotonicNanoseconds()
            let (status, entry) = reading.next(100)
            if status == NATS_OK, let entry {
                var taken: [Taken] = []
                if let key = take(entry, into: &claims, hosts: &keysByHost, counting: true) { taken.append(key) }
                // An entry that was waiting already: a burst (a host's thousands of bans, the
                // queue of one back from an outage). What else waits goes in the same batched
                // write, until an entry has to be waited for (it is written with them at once) or
                // none comes within a millisecond; a ban that came alone is written at once. Within
                // a flow (the last entry less than 5 ms before), what comes in the next 2 ms goes
                // with it: a write and a wake-up for several (FleetNode.linger).
                let arrived = SystemClock.monotonicNanoseconds()
                let flowing = arrived &- lastEntry < 5_000_000
                lastEntry = arrived
                if flowing { SystemClock.sleep(nanoseconds: Self.linger) }
                if flowing || arrived - waited < 100_000 {
                    while taken.count < 1024 {
                        let asked = SystemClock.monotonicNanoseconds()
                        guard case (NATS_OK, let more?) = reading.next(1) else { break }
                        if let key = take(more, into: &claims, hosts: &keysByHost, counting: true) { taken.append(key) }
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
                    exactCensusDue = true
                }
                // Networks another list held: that list may be gone, or its entry ended.
                if !held.isEmpty, now - lastHeldTry >= 1 {
                    lastHeldTry = now
                    let networks = held
                    held = []
                    install(networks.compactMap { network in claims.longest(network).map { .install(network, $0) } })
                }
            } else {
                // Stopped or failed (the server's stream gone): made again.
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
                if key.refresh {
                    stats.refreshed += 1
                } else if key.put {
                    stats.installed += 1
                } else {
                    stats.lifted += 1
                }
                if let lag = key.lag {
                    stats.lagSeconds += lag
                    stats.lagCount += 1
                    stats.lastLagSeconds = lag
                    stats.lastLagAt = SystemClock.monotonicSeconds()
                }
            }
        }
        if let installObserver { for key in taken { installObserver(key.key) } }
    }

    /// Reads the bucket's whole set into a new claim set and installs it: in one swap the first
    /// time and after a failed write (stale `fleet/` entries of an earlier run go), else the
    /// difference in place. `counting`: its skipped keys are counted (a read again skips the same).
    /// - Throws: `FleetError`, or `Stopped` when the node stops meanwhile.
    private func readWhole(_ watcher: FleetWatcher, replacing: Bool, counting: Bool) throws {
        let started = SystemClock.monotonicSeconds()
        var fresh = ListClaims<String>()
        var mentioned = Set<String>()
        takingBridged = false
        var freshHosts: [String: Int] = [:]
        var count = 0
        ownDecisions = []
        while true {
            guard !stop.isSet else { throw Stopped() }
            let (next, entry) = watcher.next(5000)
            if next == NATS_OK, entry == nil { break }  // the whole set is in
            guard next == NATS_OK, let entry else { throw FleetError.last(next, "reading the bucket's set") }
            if !bridged.isEmpty { mentioned.insert(entry.key) }
            if take(entry, into: &fresh, hosts: &freshHosts, counting: counting) != nil { count += 1 }
        }
        // Bans taken from a bridge the stream does not name at all: kept (see `bridged`).
        let boot = SystemClock.bootNanoseconds()
        let recent = SystemClock.monotonicSeconds() - 10
        for (key, (network, claim, at)) in bridged where !mentioned.contains(key) && claim.end > boot && at > recent {
            fresh.set(key, network, claim)
            freshHosts[claim.origin, default: 0] += 1
        }
        bridged = [:]
        let before = Dictionary(claims.wanted(), uniquingKeysWith: { first, _ in first })
        claims = fresh
        keysByHost = freshHosts
        let installStarted = SystemClock.monotonicSeconds()
        installFailed = false
        if replacing {
            do throws(FirewallError) {
                held = Set(try installer?.replaceAll(claims.wanted()).heldByOthers ?? [])
            } catch {
                refused(error)
            }
        } else {
            let changes = claims.changes(since: before)
            // Lifted by the read (their keys gone meanwhile), not merely ended.
            let now = SystemClock.bootNanoseconds()
            let lifted = changes.count { change in
                guard case .remove(let network) = change else { return false }
                return before[network].map { $0.end > now } ?? false
            }
            if lifted > 0 { statistics.withLock { $0.liftedByResync += UInt64(lifted) } }
            install(changes)
        }
        let took = SystemClock.monotonicSeconds()
        deleteStaleDecisions()
        // The census before the count: whoever sees the read done sees what it holds.
        updateCensus()
        statistics.withLock {
            $0.resyncs += 1
            $0.lastError = nil
        }
        let line =
            "read bucket \(settings.bucket): \(claims.count) ban(s) of other hosts on \(claims.networks) "
            + "network(s) in force (\(count) taken) in \(Int((took - started) * 1000)) ms, installed in "
            + "\(Int((took - installStarted) * 1000)) ms"
        logger.info("\(line)")
    }

    /// The keys of this host's shared decisions seen by the read under way.
    private var ownDecisions: Set<String> {
        get { shared.withLock { $0.inBucket } }
        set { shared.withLock { $0.inBucket = newValue } }
    }

    /// After a whole read: the shared decisions in the bucket the bouncer's first whole set no longer
    /// has (deleted while this host was down) are deleted.
    private func deleteStaleDecisions() {
        let stale = shared.withLock { shared -> Set<String> in
            shared.bucketRead = true
            guard let first = shared.firstSet else { return [] }
            shared.firstSet = nil
            return shared.inBucket.subtracting(first)
        }
        let now = SystemClock.wallMilliseconds()
        enqueue(stale.sorted().map { .delete($0, at: now) })
    }

    struct Taken {
        let key: String
        let change: ListChange
        let put: Bool
        let lag: Double?
        /// A key its host put again that this host held already (not a propagation).
        var refresh = false
    }

    /// Applies one entry of the bucket to `set` (`hosts`: its keys per host).
    /// - Returns: what changed (nil: own, or skipped).
    private func take(
        _ entry: FleetEntry, into set: inout ListClaims<String>, hosts: inout [String: Int], counting: Bool
    ) -> Taken? {
        let key = entry.key
        guard let (host, network) = FleetKey.parse(key) else {
            if counting { skip(.key) }
            return nil
        }
        // Own keys are this host's bans, in its own maps already (its shared decisions are noted).
        guard host != settings.host else {
            noteOwnKey(key, entry)
            if FleetKey.isDecision(key) {
                shared.withLock {
                    _ = entry.isPut ? $0.inBucket.insert(key).inserted : $0.inBucket.remove(key) != nil
                }
            }
            return nil
        }
        /// The key's claim goes (what the maps held for it is lifted).
        func drop() -> Taken? {
            if takingBridged { bridged[key] = nil }
            guard set.remove(key) != nil else { return nil }
            hosts[host, default: 1] -= 1
            return Taken(key: key, change: set.change(network), put: false, lag: nil)
        }
        guard entry.isPut else { return drop() }
        if ignoredHosts.withLock({ $0.contains(host) }) {
            if counting { skip(.ignored) }
            return drop()
        }
        guard let value = entryValue(entry), value.host == host
        else {
            // A value not understood lifts what the key held before (its ban is no longer known).
            if counting { skip(.malformed) }
            return drop()
        }
        if let refusal = policy.verdict(network) {
            if counting {
                switch refusal {
                case .tooWide: skip(.tooWide)
                case .neverBannable: skip(.neverBannable)
                case .allowlisted: skip(.allowlisted)
                }
            }
            return nil
        }
        let now = SystemClock.wallMilliseconds()
        let end: UInt64
        if value.end == 0 {
            end = .max
        } else if value.end > now {
            // At most ten years ahead (a peer's absurd end must not wrap the boot clock).
            end = SystemClock.bootNanoseconds() &+ min(value.end - now, 315_360_000_000) * 1_000_000
        } else {
            if counting { skip(.ended) }
            return drop()
        }
        let held = set.contains(key)
        if !held {
            // A host's flood stops at its limit: what it holds already stays, its further keys are skipped.
            guard hosts[host, default: 0] < settings.maxKeysPerHost else {
                if counting { skip(.overLimit) }
                if limitSaid.insert(host).inserted {
                    let line =
                        "host \(host) holds \(settings.maxKeysPerHost) keys here, max_keys_per_host: its further "
                        + "keys are skipped (portcullis_fleet_skipped_total{reason=\"over_limit\"})"
                    logger.warning("\(line)")
                }
                return nil
            }
            hosts[host, default: 0] += 1
        }
        set.set(key, network, ListClaim(end: end, origin: host))
        if takingBridged { bridged[key] = (network, ListClaim(end: end, origin: host), SystemClock.monotonicSeconds()) }
        // A key put again is no propagation (a host new to it installs it all the same).
        let again = value.refresh == true
        return Taken(
            key: key, change: set.change(network), put: true,
            lag: again ? nil : now >= value.at ? Double(now - value.at) / 1000 : 0, refresh: again && held)
    }

    private func skip(_ reason: FleetSkip) {
        statistics.withLock { $0.skipped[reason, default: 0] += 1 }
    }

    /// Writes `changes`; networks another list holds are tried again later, and a refusal makes the
    /// next whole read replace everything.
    func install(_ changes: [ListChange]) {
        guard let installer, !changes.isEmpty else { return }
        do throws(FirewallError) {
            held.formUnion(try installer.apply(changes).heldByOthers)
        } catch {
            refused(error)
        }
    }

    /// The maps refused a write: said once per message, the whole set read again and swapped in.
    private func refused(_ error: FirewallError) {
        installFailed = true
        let text = "\(error)"
        if text != lastInstallError {
            logger.warning("the maps refused other hosts' bans: \(text); reading the bucket again in 5 s")
        }
        lastInstallError = text
        statistics.withLock { $0.lastError = "the maps refused other hosts' bans: \(text)" }
    }

    /// The counts as takes kept them (no walk).
    func updateCounts() {
        let (bans, networks, byHost) = (claims.count, claims.networks, keysByHost.filter { $0.value > 0 })
        statistics.withLock {
            $0.bans = bans
            $0.networks = networks
            $0.byHost = byHost
        }
    }

    func updateCensus() {
        var byHost: [String: Int] = [:]
        claims.forEachClaim { _, claim in byHost[claim.origin, default: 0] += 1 }
        let (bans, networks) = (claims.count, claims.networks)
        // Exact again (ended claims went without their host counted down).
        keysByHost = byHost
        statistics.withLock {
            $0.bans = bans
            $0.networks = networks
            $0.byHost = byHost
        }
    }
}
