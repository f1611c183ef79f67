// SPDX-License-Identifier: Apache-2.0
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon's side of the XDP ban maps, and the one place that changes its bans: workers install
/// them, the expiry thread lifts them (exact and network bans), aggregates replace their members,
/// an operator bans and unbans through the control socket; all hold one lock while they do (a lift
/// that found a ban ended must not delete a re-ban made meanwhile). The daemon's own bans beside
/// the maps are `OwnBans`.
///
/// Bans are the operator's too (`portcullis ban`, later a list or CrowdSec), so the daemon never
/// shortens one: an address that already has a ban ending at or after the daemon's, or for good,
/// keeps it (`kept`). It lifts only bans that have ended, and atomically against a `portcullis
/// ban` written meanwhile (`BanMaps.liftIfEnded`). An operator's `unban` of one of the daemon's
/// bans starts the client's count over (found by the lift at the ban's end, or by the sweep,
/// also for bans for good).
final class Enforcement: @unchecked Sendable {
    /// The maps (or, in tests, a store in memory): one dynamic call per batch of bans.
    let maps: any BanStore
    /// Boot time for the daemon's own bookkeeping (when a ban was made or forgotten).
    let clock: DaemonClock
    /// The daemon's own bans: changed only under `lock`.
    private let own = OwnBans()
    /// When each of the daemon's timed bans ends (the expiry thread takes the due ones).
    var schedule: ExpirySchedule { own.schedule }
    private let lock = Mutex<Void>(())
    /// Tests only: a pause between a lift's look-ups and its delete, to widen that window.
    var liftPauseNanoseconds: UInt64 = 0
    /// Tests only: called by the network lift between its read of the network bans and its
    /// deletes (to hold that window open).
    var networkLiftPause: () -> Void = {}
    /// Benchmarks only: false leaves every crossing unbanned (`Daemon.installsBans`).
    var installs = true

    /// Keys a lift handles per hold of the lock, so that a worker installing bans waits for one
    /// chunk at most.
    static let liftChunk = 512

    init(maps: any BanStore, clock: DaemonClock) {
        self.maps = maps
        self.clock = clock
    }

    /// What `install` did with the addresses given.
    struct Installed {
        /// Banned by the daemon now.
        var banned: [IPAddress] = []
        /// Already banned longer (or for good) by someone else: left as they were.
        var kept: [IPAddress] = []
        /// Not banned: the map is full (to retry later).
        var failed: [IPAddress] = []
        /// How long each of `banned` is banned, in seconds (0: for good).
        var seconds: [UInt64] = []
        /// Per `banned`, the prefix length of its ban (an address's full length, or the jail's
        /// `ipv6-prefix`).
        var prefixLengths: [Int] = []
        /// Per `banned`, its escalation level (empty: all 0, a jail without escalation).
        var levels: [UInt32] = []
    }

