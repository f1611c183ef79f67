import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The daemon's side of the XDP ban maps: workers install bans, the expiry thread lifts them, and
/// both hold one lock while they do. A lift looks a ban up, finds it ended, then deletes it; a
/// worker re-banning the client in between (its offences since the end crossed the threshold
/// again) would otherwise see its new ban deleted with the old.
final class Enforcement: @unchecked Sendable {
    let maps: BanMaps
    /// When each of the daemon's bans ends.
    let schedule = ExpirySchedule()
    private let lock = Mutex<Void>(())
    /// Tests only: a pause between a lift's look-ups and its delete, to widen that window.
    var liftPauseNanoseconds: UInt64 = 0

    /// Keys a lift handles per hold of the lock, so that a worker installing bans waits for one
    /// chunk at most.
    static let liftChunk = 512

    init(maps: BanMaps) {
        self.maps = maps
    }

    /// Installs bans with one batched update; on failure (a full map) one by one. Their end is
    /// taken under the lock: a worker that waited for a lift does not lose the wait from its bans.
    /// - Returns: the addresses banned, and those that failed (to retry later).
    func install(
        _ addresses: [IPAddress], policy: BanPolicy, clock: DaemonClock
    )
        -> (installed: [IPAddress], failed: [IPAddress])
    {
        lock.withLock { _ in
            let expiry = policy.expiry(now: clock.bootNow)
            let requests = addresses.map { BanRequest($0, expiry) }
            var installed: [IPAddress] = []
            var failed: [IPAddress] = []
            do {
                try maps.ban(batch: requests)
                installed = addresses
            } catch {
                for request in requests {
                    do {
                        try maps.insert(request)
                        installed.append(request.address)
                    } catch {
                        failed.append(request.address)
                    }
                }
            }
            if case .at(let end) = expiry {
                for address in installed { schedule.add(address, end: end) }
            }
            return (installed, failed)
        }
    }

    /// Deletes the bans of `addresses` that have really ended (an operator may have banned a
    /// client again, longer or for good, since) and resets their counts in `table`; a ban already
    /// gone (`portcullis unban`) just resets.
    /// - Parameter lifted: called after each chunk that deleted bans, outside the lock, with the
    ///   chunk's ended addresses (so that a re-ban made meanwhile is logged after its unban).
    /// - Returns: the bans deleted.
    func lift(
        _ addresses: [IPAddress], table: OffenceTable, clock: DaemonClock, lifted: ([IPAddress]) -> Void
    ) -> UInt64 {
        var deleted: UInt64 = 0
        var start = 0
        while start < addresses.count {
            let chunk = addresses[start..<min(start + Self.liftChunk, addresses.count)]
            start += chunk.count
            let (count, ended) = lock.withLock { _ in liftChunk(chunk, table: table, clock: clock) }
            deleted += UInt64(count)
            if count > 0 { lifted(ended) }
        }
        return deleted
    }

    private func liftChunk(
        _ chunk: ArraySlice<IPAddress>, table: OffenceTable, clock: DaemonClock
    )
        -> (deleted: Int, ended: [IPAddress])
    {
        var ended: [(address: IPAddress, end: UInt64)] = []
        for address in chunk {
            switch Result(catching: { () throws(FirewallError) in try maps.lookup(address) }) {
            case .success(let entry?) where entry.isExpired(now: clock.bootNow):
                if case .at(let end) = entry.expiry { ended.append((address, end)) }
            case .success(nil):
                table.reset(address)
            default:
                continue
            }
        }
        if liftPauseNanoseconds > 0 { SystemClock.sleep(nanoseconds: liftPauseNanoseconds) }
        let deleted = (try? maps.unban(batch: ended.map(\.address))) ?? 0
        // Only the count of the ban that ended: one that restarted, or crossed again, since its
        // end is kept.
        for (address, end) in ended { table.resetEnded(address, endedAt: clock.tableSecond(ofBootTime: end)) }
        return (deleted, ended.map(\.address))
    }
}
