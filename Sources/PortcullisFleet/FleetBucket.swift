// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNATS
import Logging
import PortcullisSystem
import Synchronization

/// Why the fleet's bucket could not be reached or used: nats.c's status and its text.
public struct FleetError: Error, CustomStringConvertible, Equatable {
    public let status: natsStatus
    public let message: String

    public var description: String { message }

    /// The status as the metrics and the log tell failures apart.
    public var kind: String {
        switch status {
        case NATS_CONNECTION_AUTH_FAILED, NATS_NOT_PERMITTED: "refused"
        case NATS_NO_SERVER, NATS_CONNECTION_CLOSED, NATS_CONNECTION_DISCONNECTED, NATS_TIMEOUT, NATS_IO_ERROR,
            NATS_SYS_ERROR, NATS_STALE_CONNECTION, NATS_NO_RESPONDERS:
            "unreachable"
        case NATS_SSL_ERROR: "tls"
        default: "error"
        }
    }

    /// nats.c's last error on this thread for `status`, with what was being done.
    static func last(_ status: natsStatus, _ doing: String) -> FleetError {
        var text = String(cString: natsStatus_GetText(status))
        var code = NATS_OK
        if let last = nats_GetLastError(&code), code == status {
            var detail = Substring(String(cString: last))
            // nats.c puts where it failed first: "(conn.c:1905): Authorization Violation".
            if detail.hasPrefix("("), let close = detail.firstRange(of: "): ") { detail = detail[close.upperBound...] }
            if !detail.isEmpty, detail != text { text = String(detail) }
        }
        return FleetError(status: status, message: "\(doing): \(text)")
    }
}

/// What the node's connections tell, from nats.c's threads: reconnected (the watch reads the whole
/// set again), an asynchronous error, a put the server refused (its permissions) or rejected (a
/// limit: a value too large).
final class FleetEvents: @unchecked Sendable {
    struct State {
        var reconnects: UInt64 = 0
        var lastAsyncError: String?
        var refusedPublishes: UInt64 = 0
        var rejectedPublishes: UInt64 = 0
        var lastRejection: String?
    }

    let state = Mutex(State())
    /// The server the connection uses or last used (`nats://ADDRESS:PORT`), when it went (a
    /// disconnection's monotonic seconds), and when JetStream began not answering (an election:
    /// said once, and its end).
    struct Link {
        var server: String?
        var lostAt: Double?
        var electingSince: Double?
    }

    let link = Mutex(Link())
    /// Set when the node stops: a bind waiting out an election gives up.
    let stopping = Atomic<Bool>(false)
    /// Set at each reconnection: the watch takes the bucket's whole set again, and the link looks
    /// whether the bucket is still there (a server back without its store has none).
    let resync = Atomic<Bool>(false)
    let reconnected = Atomic<Bool>(false)
    let wake: @Sendable () -> Void
    /// The node's log (a connection, a failover, an election: a line each).
    let logger: Logger

    init(wake: @escaping @Sendable () -> Void, logger: Logger) {
        self.wake = wake
        self.logger = logger
    }

    /// JetStream did not answer (`why`) while the connection is up: a stream or meta leader being
    /// elected. Said once until it answers again.
    func electing(_ why: String) {
        let first = link.withLock { link -> Bool in
            guard link.electingSince == nil else { return false }
            link.electingSince = SystemClock.monotonicSeconds()
            return true
        }
        if first { logger.warning("JetStream electing a leader (\(why)); retrying") }
    }

    /// JetStream answered: the end of an election, said with how long it took.
    func answered() {
        guard
            let since = link.withLock({ link in
                defer { link.electingSince = nil }; return link.electingSince
            })
        else { return }
        logger.info("JetStream answers again after \(Self.tenths(SystemClock.monotonicSeconds() - since)) s")
    }

