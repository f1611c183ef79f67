// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNATS
import FoundationEssentials
import PortcullisSystem
import Synchronization

/// One change of the bucket the watch delivers: a key put (with its value) or deleted.
struct FleetEntry {
    let key: String
    let isPut: Bool
    let value: Data
    /// When the stream took it, nanoseconds since the epoch (a plain NATS message of an
    /// election's bridge: when it came).
    var created: Int64 = 0
}

/// The watch of the bucket, from two sources. The bucket's subjects as plain NATS: every host's
/// put and delete as it is sent, whether or not the stream has a leader (during an election, 4 to 9
/// s on nats-server 2.9, a stream stores nothing, and the hosts send their changes again until it
/// does): a ban reaches the other hosts in milliseconds whatever the stream's state. And an ordered
/// consumer of the stream (the last entry of every key, then each change) with a short heartbeat:
/// the source of truth for the whole set (at start, after a reconnection, for a host that joins
/// late) and for any change the plain subscription missed. nats.c's own watcher asks a 5 s
/// heartbeat; this one asks `FleetBucket.watchHeartbeatNanoseconds`: two missed, nats.c makes the
/// consumer again from the next sequence, on the new leader once there is one.
///
/// Each change thus comes twice (its plain message, then the stream's): the second is skipped
/// before it is read, by a hash of its subject and of its operation and value against what that
/// key last took (then forgotten: a third is a put again). Changes of one key come in the order
/// its host sent them by either way (one writer a key), so the last one taken is the host's last.
/// Read by one thread.
final class FleetWatcher {
    /// The bucket's subjects as plain NATS (made first: nothing sent meanwhile is missed).
    private let live: OpaquePointer
    /// The stream's ordered consumer (nil until `consume`, or a bridge: the plain messages alone,
    /// while the stream has no leader to read it from).
    private var subscription: OpaquePointer?
    private let bucket: FleetBucket
    private let prefixLength: Int
    /// `$KV.BUCKET.HOST.` of this host: its own changes from the stream, after the whole set, are
    /// skipped unread (its maps hold them already), but for its shared decisions'.
    private let own: [UInt8]
    private let ownDecisions: [UInt8]
    /// Whether the whole set was delivered, and whether that was said (`next` returns nil once).
    private var wholeDone = true
    private var wholeSaid = true
    /// The stream's last sequence when the whole read began.
    private var wholeLast: UInt64 = 0
    /// Per key (the hash of its subject), the hash of the operation and value it last took, until
    /// that comes again (the other way).
    private var taken: [Int: Int] = [:]
    /// Keys remembered at most (a change whose second delivery was lost stays; about 6 MB): past
    /// it, forgotten at once (a change then comes twice).
    static let rememberedKeys = 1 << 18

    /// Subscribes to the bucket's subjects as plain NATS: a bridge until `consume`.
    init(_ bucket: FleetBucket, host: String) throws(FleetError) {
        self.bucket = bucket
        prefixLength = bucket.subjectPrefix.utf8.count
        own = Array((bucket.subjectPrefix + host + ".").utf8)
        ownDecisions = own + Array(FleetKey.decision.utf8)
        var made: OpaquePointer?
        let status = natsConnection_SubscribeSync(&made, bucket.connection, bucket.subjectPrefix + ">")
        guard status == NATS_OK, let made else { throw FleetError.last(status, "subscribing to the bucket") }
        _ = natsSubscription_SetPendingLimits(made, -1, -1)
        live = made
    }

    /// The stream's consumer as made, and what the whole read waits for.
    struct Consumer: @unchecked Sendable {
        let subscription: OpaquePointer
        let empty: Bool
        let last: UInt64
    }

    /// Makes the stream's consumer: the whole set, then its changes. Its requests wait a second
    /// each (a leader being elected answers none): made on a thread of its own (`consuming`).
    static func makeConsumer(_ bucket: FleetBucket) throws(FleetError) -> Consumer {
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
        // A stream without a leader answers from a follower's store (nats-server 2.9): not read.
        if let cluster = info.pointee.Cluster, cluster.pointee.Leader == nil || cluster.pointee.Leader.pointee == 0 {
            throw FleetError(status: NATS_TIMEOUT, message: "watching the bucket: the stream has no leader")
        }
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        options.Ordered = true
        options.Config.DeliverPolicy = js_DeliverLastPerSubject
        options.Config.Heartbeat = FleetBucket.watchHeartbeatNanoseconds
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
        return Consumer(subscription: made, empty: info.pointee.State.Msgs == 0, last: info.pointee.State.LastSeq)
    }

