// SPDX-License-Identifier: Apache-2.0
import CPortcullisNATS
import FoundationEssentials
import Logging
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// The bucket's max age and replicas as its stream has them.
struct BucketLimits: Equatable {
    /// Seconds a key stays (0: for good).
    var maxAgeSeconds: UInt64
    var replicas: Int
}

extension FleetBucket {
    /// The bucket's max age and replicas (nil when the server could not say within `milliseconds`:
    /// the link waits for it, and a stream without a leader answers never).
    func limits(waiting milliseconds: Int64 = 250) -> BucketLimits? {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = milliseconds
        let status = js_GetStreamInfo(&info, jetStream, "KV_" + name, &options, &code)
        defer { if let info { jsStreamInfo_Destroy(info) } }
        guard status == NATS_OK, let config = info?.pointee.Config else { return nil }
        return BucketLimits(
            maxAgeSeconds: UInt64(max(config.pointee.MaxAge, 0)) / 1_000_000_000, replicas: Int(config.pointee.Replicas)
        )
    }
}

/// Putting this host's keys again: only those whose ban outlasts the bucket's max age (the
/// bucket's, read after binding: another host may have made it), each when it is due, behind new
/// bans (a refresh batch goes only when no new change waits).
extension FleetNode {
    /// Keys put again per batch: a new ban waits for at most one such batch.
    static let refreshBatch = 250

    /// After binding, before anything is published or watched: the schedule takes the bucket's
    /// max age; a difference from what this host would make is said once.
    func adoptLimits(_ bucket: FleetBucket, waiting milliseconds: Int64 = 250) {
        guard let limits = bucket.limits(waiting: milliseconds) else { return }
        refresh.withLock { $0.setMaxAge(milliseconds: limits.maxAgeSeconds &* 1000) }
        statistics.withLock { $0.bucketMaxAgeSeconds = limits.maxAgeSeconds }
        let wanted = BucketLimits(maxAgeSeconds: maxAgeSeconds, replicas: settings.replicas)
        guard limits != wanted, limits != saidLimits.withLock({ $0 }) else { return }
        saidLimits.withLock { $0 = limits }
        logger.warning("\(Self.limitsLine(bucket: settings.bucket, has: limits, wanted: wanted))")
    }

    /// The line said when the bucket's limits differ from this host's settings.
    static func limitsLine(bucket: String, has: BucketLimits, wanted: BucketLimits) -> String {
        func age(_ seconds: UInt64) -> String { seconds == 0 ? "for good" : "\(seconds) s" }
        let kept =
            has.maxAgeSeconds == 0
            ? "nothing is put again" : "bans longer than \(has.maxAgeSeconds) s are put again before their keys age out"
        return "bucket \(bucket) keeps keys \(age(has.maxAgeSeconds)) with \(has.replicas) replica(s); this host "
            + "would make it keep them \(age(wanted.maxAgeSeconds)) with \(wanted.replicas) (its longest ban or "
            + "max_age, replicas): this host goes by the bucket's (\(kept)); to change them: nats stream edit KV_\(bucket) "
            + "--max-age \(wanted.maxAgeSeconds)s --replicas \(wanted.replicas)"
    }

    /// A key of this host the watch read (`created`: when the server took it, nanoseconds since
    /// the epoch): one of an earlier run is scheduled from its put (this run's are known already).
    func noteOwnKey(_ key: String, _ entry: FleetEntry) {
        let created = UInt64(max(entry.created, 0)) / 1_000_000
        guard created < startedAt, entry.isPut else { return }
        guard let value = entryValue(entry) else { return }
        let change = FleetChange(
            key: key, end: value.end, at: value.at, jail: value.jail, level: value.level, isDelete: false)
        refresh.withLock { $0.learn(change, putAt: created) }
    }

    /// The keys due to be put again by `now` whose bans this host's maps still hold (the others
    /// are forgotten: their keys age out).
    func dueRefreshes(now: UInt64) -> [FleetChange] {
        let due = refresh.withLock { $0.takeDue(now: now, limit: Self.refreshBatch) }
        guard let maps else { return due }
        var gone: [String] = []
        let held = due.filter { change in
            // A shared decision is the bouncer's to delete; a key not understood is kept as it was.
            guard !FleetKey.isDecision(change.key), let (_, network) = FleetKey.parse(change.key) else { return true }
            let found = (try? maps.lookup(network: network)).map { $0 != nil } ?? true
            if !found { gone.append(change.key) }
            return found
        }
        if !gone.isEmpty { refresh.withLock { schedule in for key in gone { schedule.forget(key) } } }
        return held
    }

    /// What went to the bucket at `putAt`: puts scheduled (or forgotten), deletes forgotten.
    func sent(_ changes: [FleetChange], at putAt: UInt64) {
        refresh.withLock { schedule in
            for change in changes { schedule.put(change, at: putAt) }
        }
    }

    /// Puts again, soon and behind new bans, this host's bans in force (its jails' and its
    /// operator's: the exact, prefix and CIDR maps; with `share_crowdsec`, its CrowdSec decisions of
    /// the list layer): a bucket made anew lost their keys.
    func republishOwn() {
        guard let maps else { return }
        do throws(FirewallError) {
            let names = try maps.originNames()
            let boot = SystemClock.bootNanoseconds()
            let wall = SystemClock.wallMilliseconds()
            var changes: [FleetChange] = []
            func add(_ network: IPNetwork, _ expiry: BanExpiry, _ origin: UInt32, decision: Bool = false) {
                let end: UInt64
                switch expiry {
                case .permanent: end = 0
                case .at(let at):
                    guard at > boot else { return }
                    end = wall &+ (at - boot) / 1_000_000
                }
                changes.append(
                    FleetChange(
                        key: FleetKey.key(host: settings.host, network, decision: decision), end: end, at: wall,
                        jail: names[origin] ?? "manual", level: 0, isDelete: false))
            }
            for entry in try maps.entries() {
                add(IPNetwork(containing: entry.address, length: 128), entry.expiry, entry.origin)
            }
            for entry in try maps.networkBans() { add(entry.network, entry.expiry, entry.origin) }
            if settings.shareCrowdSec {
                for entry in try maps.listEntries() where names[entry.origin]?.hasPrefix("crowdsec/") == true {
                    add(entry.network, entry.expiry, entry.origin, decision: true)
                }
            }
            refresh.withLock { schedule in for change in changes { schedule.putSoon(change) } }
        } catch {
            logger.warning("cannot read this host's bans to put them again: \(error)")
        }
    }
}
