// SPDX-License-Identifier: Apache-2.0
import CPortcullisNATS
import Dispatch
import PortcullisSystem

/// What the link sent and the stream has not answered yet.
struct Outbox {
    /// Sent, their acknowledgements awaited, in the order sent; the first `refreshes` are keys put
    /// again (a refresh goes only when nothing else waits).
    var inflight: [FleetChange] = []
    var refreshes = 0
    /// When the oldest of them went (monotonic seconds), and the connection's counters then.
    var since = 0.0
    var unansweredBefore: UInt64 = 0
    var lostBefore: UInt64 = 0
    var refusedBefore: UInt64 = 0
    var rejectedBefore: UInt64 = 0
    /// Sent and not answered (the stream without a leader, a lost connection): sent again at
    /// `resendAt`, behind new changes; a new change of a key drops the key's earlier one here (sent
    /// again after it, it would undo it).
    var failed: [FleetChange] = []
    var resendAt = 0.0
}

extension FleetNode {
    /// Seconds between sendings of changes the stream did not answer.
    static let resendSeconds = 0.5

    /// Connects (again and again until it can), then publishes the queue as it fills. New changes
    /// never wait for the acknowledgements of earlier ones: they are sent at once (the other hosts
    /// take them from their plain messages, FleetWatcher), while the acknowledgements are awaited
    /// in slices of 50 ms; what is not answered within 2 s (0.5 s after such a wait) is sent
    /// again every 0.5 s.
    func runLink() {
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
        var outbox = Outbox()
        // After a wait that timed out (an election, likely): 0.5 s, not 2, before sending again.
        var suspect = false
        // When the last batch went (monotonic nanoseconds), when the bucket's limits were read.
        var lastBatch: UInt64 = 0
        var limitsRead = SystemClock.monotonicSeconds()
        var madeAsked = 0.0
        while !stop.isSet {
            unanswered.store(outbox.inflight.count + outbox.failed.count, ordering: .relaxed)
            guard let bucket = bucket.withLock({ $0 }) else {
                do throws(FleetError) {
                    let made = try FleetBucket(settings: settings, maxAgeSeconds: maxAgeSeconds, events: events)
                    adoptLimits(made, waiting: 2000)
                    limitsRead = SystemClock.monotonicSeconds()
                    self.bucket.withLock { $0 = made }
                    let line =
                        "host \(settings.host) connected to \(events.server ?? settings.servers.joined(separator: ",")), bucket "
                        + "\(settings.bucket)\(lastSaid == nil ? "" : " (again)")"
                    logger.info("\(line)")
                    lastSaid = nil
                    failures = 0
                    statistics.withLock { $0.lastError = nil }
                    // What the last connection sent and had not seen answered: sent again on this one.
                    outbox.failed = outbox.inflight.dropFirst(outbox.refreshes) + outbox.failed
                    outbox.inflight = []
                    outbox.refreshes = 0
                    outbox.resendAt = 0
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
            // that lost its store): connected and bound again, what was not answered sent again.
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
            // here), or one another host made again (this host's bans are put again). Asked when
            // no change waits (a stream without a leader answers in a second, or never).
            let idle = queue.withLock { !$0.waiting } && outbox.inflight.isEmpty && outbox.failed.isEmpty
            if idle, events.reconnected.load(ordering: .acquiring), SystemClock.monotonicSeconds() - madeAsked >= 2 {
                madeAsked = SystemClock.monotonicSeconds()
                switch bucket.made(settings.bucket, waiting: 250) {
                case .missing:
                    events.reconnected.store(false, ordering: .releasing)
                    bucket.callbacks.bucketMissing.store(true, ordering: .releasing)
                    continue
                case .at(let made):
                    events.reconnected.store(false, ordering: .releasing)
                    if bucketMade.map({ $0 != made }) ?? false { republishOwn() }
                    bucketMade = made
                case nil: break  // asked again when idle
                }
            }
            // The bucket's limits again each minute (an operator's `nats stream edit` is followed),
            // when no change waits and JetStream answers.
            if idle, SystemClock.monotonicSeconds() - limitsRead >= 60 {
                limitsRead = SystemClock.monotonicSeconds()
                adoptLimits(bucket)
            }
            // Within a flow (the last batch less than 5 ms before), what comes in the next 2 ms
            // goes with what waits: fewer wake-ups and acknowledgements for the same bans.
            if SystemClock.monotonicNanoseconds() &- lastBatch < 5_000_000, queue.withLock({ $0.count < 1000 }) {
                SystemClock.sleep(nanoseconds: Self.linger)
            }
            // A copy: the ban path's appends meanwhile must not copy the queue (a shared buffer).
            var batch: [FleetChange] = queue.withLock { queue in
                Array(queue.changes[queue.head..<min(queue.head + 1000, queue.changes.count)])
            }
            let isNew = !batch.isEmpty
            let now = SystemClock.wallMilliseconds()
            let monotonic = SystemClock.monotonicSeconds()
            // New changes first, then those not answered when they are due again, then keys due again
            // (a refresh) only when nothing else waits.
            var isRefresh = false
            var isResend = false
            if !isNew, !outbox.failed.isEmpty, monotonic >= outbox.resendAt {
                batch = outbox.failed
                outbox.failed = []
                isResend = true
            } else if !isNew, outbox.inflight.isEmpty, outbox.failed.isEmpty {
                let waiting = refreshing
                refreshing = refresh.withLock { schedule in waiting.filter { schedule.isStillDue($0, now: now) } }
                if refreshing.isEmpty { refreshing = dueRefreshes(now: now) }
                batch = refreshing
                isRefresh = !batch.isEmpty
            }
            guard batch.isEmpty || bucket.isConnected else {
                // Not connected: the changes wait (in the queue, or to be sent again).
                if isResend { outbox.failed = batch + outbox.failed }
                _ = wakeup.wait(timeout: .now() + 0.2)
                continue
            }
            if batch.isEmpty, outbox.inflight.isEmpty {
                _ = wakeup.wait(timeout: .now() + (outbox.failed.isEmpty ? 0.2 : Self.resendSeconds / 2))
                continue
            }
            if !batch.isEmpty {
                lastBatch = SystemClock.monotonicNanoseconds()
                // Bans that ended while they waited are not put (a receiver would skip them).
                let live = batch.filter { $0.isDelete || $0.end == 0 || $0.end > now }
                // Counted as queued until answered (before the queue's head moves past them).
                unanswered.store(outbox.inflight.count + outbox.failed.count + live.count, ordering: .relaxed)
                if isNew {
                    queue.withLock { $0.head += batch.count }
                    if !outbox.failed.isEmpty {
                        let keys = Set(live.map(\.key))
                        outbox.failed.removeAll { keys.contains($0.key) }
                    }
                }
                if !isRefresh, batch.count > live.count {
                    statistics.withLock { $0.dropped["ended", default: 0] += UInt64(batch.count - live.count) }
                }
                if outbox.inflight.isEmpty {
                    outbox.since = monotonic
                    outbox.unansweredBefore = bucket.callbacks.unanswered.load(ordering: .relaxed)
                    outbox.lostBefore = bucket.callbacks.lost.load(ordering: .acquiring)
                    (outbox.refusedBefore, outbox.rejectedBefore) = events.state.withLock {
                        ($0.refusedPublishes, $0.rejectedPublishes)
                    }
                }
                let (sent, error) = bucket.send(live[...], encode: { encode($0, refresh: isRefresh) })
                outbox.inflight += live[..<sent]
                if isRefresh { outbox.refreshes += sent }
                if let error {
                    // Not sent (the connection's buffer full while it reconnects): again soon.
                    if !isRefresh { outbox.failed += live[sent...] }
                    outbox.resendAt = monotonic + Self.resendSeconds
                    statistics.withLock { $0.lastError = explain(error) }
                }
            }
            guard !outbox.inflight.isEmpty else { continue }
            // The acknowledgements: 50 ms at most, then what came meanwhile is sent.
            let completed = bucket.awaitAcknowledgements(milliseconds: 50)
            let lost = bucket.callbacks.lost.load(ordering: .acquiring) != outbox.lostBefore
            let waited = SystemClock.monotonicSeconds() - outbox.since
            if completed == NATS_TIMEOUT, !lost, waited < (suspect ? 0.5 : 2) { continue }
            var failure: FleetError?
            if completed != NATS_OK {
                // Not acknowledged in time: nats.c forgets them; sent again (twice is harmless).
                bucket.forgetPending()
                failure = FleetError.last(completed, "no acknowledgement from the server")
            } else {
                let noAnswer = bucket.callbacks.unanswered.load(ordering: .relaxed) &- outbox.unansweredBefore
                if noAnswer > 0 { failure = bucket.unanswered(noAnswer) }
            }
            let (refused, rejected, refusal, rejection) = events.state.withLock {
                (
                    Int($0.refusedPublishes - outbox.refusedBefore), Int($0.rejectedPublishes - outbox.rejectedBefore),
                    $0.lastAsyncError, $0.lastRejection
                )
            }
            // Acknowledged, or refused or rejected by the server (its permissions, its limits:
            // trying again would meet them again): done.
            let inflight = outbox.inflight
            let refreshes = outbox.refreshes
            outbox.inflight = []
            outbox.refreshes = 0
            suspect = failure != nil
            if let failure, refused + rejected == 0 {
                // The keys put again are taken from the schedule again; the rest sent again when due.
                outbox.failed += inflight.dropFirst(refreshes)
                outbox.resendAt = SystemClock.monotonicSeconds() + Self.resendSeconds
                statistics.withLock { $0.lastError = explain(failure) }
            } else {
                if refreshes > 0 { refreshing = [] }
                sent(inflight, at: now)
                events.answered()
                statistics.withLock {
                    $0.published += UInt64(max(inflight.count - refused - rejected, 0))
                    $0.republished += UInt64(refreshes)
                    if refused > 0 { $0.dropped["refused", default: 0] += UInt64(refused) }
                    if rejected > 0 { $0.dropped["rejected", default: 0] += UInt64(rejected) }
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
            saidRefusal = refused > 0 || (saidRefusal && failure != nil)
            saidRejection = rejected > 0 || (saidRejection && failure != nil)
        }
        // What was not answered goes back to the queue's head (a node replaced by a reload takes it).
        let left = outbox.inflight.dropFirst(outbox.refreshes) + outbox.failed
        unanswered.store(0, ordering: .relaxed)
        if !left.isEmpty { adopt(Array(left)) }
        let stopped = queue.withLock { $0.count }
        if stopped > 0 { statistics.withLock { $0.dropped["stopping", default: 0] += UInt64(stopped) } }
    }
}