    /// The thread making the consumer, and what it made.
    private var making: SystemThread?
    private final class Outcome: Sendable {
        let result = Mutex<Result<Consumer, FleetError>?>(nil)
    }

    private let madeConsumer = Outcome()
    private var retryAt = 0.0

    /// Whether the consumer is being made.
    var isMaking: Bool { making != nil }

    /// Makes the consumer on a thread of its own (the bridge is read meanwhile). - Returns: nil
    /// while it is under way or not to be tried yet; then its outcome (made: the whole read
    /// begins, `next` delivers it).
    func consuming() -> Result<Void, FleetError>? {
        if making == nil {
            guard SystemClock.monotonicSeconds() >= retryAt, streamAnswers() else { return nil }
            let (bucket, made) = (bucket, madeConsumer)
            do throws(Errno) {
                making = try SystemThread.spawn {
                    let result = Result { () throws(FleetError) in try Self.makeConsumer(bucket) }
                    made.result.withLock { $0 = result }
                }
            } catch {
                return .failure(FleetError(status: NATS_SYS_ERROR, message: "watching the bucket: \(error)"))
            }
            return nil
        }
        guard
            let result = madeConsumer.result.withLock({ made in
                defer { made = nil }; return made
            })
        else {
            return nil
        }
        making?.join()
        making = nil
        switch result {
        case .success(let consumer):
            subscription = consumer.subscription
            wholeDone = consumer.empty
            wholeLast = consumer.last
            wholeSaid = false
            return .success(())
        case .failure(let error):
            retryAt = SystemClock.monotonicSeconds() + 0.5
            return .failure(error)
        }
    }

    /// Whether it is a bridge (no consumer).
    var isBridge: Bool { subscription == nil }

    /// The reply subscription of `streamAnswers`, its subject, and when it last asked.
    private var probe: OpaquePointer?
    private var probeSubject = ""
    private var probedAt = 0.0
    private var triedAt = SystemClock.monotonicSeconds()

    /// Whether the stream answers a request for its state (it has a leader), asked without waiting
    /// (a bridge goes on taking the plain messages meanwhile; a stream without a leader answers
    /// none): true once an answer without an error came since the last call (asked again each
    /// 0.25 s), or 15 s after the last true.
    func streamAnswers() -> Bool {
        if probe == nil {
            var inbox: UnsafeMutablePointer<natsInbox>?
            guard natsInbox_Create(&inbox) == NATS_OK, let inbox else { return true }
            probeSubject = String(cString: inbox)
            natsInbox_Destroy(inbox)
            var made: OpaquePointer?
            guard natsConnection_SubscribeSync(&made, bucket.connection, probeSubject) == NATS_OK else { return true }
            probe = made
        }
        guard let probe else { return true }
        var answered = false
        while Self.waiting(probe) {
            var message: OpaquePointer?
            guard natsSubscription_NextMsg(&message, probe, 1) == NATS_OK, let message else { break }
            let length = Int(natsMsg_GetDataLength(message))
            if !natsMsg_IsNoResponders(message), length > 0, let data = natsMsg_GetData(message) {
                let text = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
                // An answer with a leader (a stream without one answers from a follower, or not).
                let leader = text.firstRange(of: "\"leader\":\"").map {
                    $0.upperBound < text.endIndex && text[$0.upperBound] != "\""
                }
                answered = answered || (!text.contains("\"error\"") && (leader ?? !text.contains("\"cluster\"")))
            }
            natsMsg_Destroy(message)
        }
        let now = SystemClock.monotonicSeconds()
        // No answer for 15 s (a server that denies the request): the read is tried all the same.
        if answered || now - triedAt >= 15 {
            triedAt = now
            return true
        }
        if now - probedAt >= 0.25 {
            probedAt = now
            _ = natsConnection_PublishRequest(
                bucket.connection, "$JS.API.STREAM.INFO.KV_" + bucket.name, probeSubject, nil, 0)
        }
        return false
    }

    /// Drops the consumer (a whole read that failed half-way): a bridge again.
    func dropConsumer() {
        if let subscription {
            _ = natsSubscription_Unsubscribe(subscription)
            natsSubscription_Destroy(subscription)
        }
        subscription = nil
        wholeDone = true
        wholeSaid = true
    }

    deinit {
        making?.join()
        if case .success(let consumer) = madeConsumer.result.withLock({ $0 }) {
            _ = natsSubscription_Unsubscribe(consumer.subscription)
            natsSubscription_Destroy(consumer.subscription)
        }
        for made in [subscription, live, probe] {
            guard let made else { continue }
            _ = natsSubscription_Unsubscribe(made)
            natsSubscription_Destroy(made)
        }
    }