    /// Installs `jail`'s bans, one batched update per family, never shortening a ban already
    /// there. Their end is taken under the lock: a worker that waited for a lift does not lose the
    /// wait. Repeat offenders of a jail with escalation get longer bans (and those that went in are
    /// recorded in its history).
    func install(_ addresses: [IPAddress], jail: Jail, clock: DaemonClock) -> Installed {
        guard installs else { return Installed() }
        // A jail with ipv6-prefix counted its IPv6 clients by prefix: those are bans of networks.
        if let length = jail.configuration.aggregation.ipv6Prefix, addresses.contains(where: { !$0.isIPv4 }) {
            let exact = addresses.filter(\.isIPv4)
            var result = exact.isEmpty ? Installed() : install(exact, jail: jail, clock: clock)
            let networks = installNetworks(addresses.filter { !$0.isIPv4 }, length: length, jail: jail, clock: clock)
            result.banned += networks.banned
            result.seconds += networks.seconds
            result.prefixLengths += networks.prefixLengths
            if !result.levels.isEmpty || !networks.levels.isEmpty {
                result.levels =
                    Self.padded(result.levels, exact.isEmpty ? 0 : result.banned.count - networks.banned.count)
                    + Self.padded(networks.levels, networks.banned.count)
            }
            result.kept += networks.kept
            result.failed += networks.failed
            return result
        }
        let wallSeconds = SystemClock.wallSeconds()
        let (durations, levels) = jail.banSeconds(for: addresses, wallSeconds: wallSeconds)
        var result = Installed()
        let banned: [Int] = lock.withLock { _ in
            let now = clock.bootNow
            let expiries = durations.map { BanPolicy.expiry(seconds: $0, now: now) }
            let outcome = maps.banKeepingLonger(
                batch: addresses.indices.map { BanRequest(addresses[$0], expiries[$0], origin: jail.origin) })
            result.banned = outcome.installed.map { addresses[$0] }
            if !outcome.kept.isEmpty {
                result.kept = outcome.kept.map { addresses[$0] }
                own.watch(result.kept)
            }
            if !outcome.failed.isEmpty { result.failed = outcome.failed.map { addresses[$0] } }
            // Their ends, by ban length (a jail's ban time; each escalation level): one queue each.
            var byLength: [(seconds: UInt64, bans: [(address: IPAddress, end: UInt64)])] = []
            for index in outcome.installed {
                switch expiries[index] {
                case .at(let end):
                    let length = durations[index]
                    if let group = byLength.firstIndex(where: { $0.seconds == length }) {
                        byLength[group].bans.append((addresses[index], end))
                    } else {
                        byLength.append((length, [(addresses[index], end)]))
                    }
                case .permanent: own.watch(CollectionOfOne(addresses[index]))
                }
            }
            for group in byLength { own.banned(group.bans, lengthSeconds: group.seconds, made: now) }
            return outcome.installed
        }
        result.seconds = banned.map { durations[$0] }
        if !levels.isEmpty { result.levels = banned.map { levels[$0] } }
        result.prefixLengths = result.banned.map { IPNetwork.fullLength($0.family) }
        jail.recordBans(result.banned, seconds: result.seconds, wallSeconds: wallSeconds)
        // An escalated ban lasts longer than the jail's ban time, after which the table would start
        // the client's count over and a crossing would ban (and count) it again while it is still
        // banned: its count is dated to end with the ban, as a resumed ban's is.
        let base = jail.policy.banTime
        if base > 0 {
            let now = clock.tableNow
            for (index, address) in result.banned.enumerated() where result.seconds[index] > base {
                jail.table.markBanned(address, now: now, remaining: UInt32(clamping: result.seconds[index]))
            }
        }
        return result
    }

    /// Bans the networks of `length` around `addresses` (their keys, already masked), never
    /// shortening a ban of the same network already there. Their ends are not scheduled: the
    /// program passes an ended network ban, and the sweep removes it (`liftEndedNetworks`).
    private func installNetworks(_ addresses: [IPAddress], length: Int, jail: Jail, clock: DaemonClock) -> Installed {
        let wallSeconds = SystemClock.wallSeconds()
        let (durations, levels) = jail.banSeconds(for: addresses, wallSeconds: wallSeconds)
        var result = Installed()
        lock.withLock { _ in
            let now = clock.bootNow
            for (index, address) in addresses.enumerated() {
                let network = IPNetwork(containing: address, length: length)
                let expiry = BanPolicy.expiry(seconds: durations[index], now: now)
                if let existing = try? maps.lookup(network: network), !existing.isExpired(now: now),
                    Self.lasts(existing.expiry, atLeastAs: expiry)
                {
                    result.kept.append(address)
                    continue
                }
                do {
                    try maps.ban(network: network, expiry, origin: jail.origin)
                    result.banned.append(address)
                    result.seconds.append(durations[index])
                    result.prefixLengths.append(length)
                    if !levels.isEmpty { result.levels.append(levels[index]) }
                } catch {
                    result.failed.append(address)
                }
            }
        }
        jail.recordBans(result.banned, seconds: result.seconds, wallSeconds: wallSeconds)
        return result
    }

    /// `levels` of `count` bans (empty: all 0).
    private static func padded(_ levels: [UInt32], _ count: Int) -> [UInt32] {
        levels.isEmpty ? [UInt32](repeating: 0, count: count) : levels
    }

    static func lasts(_ existing: BanExpiry, atLeastAs new: BanExpiry) -> Bool {
        switch (existing, new) {
        case (.permanent, _): true
        case (.at, .permanent): false
        case (.at(let old), .at(let end)): old >= end
        }
    }