    /// Seconds with one decimal: `7.9`.
    static func tenths(_ seconds: Double) -> String {
        let tenths = Int((max(seconds, 0) * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// The server the node uses, or used last.
    var server: String? { link.withLock { $0.server } }
}

/// What nats.c's callbacks of one connection reach: the node's events, and whether this
/// connection is done with (closed for good: two refusals of its credentials in a row end nats.c's
/// reconnecting) or its bucket gone (a server that lost its store answers no put). nats.c holds a
/// reference until its last callback, the closed one, which it makes once for every connection that
/// was made, on a thread of its own, after `natsConnection_Destroy` may have returned.
final class FleetCallbacks: @unchecked Sendable {
    let events: FleetEvents
    /// `$KV.BUCKET.`: a permission refused for a subject under it is a refused put.
    let subjectPrefix: String
    let connected = Atomic<Bool>(false)
    let closed = Atomic<Bool>(false)
    let bucketMissing = Atomic<Bool>(false)
    /// Puts that no stream answered (its leader being elected, or the bucket gone): counted.
    let unanswered = Atomic<UInt64>(0)
    /// Disconnections of the connection, counted (a publish waiting for acknowledgements stops).
    let lost = Atomic<UInt64>(0)
    /// Set when the connection is destroyed on purpose (its disconnection is not a cut).
    let closing = Atomic<Bool>(false)

    init(_ events: FleetEvents, subjectPrefix: String) {
        self.events = events
        self.subjectPrefix = subjectPrefix
    }

    static func from(_ closure: UnsafeMutableRawPointer?) -> FleetCallbacks {
        Unmanaged<FleetCallbacks>.fromOpaque(closure!).takeUnretainedValue()
    }
}

/// One connection to the fleet's NATS servers, its JetStream context and the bucket, made with
/// the settings' credentials and TLS. nats.c reconnects on its own (without end) once connected.
/// The calls are thread-safe: the publisher and the watch share it.
final class FleetBucket: @unchecked Sendable {
    let connection: OpaquePointer
    let jetStream: OpaquePointer
    let store: OpaquePointer
    let events: FleetEvents
    let callbacks: FleetCallbacks
    let subjectPrefix: String
    let name: String

    /// The interval of the connection's pings, and how many may go unanswered: a silent cut is
    /// noticed within three intervals (6 s), the connection then made again to any server.
    static let pingMilliseconds: Int64 = 2000
    static let maxPingsOut: Int32 = 2
    /// The heartbeat the watch's consumer asks of the server: one missed twice over (1 s), nats.c
    /// makes the consumer again from the next sequence (a new stream leader).
    static let watchHeartbeatNanoseconds: Int64 = 500_000_000

    /// Connects and binds the bucket (creating it, with `maxAgeSeconds` and the replicas, when it
    /// does not exist yet).
    init(settings: FleetSettings, maxAgeSeconds: UInt64, events: FleetEvents) throws(FleetError) {
        self.events = events
        name = settings.bucket
        subjectPrefix = "$KV.\(settings.bucket)."
        callbacks = FleetCallbacks(events, subjectPrefix: subjectPrefix)
        var options: OpaquePointer?
        try Self.check(natsOptions_Create(&options), "cannot make the connection's options")
        defer { natsOptions_Destroy(options) }
        let servers = settings.servers.map { strdup($0) }
        defer { for server in servers { free(server) } }
        var pointers = servers.map { UnsafePointer($0) }
        try Self.check(
            natsOptions_SetServers(options, &pointers, Int32(pointers.count)),
            "the servers "
                + settings.servers.joined(separator: ","))
        try Self.check(natsOptions_SetName(options, "portcullis/\(settings.host)"), "the connection's name")
        try Self.check(natsOptions_SetMaxReconnect(options, -1), "the reconnection")
        try Self.check(
            natsOptions_SetReconnectWait(options, Int64(max(settings.reconnectWait, 0.01) * 1000)), "reconnect_wait")
        try Self.check(natsOptions_SetTimeout(options, 2000), "the connection's timeout")
        try Self.check(natsOptions_SetPingInterval(options, Self.pingMilliseconds), "the ping interval")
        try Self.check(natsOptions_SetMaxPingsOut(options, Self.maxPingsOut), "the pings outstanding")
        // Not natsOptions_SetSendAsap: nats.c's flusher writes a batch of puts at once (one write
        // each, and the server's wake-ups, cost more than the 0.6 ms it saves a ban).
        // This host's own puts are not delivered back to its plain subscription of the bucket.
        try Self.check(natsOptions_SetNoEcho(options, true), "no echo")
        if let user = settings.user {
            try Self.check(natsOptions_SetUserInfo(options, user, settings.password), "user and password")
        }
        if let token = settings.token { try Self.check(natsOptions_SetToken(options, token), "token") }
        if let path = settings.credentialsPath {
            try Self.check(natsOptions_SetUserCredentialsFromFiles(options, path, nil), "credentials \(path)")
        }
        if let nkey = settings.nkey, let seed = settings.nkeySeedPath {
            try Self.check(natsOptions_SetNKeyFromSeed(options, nkey, seed), "nkey_seed \(seed)")
        }
        if settings.isSecure {
            try Self.check(natsOptions_SetSecure(options, true), "TLS")
            if let path = settings.caCertPath {
                try Self.check(natsOptions_LoadCATrustedCertificates(options, path), "ca_cert_path \(path)")
            }
            if let cert = settings.certPath, let key = settings.keyPath {
                try Self.check(natsOptions_LoadCertificatesChain(options, cert, key), "cert_path and key_path")
            }
        }
        let closure = Unmanaged.passRetained(callbacks).toOpaque()
        natsOptions_SetDisconnectedCB(
            options,
            { _, closure in
                let callbacks = FleetCallbacks.from(closure)
                callbacks.connected.store(false, ordering: .releasing)
                callbacks.lost.add(1, ordering: .releasing)
                guard !callbacks.closing.load(ordering: .acquiring) else { return }
                let events = callbacks.events
                let server = events.link.withLock { link in
                    link.lostAt = SystemClock.monotonicSeconds()
                    return link.server
                }
                events.logger.warning("disconnected from \(server ?? "the NATS server"); reconnecting")
            }, closure)
        natsOptions_SetClosedCB(
            options,
            { _, closure in
                let callbacks = FleetCallbacks.from(closure)
                callbacks.closed.store(true, ordering: .releasing)
                callbacks.connected.store(false, ordering: .releasing)
                callbacks.events.wake()
                // The last callback of the connection: nats.c's reference goes.
                Unmanaged<FleetCallbacks>.fromOpaque(closure!).release()
            }, closure)
        natsOptions_SetReconnectedCB(
            options,
            { connection, closure in
                let callbacks = FleetCallbacks.from(closure)
                let events = callbacks.events
                callbacks.connected.store(true, ordering: .releasing)
                let server = FleetBucket.connectedURL(connection)
                let lostAt = events.link.withLock { link in
                    defer {
                        link.server = server ?? link.server
                        link.lostAt = nil
                    }
                    return link.lostAt
                }
                let after = lostAt.map { " after \(FleetEvents.tenths(SystemClock.monotonicSeconds() - $0)) s" } ?? ""
                events.logger.info("reconnected to \(server ?? "a NATS server")\(after)")
                events.state.withLock { $0.reconnects += 1 }
                events.resync.store(true, ordering: .releasing)
                events.reconnected.store(true, ordering: .releasing)
                events.wake()
            }, closure)
        natsOptions_SetErrorHandler(
            options,
            { connection, _, status, closure in
                let callbacks = FleetCallbacks.from(closure)
                // The watch's consumer lost its stream leader: nats.c makes it again (FleetWatcher).
                guard status != NATS_MISSED_HEARTBEAT else { return }
                var text: UnsafePointer<CChar>?
                _ = natsConnection_GetLastError(connection, &text)
                let message = text.map { String(cString: $0) } ?? String(cString: natsStatus_GetText(status))
                // Only a put of this host's keys is a refused put (not, say, a watch's consumer).
                let put = status == NATS_NOT_PERMITTED && message.contains("\"" + callbacks.subjectPrefix)
                callbacks.events.state.withLock {
                    $0.lastAsyncError = message
                    if put { $0.refusedPublishes += 1 }
                }
            }, closure)
        var connection: OpaquePointer?
        let connected = natsConnection_Connect(&connection, options)
        guard connected == NATS_OK, let connection else {
            // Never connected: no callback comes (nats.c closes such a one without them).
            Unmanaged<FleetCallbacks>.fromOpaque(closure).release()
            throw FleetError.last(connected, "cannot connect to " + settings.servers.joined(separator: ","))
        }
        self.connection = connection
        callbacks.connected.store(true, ordering: .releasing)
        let server = Self.connectedURL(connection)
        events.link.withLock { $0.server = server ?? $0.server }
        var jsOptions = jsOptions()
        jsOptions_Init(&jsOptions)
        jsOptions.Wait = 5000
        // Acknowledgements outstanding at once (a burst after an outage is published in batches).
        jsOptions.PublishAsync.MaxPending = 4096
        // A put the server answers with an error (a limit: a value too large) is counted, not retried;
        // one no stream answers (its store lost) makes the bucket again.
        jsOptions.PublishAsync.ErrHandler = { _, error, closure in
            let callbacks = FleetCallbacks.from(closure)
            if error?.pointee.Err == NATS_NO_RESPONDERS {
                // An election, or the bucket gone: `publish` looks which.
                callbacks.unanswered.add(1, ordering: .relaxed)
                return
            }
            let text = error?.pointee.ErrText.map { String(cString: $0) } ?? "no acknowledgement"
            callbacks.events.state.withLock {
                $0.lastRejection = text
                $0.rejectedPublishes += 1
            }
        }
        jsOptions.PublishAsync.ErrHandlerClosure = closure
        var jetStream: OpaquePointer?
        let made = natsConnection_JetStream(&jetStream, connection, &jsOptions)
        guard made == NATS_OK, let jetStream else {
            callbacks.closing.store(true, ordering: .releasing)
            natsConnection_Destroy(connection)
            throw FleetError.last(made, "no JetStream context")
        }
        self.jetStream = jetStream
        // A leader being elected: waited out on this connection (it is healthy), said once.
        var store: OpaquePointer?
        var bound: natsStatus
        while true {
            let election: Bool
            (bound, election) = Self.bind(&store, jetStream, settings: settings, maxAgeSeconds: maxAgeSeconds)
            guard bound != NATS_OK, election, !events.stopping.load(ordering: .acquiring) else { break }
            events.electing(FleetError.last(bound, "the bucket \(settings.bucket)").message)
            SystemClock.sleep(nanoseconds: 250_000_000)
        }
        guard bound == NATS_OK, let store else {
            jsCtx_Destroy(jetStream)
            callbacks.closing.store(true, ordering: .releasing)
            natsConnection_Destroy(connection)
            throw FleetError.last(
                bound,
                "the bucket \(settings.bucket) (is JetStream enabled on the server, nats-server -js, and may this "
                    + "host use it?)")
        }
        events.answered()
        self.store = store
    }

    deinit {
        kvStore_Destroy(store)
        jsCtx_Destroy(jetStream)
        callbacks.closing.store(true, ordering: .releasing)
        natsConnection_Destroy(connection)
    }

    /// Binds the bucket, or makes it (with `maxAgeSeconds` and the replicas) when the server has no
    /// such stream. - Returns: nats.c's status, and whether it is a leader's election (JetStream
    /// not answering, or saying it is temporarily unavailable) rather than a refusal.
    private static func bind(
        _ store: inout OpaquePointer?, _ jetStream: OpaquePointer, settings: FleetSettings, maxAgeSeconds: UInt64
    ) -> (natsStatus, Bool) {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        let asked = js_GetStreamInfo(&info, jetStream, "KV_" + settings.bucket, nil, &code)
        if let info { jsStreamInfo_Destroy(info) }
        guard asked == NATS_OK || asked == NATS_NOT_FOUND else { return (asked, isElection(asked, code)) }
        var bound = asked == NATS_OK ? js_KeyValue(&store, jetStream, settings.bucket) : NATS_NOT_FOUND
        if bound == NATS_NOT_FOUND {
            var config = kvConfig()
            kvConfig_Init(&config)
            bound = settings.bucket.withCString { name in
                config.Bucket = name
                config.History = 1
                // In nanoseconds (the stream's max age); 0: none.
                config.TTL = Int64(clamping: min(maxAgeSeconds, UInt64(Int64.max) / 1_000_000_000)) * 1_000_000_000
                config.StorageType = js_FileStorage
                config.Replicas = Int32(settings.replicas)
                return js_CreateKeyValue(&store, jetStream, &config)
            }
        }
        return (bound, isElection(bound, jsErrCode(rawValue: 0)))
    }

    /// A JetStream request that failed for want of a leader: no answer in time, no responder (a
    /// stream without a leader answers no put), or "JetStream system temporarily unavailable".
    static func isElection(_ status: natsStatus, _ code: jsErrCode) -> Bool {
        status == NATS_TIMEOUT || status == NATS_NO_RESPONDERS || code == JSClusterNotAvailErr
            || code == JSClusterNotLeaderErr || code == JSClusterIncompleteErr
    }

    /// The URL of the server `connection` is connected to (nil: none now).
    static func connectedURL(_ connection: OpaquePointer?) -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard natsConnection_GetConnectedUrl(connection, &buffer, buffer.count) == NATS_OK, buffer[0] != 0 else {
            return nil
        }
        return String(cString: buffer)
    }

    static func check(_ status: natsStatus, _ doing: String) throws(FleetError) {
        guard status == NATS_OK else { throw FleetError.last(status, doing) }
    }

    var isConnected: Bool { natsConnection_Status(connection) == NATS_CONN_STATUS_CONNECTED }

    /// When the server made the bucket's stream (nanoseconds since the epoch: a bucket made anew,
    /// after a server lost its store, has another), or `.missing`, or nil when it could not say.
    enum Made: Equatable {
        case at(Int64)
        case missing
    }

    func made(_ name: String, waiting milliseconds: Int64 = 1000) -> Made? {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = milliseconds
        let status = js_GetStreamInfo(&info, jetStream, "KV_" + name, &options, &code)
        defer { if let info { jsStreamInfo_Destroy(info) } }
        switch status {
        case NATS_OK: return info.map { .at($0.pointee.Created) }
        case NATS_NOT_FOUND: return .missing
        default: return nil
        }
    }

    /// Whether the connection is up, as its callbacks last said.
    var isUp: Bool { callbacks.connected.load(ordering: .acquiring) && isUsable }

    /// Whether it is still to be used: not closed for good, its bucket not gone.
    var isUsable: Bool {
        !callbacks.closed.load(ordering: .acquiring) && !callbacks.bucketMissing.load(ordering: .acquiring)
    }

    /// Puts (a value) or deletes each key, without waiting for the acknowledgements
    /// (`awaitAcknowledgements`). - Returns: how many from the first went out, and what stopped
    /// the rest.
    func send(
        _ changes: ArraySlice<FleetChange>, encode: (FleetChange) -> [UInt8]
    ) -> (sent: Int, error: FleetError?) {
        var sent = 0
        for change in changes {
            let subject = subjectPrefix + change.key
            var status: natsStatus
            if change.isDelete {
                var message: OpaquePointer?
                status = natsMsg_Create(&message, subject, nil, nil, 0)
                if status == NATS_OK { status = natsMsgHeader_Set(message, "KV-Operation", "DEL") }
                if status == NATS_OK { status = js_PublishMsgAsync(jetStream, &message, nil) }
                if status != NATS_OK, message != nil { natsMsg_Destroy(message) }
            } else {
                let value = encode(change)
                status = value.withUnsafeBytes { bytes in
                    js_PublishAsync(jetStream, subject, bytes.baseAddress, Int32(bytes.count), nil)
                }
            }
            guard status == NATS_OK else { return (sent, FleetError.last(status, "cannot publish \(change.key)")) }
            sent += 1
        }
        return (sent, nil)
    }

    /// Waits at most `milliseconds` for every change sent to be acknowledged (NATS_OK: none waits;
    /// NATS_TIMEOUT: some do).
    func awaitAcknowledgements(milliseconds: Int64) -> natsStatus {
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = milliseconds
        return js_PublishAsyncComplete(jetStream, &options)
    }

    /// nats.c stops waiting for the acknowledgements of what was sent (it is sent again).
    func forgetPending() {
        var pending = natsMsgList()
        if js_PublishAsyncGetPendingList(&pending, jetStream) == NATS_OK { natsMsgList_Destroy(&pending) }
    }

    /// `count` puts no stream answered: the bucket gone (made again on a new connection), or its
    /// leader being elected (said once; they are sent again). - Returns: which, as an error.
    func unanswered(_ count: UInt64) -> FleetError {
        // Asked once per election (a second at most): a stream without a leader answers late.
        if events.link.withLock({ $0.electingSince == nil }), made(name, waiting: 1000) == .missing {
            callbacks.bucketMissing.store(true, ordering: .releasing)
            return FleetError(status: NATS_NO_RESPONDERS, message: "the bucket \(name) is gone from the server")
        }
        events.electing("no stream answered \(count) put(s)")
        return FleetError(status: NATS_NO_RESPONDERS, message: "JetStream electing a leader; retrying")
    }
}