    /// The next change, waiting at most `milliseconds`: NATS_OK with nil once, when the whole set
    /// read at the start was delivered; NATS_TIMEOUT when none came.
    func next(_ milliseconds: Int64) -> (natsStatus, FleetEntry?) {
        if wholeDone, !wholeSaid {
            wholeSaid = true
            return (NATS_OK, nil)
        }
        // The whole set: the stream's alone (the plain messages wait, and come after it).
        if !wholeDone, let subscription {
            while !wholeDone {
                let (status, entry) = read(subscription, milliseconds, stream: true)
                guard status == NATS_OK, entry == nil else { return (status, entry) }
            }
            wholeSaid = true
            return (NATS_OK, nil)
        }
        while true {
            // The stream's deliveries (mostly changes taken already) when some wait, else the plain
            // messages, waited for.
            if let subscription, Self.waiting(subscription) {
                let (status, entry) = read(subscription, 1, stream: true)
                if status == NATS_OK, entry == nil { continue }  // a repeat
                if status != NATS_TIMEOUT { return (status, entry) }
            }
            let (status, entry) = read(live, milliseconds, stream: false)
            if status == NATS_OK, entry == nil { continue }
            if status == NATS_TIMEOUT, let subscription, Self.waiting(subscription) { continue }
            return (status, entry)
        }
    }

    private static func waiting(_ subscription: OpaquePointer) -> Bool {
        var messages: Int32 = 0
        var bytes: Int32 = 0
        return natsSubscription_GetPending(subscription, &messages, &bytes) == NATS_OK && messages > 0
    }

    /// The next message of `source`: its change, or NATS_OK with nil for one skipped (taken
    /// already, or this host's own).
    private func read(_ source: OpaquePointer, _ milliseconds: Int64, stream: Bool) -> (natsStatus, FleetEntry?) {
        var message: OpaquePointer?
        let status = natsSubscription_NextMsg(&message, source, milliseconds)
        guard status == NATS_OK, let message else { return (status == NATS_OK ? NATS_ERR : status, nil) }
        defer { natsMsg_Destroy(message) }
        guard let subject = natsMsg_GetSubject(message) else { return (NATS_OK, nil) }
        let subjectLength = strlen(subject)
        let subjectBytes = UnsafeRawBufferPointer(start: subject, count: subjectLength)
        let isOwn = subjectBytes.starts(with: own)
        // This host's own changes after the whole set (its shared decisions' aside): in its maps.
        if stream, wholeSaid, isOwn, !subjectBytes.starts(with: ownDecisions) { return (NATS_OK, nil) }
        // The stream's metadata (its parse allocates) only where it is used: the whole read's end,
        // and when the stream took a key of this host (one of an earlier run is put again).
        var created = Int64(SystemClock.wallMilliseconds()) &* 1_000_000
        if stream, !wholeSaid || isOwn {
            var meta: UnsafeMutablePointer<jsMsgMetaData>?
            if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
                // The whole set is in with the stream's last message as the read began (delivered
                // last: the last of its key): nats-server 2.9's pending count can say 0 early on a
                // stream leader just elected.
                if !wholeDone { wholeDone = meta.pointee.Sequence.Stream >= wholeLast }
                created = meta.pointee.Timestamp
                jsMsgMetaData_Destroy(meta)
            }
        }
        var operation: UnsafePointer<CChar>?
        // KV-Operation: DEL or PURGE; none: a put.
        let isPut = natsMsgHeader_Get(message, "KV-Operation", &operation) != NATS_OK || operation == nil
        let length = Int(natsMsg_GetDataLength(message))
        let data = UnsafeRawBufferPointer(start: natsMsg_GetData(message), count: isPut ? length : 0)
        var keyHash = Hasher()
        keyHash.combine(bytes: subjectBytes)
        let key = keyHash.finalize()
        var contentHash = Hasher()
        contentHash.combine(isPut)
        contentHash.combine(bytes: data)
        let content = contentHash.finalize()
        // The second delivery of a change is skipped, and forgotten: a third is a new put of the
        // same value (a key put again at each refresh), taken and counted.
        if taken[key] == content {
            taken[key] = nil
            return (NATS_OK, nil)
        }
        if taken.count >= Self.rememberedKeys { taken.removeAll(keepingCapacity: true) }
        taken[key] = content
        guard subjectLength > prefixLength else {
            return (NATS_OK, FleetEntry(key: "", isPut: false, value: Data(), created: created))
        }
        let keyText = String(decoding: subjectBytes[prefixLength...], as: UTF8.self)
        let value = isPut && length > 0 ? Data(data) : Data()
        return (NATS_OK, FleetEntry(key: keyText, isPut: isPut, value: value, created: created))
    }
}
