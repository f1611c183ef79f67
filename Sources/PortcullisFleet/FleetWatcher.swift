// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNATS
import FoundationEssentials
import PortcullisSystem

/// One change of the bucket the watch delivers: a key put (with its value) or deleted.
struct FleetEntry {
    let key: String
    let isPut: Bool
    let value: Data
    /// When the stream took it, nanoseconds since the epoch (a plain NATS message of an
    /// election's bridge: when it came).
    var created: Int64 = 0
}

/// The watch of the bucket: an ordered consumer of its stream (the last entry of every key, then
/// each change) with a short heartbeat. nats.c's own watcher asks 5 s (a consumer lost with its
/// stream leader noticed after 10 to 20 s, made again every 10 s); this one asks
/// `FleetBucket.watchHeartbeatNanoseconds`: two heartbeats missed, nats.c makes the consumer again
/// from the next sequence, on the new leader once there is one, and tries again at each missed
/// pair until then.
///
/// A stream without a leader stores no put: during an election (4 to 9 s on nats-server 2.9) each
/// host's puts go unanswered, and the host sends them again every 0.2 s. The watch asks for the
/// stream's state once a second; when it gets no answer (or the consumer missed its heartbeats),
/// until the consumer delivers again, it also subscribes to the bucket's subjects as plain NATS
/// and takes those puts as they are sent (the same keys and values, each once; the stream
/// delivers them again once it has a leader, which changes nothing): a ban made during an
/// election reaches the other hosts without waiting for it. Read by one thread.
final class FleetWatcher {
    /// The consumer (nil: a bridge, the plain subscription alone).
    private let subscription: OpaquePointer?
    private let bucket: FleetBucket
    /// The plain subscription of a stall, and the puts it delivered (key and value: each taken once).
    private var stall: OpaquePointer?
    private var stallSeen = Set<String>()
    /// When the stream was last asked whether it answers (monotonic seconds).
    private var askedAt = SystemClock.monotonicSeconds()
    private let prefixLength: Int
    /// Whether the whole set was delivered, and whether that was said (`next` returns nil once).
    private var wholeDone: Bool
    private var wholeSaid = false

    init(_ bucket: FleetBucket) throws(FleetError) {
        self.bucket = bucket
        bucket.callbacks.watchStalled.store(false, ordering: .releasing)
        // What the stream holds before the consumer is made: nothing, the whole (empty) set is in
        // at once (a key put meanwhile comes as a change). The stream's look-up, not the
        // consumer's: the fleet's account allows that one.
        // A second at most for each request: during an election the read is tried again soon.
        var requests = jsOptions()
        jsOptions_Init(&requests)
        requests.Wait = 1000
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        var status = js_GetStreamInfo(&info, bucket.jetStream, "KV_" + bucket.name, &requests, &code)
        defer { if let info { jsStreamInfo_Destroy(info) } }
        guard status == NATS_OK, let info else { throw FleetError.last(status, "watching the bucket") }
        wholeDone = info.pointee.State.Msgs == 0
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        options.Ordered = true
        options.Config.DeliverPolicy = js_DeliverLastPerSubject
        options.Config.Heartbeat = FleetBucket.watchHeartbeatNanoseconds
        prefixLength = bucket.subjectPrefix.utf8.count
        var made: OpaquePointer?
        status = "KV_\(bucket.name)".withCString { stream in
            options.Stream = stream
            return js_SubscribeSync(&made, bucket.jetStream, bucket.subjectPrefix + ">", &requests, &options, &code)
        }
        guard status == NATS_OK, let made else { throw FleetError.last(status, "watching the bucket") }
        status = natsSubscription_SetPendingLimits(made, -1, -1)
        guard status == NATS_OK else {
            natsSubscription_Destroy(made)
            throw FleetError.last(status, "watching the bucket")
        }
        subscription = made
    }

    /// A bridge: while the stream cannot be read whole (no leader), the hosts' puts as they are
    /// sent, into the claims the last whole read left. Nil when it cannot subscribe.
    init?(bridging bucket: FleetBucket) {
        self.bucket = bucket
        subscription = nil
        prefixLength = bucket.subjectPrefix.utf8.count
        wholeDone = true
        wholeSaid = true
        var made: OpaquePointer?
        guard natsConnection_SubscribeSync(&made, bucket.connection, bucket.subjectPrefix + ">") == NATS_OK else {
            return nil
        }
        _ = natsSubscription_SetPendingLimits(made, -1, -1)
        stall = made
    }