    /// Bans `prefix.network` (an aggregate of its members' bans) and lifts the members' own bans,
    /// which it covers. - Returns: whether the prefix went in.
    func aggregate(_ prefix: BanAggregator.Prefix, jail: Jail) -> Bool {
        lock.withLock { _ in
            do {
                try maps.ban(network: prefix.network, prefix.expiry, origin: jail.origin)
            } catch {
                return false
            }
            for member in prefix.members {
                if member.isSingleAddress {
                    _ = try? maps.unban(member.address)
                    own.forget(member.address, now: clock.bootNow)
                } else {
                    _ = try? maps.unban(network: member)
                }
            }
            return true
        }
    }

    /// Deletes the bans of `addresses` that have ended (one in force, an operator's set since, is
    /// left) and resets their counts in `table`; a ban already gone (`portcullis unban`) just
    /// resets.
    /// - Parameter lifted: called after each chunk that deleted bans, outside the lock, with the
    ///   chunk's lifted addresses and their bans' origin slots (so that a re-ban made meanwhile is
    ///   logged after its unban).
    /// - Returns: the bans deleted.
    func lift(
        _ addresses: [IPAddress], tables: [OffenceTable], clock: DaemonClock,
        lifted: ([IPAddress], [UInt32]) -> Void
    ) -> UInt64 {
        var deleted: UInt64 = 0
        var start = 0
        while start < addresses.count {
            let chunk = addresses[start..<min(start + Self.liftChunk, addresses.count)]
            start += chunk.count
            let (ended, origins) = lock.withLock { _ in liftChunk(chunk, tables: tables, clock: clock) }
            deleted += UInt64(ended.count)
            if !ended.isEmpty { lifted(ended, origins) }
        }
        return deleted
    }

    /// Every jail's count of a lifted client restarts: the one that banned it, and any other
    /// whose crossing was kept on that ban (`resetEnded` leaves counts below the threshold).
    private func liftChunk(
        _ chunk: ArraySlice<IPAddress>, tables: [OffenceTable], clock: DaemonClock
    ) -> (ended: [IPAddress], origins: [UInt32]) {
        if liftPauseNanoseconds > 0 { SystemClock.sleep(nanoseconds: liftPauseNanoseconds) }
        var ended: [IPAddress] = []
        var origins: [UInt32] = []
        let now = clock.bootNow
        for address in chunk {
            // Banned again since (made longer, an operator's): in force, left without a delete.
            if case .some(.some(let entry)) = try? maps.lookup(address), !entry.isExpired(now: now) { continue }
            switch Result(catching: { () throws(FirewallError) in try maps.liftIfEnded(address, now: now) }) {
            case .success(.lifted(let entry)):
                ended.append(address)
                origins.append(entry.origin)
                // Only the count of the ban that ended: one that restarted, or crossed again, since
                // its end is kept.
                for table in tables {
                    if case .at(let end) = entry.expiry {
                        table.resetEnded(address, endedAt: clock.tableSecond(ofBootTime: end))
                    } else {
                        table.reset(address)
                    }
                }
            case .success(.absent):
                for table in tables { table.reset(address) }
            case .success(.inForce), .failure:
                continue
            }
        }
        return (ended, origins)
    }

    /// An operator's bans, through the daemon (its control socket): each address gets `expiry`
    /// (replacing a ban it had, its drop count kept), its end is waited for like the daemon's own,
    /// and every jail counts it as banned. - Returns: the addresses banned (an address whose map
    /// is full is left out).
    func operatorBan(
        _ addresses: [IPAddress], expiry: BanExpiry, origin: UInt32, tables: [OffenceTable], clock: DaemonClock
    ) -> [IPAddress] {
        lock.withLock { _ in
            var banned: [IPAddress] = []
            let now = clock.tableNow
            for address in addresses {
                guard (try? maps.ban(address, expiry, origin: origin)) != nil else { continue }
                banned.append(address)
                own.replace(address, with: expiry, now: clock.bootNow)
                switch expiry {
                case .at(let end):
                    let remaining = clock.tableSecond(ofBootTime: end) &- now
                    for table in tables { table.markBanned(address, now: now, remaining: remaining) }
                case .permanent:
                    for table in tables { table.markBanned(address, now: now) }
                }
            }
            return banned
        }
    }