    /// Whether it is a bridge (no consumer).
    var isBridge: Bool { subscription == nil }

    deinit {
        endStall()
        if let subscription {
            _ = natsSubscription_Unsubscribe(subscription)
            natsSubscription_Destroy(subscription)
        }
    }

    private func endStall() {
        guard let stall else { return }
        _ = natsSubscription_Unsubscribe(stall)
        natsSubscription_Destroy(stall)
        self.stall = nil
        stallSeen = []
    }

    /// The next change, waiting at most `milliseconds`: NATS_OK with nil once, when the whole set
    /// read at the start was delivered; NATS_TIMEOUT when none came.
    func next(_ milliseconds: Int64) -> (natsStatus, FleetEntry?) {
        if wholeDone, !wholeSaid {
            wholeSaid = true
            return (NATS_OK, nil)
        }
        if wholeDone, stall == nil, subscription != nil, isStalled() {
            var made: OpaquePointer?
            if natsConnection_SubscribeSync(&made, bucket.connection, bucket.subjectPrefix + ">") == NATS_OK {
                _ = natsSubscription_SetPendingLimits(made, -1, -1)
                stall = made
            }
        }
        var message: OpaquePointer?
        var status: natsStatus
        if let stall {
            // The consumer first, briefly: what it delivers ends the stall.
            status = subscription.map { natsSubscription_NextMsg(&message, $0, 1) } ?? NATS_TIMEOUT
            if status == NATS_OK {
                endStall()
            } else if status == NATS_TIMEOUT {
                while true {
                    status = natsSubscription_NextMsg(&message, stall, min(milliseconds, 50))
                    guard status == NATS_OK, let taken = message else { break }
                    let entry = self.entry(taken)
                    natsMsg_Destroy(taken)
                    message = nil
                    if stallSeen.insert(entry.key + "\u{0}" + String(decoding: entry.value, as: UTF8.self)).inserted {
                        return (NATS_OK, entry)
                    }
                }
                return (status == NATS_OK ? NATS_TIMEOUT : status, nil)
            }
        } else {
            status = subscription.map { natsSubscription_NextMsg(&message, $0, milliseconds) } ?? NATS_TIMEOUT
        }
        guard status == NATS_OK, let message else { return (status == NATS_OK ? NATS_ERR : status, nil) }
        defer { natsMsg_Destroy(message) }
        var created: Int64 = 0
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
            if !wholeDone { wholeDone = meta.pointee.NumPending == 0 }
            created = meta.pointee.Timestamp
            jsMsgMetaData_Destroy(meta)
        }
        var taken = entry(message)
        taken.created = created
        return (NATS_OK, taken)
    }

    /// Whether the consumer missed its heartbeats, or (asked once a second) the stream answers no
    /// request for its state as one without a leader does.
    private func isStalled() -> Bool {
        if bucket.callbacks.watchStalled.exchange(false, ordering: .acquiring) { return true }
        let now = SystemClock.monotonicSeconds()
        guard now - askedAt >= 1, bucket.isConnected else { return false }
        askedAt = now
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = 500
        let status = js_GetStreamInfo(&info, bucket.jetStream, "KV_" + bucket.name, &options, &code)
        if let info { jsStreamInfo_Destroy(info) }
        return status != NATS_OK && FleetBucket.isElection(status, code)
    }

    /// The key, operation and value of a message on the bucket's subjects.
    private func entry(_ message: OpaquePointer) -> FleetEntry {
        let subject = natsMsg_GetSubject(message).map { String(cString: $0) } ?? ""
        guard subject.utf8.count > prefixLength else { return FleetEntry(key: "", isPut: false, value: Data()) }
        let key = String(subject.utf8.dropFirst(prefixLength)) ?? ""
        var operation: UnsafePointer<CChar>?
        // KV-Operation: DEL or PURGE; none: a put.
        let isPut = natsMsgHeader_Get(message, "KV-Operation", &operation) != NATS_OK || operation == nil
        let length = Int(natsMsg_GetDataLength(message))
        let value =
            isPut && length > 0 ? natsMsg_GetData(message).map { Data(bytes: $0, count: length) } ?? Data() : Data()
        return FleetEntry(
            key: key, isPut: isPut, value: value, created: Int64(SystemClock.wallMilliseconds()) &* 1_000_000)
    }
}