    /// An operator's unbans, through the daemon: the bans are deleted and the clients' counts
    /// start over in every jail. - Returns: the addresses that had a ban, and their bans' origin
    /// slots (what the journal's line names).
    func operatorUnban(_ addresses: [IPAddress], tables: [OffenceTable]) -> (lifted: [IPAddress], origins: [UInt32]) {
        lock.withLock { _ in
            var lifted: [IPAddress] = []
            var origins: [UInt32] = []
            for address in addresses {
                let origin = (try? maps.lookup(address))??.origin
                guard (try? maps.unban(address)) == true else { continue }
                lifted.append(address)
                origins.append(origin ?? BanEntry.operatorOrigin)
                own.forget(address, now: clock.bootNow)
                for table in tables { table.reset(address) }
            }
            return (lifted, origins)
        }
    }

    /// An operator's bans of networks, through the daemon, under the lock like the jails' own.
    /// - Returns: per network, nil when it went in, else why not.
    func operatorBan(networks: [IPNetwork], expiry: BanExpiry, origin: UInt32) -> [FirewallError?] {
        lock.withLock { _ in
            networks.map { network in
                do throws(FirewallError) {
                    try maps.ban(network: network, expiry, origin: origin)
                    return nil
                } catch {
                    return error
                }
            }
        }
    }

    /// An operator's unbans of networks (each as it was banned), through the daemon.
    /// - Returns: per network, whether it was banned, or why it could not be looked at.
    func operatorUnban(networks: [IPNetwork]) -> [Result<Bool, FirewallError>] {
        lock.withLock { _ in
            networks.map { network in Result { () throws(FirewallError) in try maps.unban(network: network) } }
        }
    }

    /// Lifts the network bans that have ended (a jail's `ipv6-prefix`, aggregates, an operator's
    /// prefixes; the program passes them already), a chunk per hold of the lock, each by
    /// lookup-and-delete (`BanMaps.liftIfEnded(network:now:)`): a network banned again since the
    /// maps were read is left in force. - Returns: how many were lifted.
    func liftEndedNetworks(now: UInt64) -> Int {
        guard let bans = try? maps.networkBans() else { return 0 }
        let ended = bans.filter { $0.isExpired(now: now) }.map(\.network)
        guard !ended.isEmpty else { return 0 }
        networkLiftPause()
        var lifted = 0
        var start = 0
        while start < ended.count {
            let chunk = ended[start..<min(start + Self.liftChunk, ended.count)]
            start += chunk.count
            lifted += lock.withLock { _ in
                chunk.count(where: { network in
                    if case .lifted = try? maps.liftIfEnded(network: network, now: now) { true } else { false }
                })
            }
        }
        return lifted
    }

    /// A ban found in the maps at start (a restart): its end waited for, or, for good, watched.
    func resume(_ address: IPAddress, expiry: BanExpiry) {
        lock.withLock { _ in own.resume(address, expiry: expiry, now: clock.bootNow) }
    }

    /// The daemon's own bans: those whose ends it waits for (with when each was made and ends)
    /// and those it watches (for good, or kept on someone else's ban: no end). What the sweep
    /// checks, a slice at a time (`forgetGone`).
    var ownBans: [ExpirySchedule.Waited] {
        lock.withLock { _ in own.all }
    }

    /// Of `bans` (some of `ownBans`, taken a while ago), those the daemon still owns whose bans are
    /// no longer in the maps (an operator's `unban` written there directly): their counts start
    /// over and the daemon forgets them. A ban whose end has come since is the lift's, not this.
    /// - Returns: how many were found gone.
    func forgetGone(_ bans: ArraySlice<ExpirySchedule.Waited>, tables: [OffenceTable], now: UInt64) -> Int {
        lock.withLock { _ in
            var forgotten = 0
            for ban in bans where own.owns(ban, now: now) {
                guard (try? maps.lookup(ban.address)) == .some(nil) else { continue }
                for table in tables { table.reset(ban.address) }
                own.forget(ban.address, now: clock.bootNow)
                forgotten += 1
            }
            return forgotten
        }
    }
}
