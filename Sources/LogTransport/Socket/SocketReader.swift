// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Listens on its own socket in the directory; every writer connects to it. Accepted writers are
/// checked with `SO_PEERCRED`; datagrams are received with `recvmmsg` into buffers allocated once.
public final class SocketReader: LogReader {
    private struct Connection {
        var lostTotal: UInt64 = 0
    }

    let options: SocketOptions
    public let policy: SlowReaderPolicy
    /// The socket file writers connect to.
    public let path: String
    private let listener: Int32
    /// The first reader of a shared socket removes the file; the ones sharing it do not.
    private let ownsSocketFile: Bool
    private let epoll: Int32
    private var connections: [Int32: Connection] = [:]
    /// The most lines one datagram may report lost since the last (more than a writer could
    /// have sent between two datagrams).
    static let largestLossReport: UInt64 = 1 << 32
    /// Written by the thread that reads; read by any (lost lines: over all connections, open and closed).
    private let stats = ReaderCounters()
    private var closed = false
    private let allowedUIDs: Set<uid_t>
    private let allowedGIDs: Set<gid_t>

    /// recvmmsg buffers and epoll events, allocated once per reader.
    private let receive: ReceiveBuffers
    private var buffers: UnsafeMutableRawPointer { receive.buffers }
    private var iovecs: UnsafeMutablePointer<iovec> { receive.iovecs }
    private var messages: UnsafeMutablePointer<cportcullis_mmsghdr> { receive.messages }
    private var events: UnsafeMutablePointer<epoll_event> { receive.events }
    private static let eventCapacity = 64
    nonisolated(unsafe) private static var sequence: UInt32 = 0

    public var statistics: ReaderStatistics { stats.statistics }

    /// Number of writers connected now.
    public var writerCount: Int { connections.count }

    /// Creates the reader's socket in `options.directory` (created if missing, mode
    /// `directoryMode`) and starts accepting writers.
    public init(options: SocketOptions, policy: SlowReaderPolicy = .block) throws(TransportError) {
        try options.validate()
        self.options = options
        self.policy = policy
        try prepareDirectory(options.directory, mode: options.directoryMode, owners: options.owners)
        removeStaleReaderSockets(in: options.directory)
        allowedUIDs = Set(options.allowedUIDs + [0, geteuid()])
        allowedGIDs = Set(options.allowedGIDs)
        let number = cportcullis_fetch_add_seq_cst_u32(&Self.sequence, 1)
        let name = "reader-\(getpid())-\(number).\(policy.rawValue)\(SocketName.suffix)"
        path = options.directory + "/" + name
        let temporary = options.directory + "/.\(name).tmp"
        ownsSocketFile = true
        listener = try transportCall("create socket") {
            socket(
                AF_UNIX,
                Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                    | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        let epollCreated = systemCallResult { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        epoll = (try? epollCreated.get()) ?? -1
        receive = ReceiveBuffers(options: options, events: Self.eventCapacity)
        do throws(TransportError) {
            if case .failure(let error) = epollCreated {
                throw TransportError.system(operation: "epoll_create1", errno: error.code)
            }
            unlink(temporary)
            var address = try unixAddress(temporary)
            try transportCall("bind socket \(temporary)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            try transportCall("chmod \(temporary)") { chmod(temporary, options.socketMode) }
            try transportCall("listen on \(temporary)") { listen(listener, 128) }
            // Appear under the final name only once listening: a writer's inotify sees a socket
            // it can connect to, never one that refuses.
            try transportCall("rename \(temporary) to \(path)") { rename(temporary, path) }
            try watch(listener)
        } catch {
            unlink(temporary)
            Glibc.close(listener)
            if epoll >= 0 { Glibc.close(epoll) }
            closed = true  // deinit runs after a throwing init: nothing left to close
            throw error
        }
    }

    /// A second reader on the same socket, for another worker thread: writers connect once, and
    /// each connection is accepted by one of the readers sharing the socket (`EPOLLEXCLUSIVE`), so
    /// the lines are spread over the workers, not copied to each.
    public init(sharing primary: SocketReader) throws(TransportError) {
        options = primary.options
        policy = primary.policy
        path = primary.path
        allowedUIDs = primary.allowedUIDs
        allowedGIDs = primary.allowedGIDs
        ownsSocketFile = false
        listener = try transportCall("share socket \(primary.path)") { fcntl(primary.listener, F_DUPFD_CLOEXEC, 0) }
        let epollCreated = systemCallResult { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        epoll = (try? epollCreated.get()) ?? -1
        receive = ReceiveBuffers(options: options, events: Self.eventCapacity)
        do throws(TransportError) {
            if case .failure(let error) = epollCreated {
                throw TransportError.system(operation: "epoll_create1", errno: error.code)
            }
            try watch(listener)
        } catch {
            Glibc.close(listener)
            if epoll >= 0 { Glibc.close(epoll) }
            closed = true
            throw error
        }
    }

    deinit {
        close()
    }

    /// Removes the socket file (writers see their sends fail and forget this reader) and closes.
    public func close() {
        guard !closed else { return }
        closed = true
        if ownsSocketFile { unlink(path) }
        for fd in connections.keys { Glibc.close(fd) }
        connections.removeAll()
        Glibc.close(listener)
        Glibc.close(epoll)
    }

    private func watch(_ fd: Int32) throws(TransportError) {
        var event = epoll_event()
        // The listener may be shared by several readers' epolls: wake one of them per connection.
        event.events = EPOLLIN.rawValue | (fd == listener ? EPOLLEXCLUSIVE.rawValue : 0)
        event.data.fd = fd
        try transportCall("epoll_ctl") { epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) }
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        try receive(into: batch, timeoutMilliseconds: 0)
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        try receive(into: batch, timeoutMilliseconds: timeoutMilliseconds)
    }

    private func receive(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        precondition(!closed, "receive on a closed SocketReader")
        if let until = acceptPausedUntil, SystemClock.monotonicNanoseconds() >= until {
            try watch(listener)  // on failure still paused: tried again at the next receive
            acceptPausedUntil = nil
        }
        var total = 0
        if let pending = unpacking {
            total = try drain(pending.fd, into: batch)
            if unpacking != nil {  // still full
                if total > 0 { stats.linesReceived.add(UInt64(total)) }
                return total
            }
        }
        let ready = try transportCall("epoll_wait") {
            epoll_wait(epoll, events, Int32(Self.eventCapacity), Int32(clamping: total > 0 ? 0 : timeoutMilliseconds))
        }
        for index in 0..<Int(ready) {
            let fd = events[index].data.fd
            if fd == listener {
                acceptWriters()
            } else if connections[fd] != nil && !batch.isFull && unpacking == nil {
                total += try drain(fd, into: batch)
            }
        }
        if total > 0 { stats.linesReceived.add(UInt64(total)) }
        return total
    }

    /// While accepting is paused (out of file descriptors), when to try again.
    private var acceptPausedUntil: UInt64?

    private func acceptWriters() {
        while true {
            let accepted = systemCallResult {
                cportcullis_accept4(listener, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            }
            guard case .success(let fd) = accepted else {
                // EAGAIN: all accepted. Out of descriptors (EMFILE, ENFILE) or memory: the
                // connection stays queued and the level-triggered listener would wake us at once,
                // again and again; stop watching it for a second (the writer waits in the backlog).
                if case .failure(let error) = accepted,
                    [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.code)
                {
                    stats.acceptFailures.add(1)
                    _ = epoll_ctl(epoll, EPOLL_CTL_DEL, listener, nil)
                    acceptPausedUntil = SystemClock.monotonicNanoseconds() + 1_000_000_000
                }
                return
            }
            var pid: pid_t = 0
            var uid: uid_t = 0
            var gid: gid_t = 0
            guard cportcullis_peer_credentials(fd, &pid, &uid, &gid) == 0,
                allowedUIDs.contains(uid) || allowedGIDs.contains(gid)
            else {
                stats.writersRefused.add(1)
                Glibc.close(fd)
                continue
            }
            if let size = options.receiveBuffer { try? setSocketOption(fd, SO_RCVBUF, size, what: "SO_RCVBUF") }
            do {
                try watch(fd)
                connections[fd] = Connection()
            } catch {
                Glibc.close(fd)
            }
        }
    }

    /// Where unpacking of received datagrams stopped because the batch was full: the receive
    /// buffers are left untouched (no `recvmmsg`) until every line in them is delivered.
    private struct Unpacking {
        let fd: Int32
        let datagrams: Int
        var datagram = 0
        /// Offset inside the current datagram; 0 = its header is still to be read.
        var offset = 0
        var linesLeft = 0
    }
    private var unpacking: Unpacking?

    /// Delivers lines from received datagrams; false when the batch filled up first.
    private func resumeUnpacking(into batch: LineBatch, count: inout Int) -> Bool {
        guard var state = unpacking else { return true }
        defer { unpacking = state.datagram < state.datagrams ? state : nil }
        while state.datagram < state.datagrams {
            let datagram = buffers + state.datagram * options.datagramSize
            let length = Int(messages[state.datagram].msg_len)
            if state.offset == 0 {
                guard length >= Datagram.headerSize,
                    UInt32(littleEndian: datagram.loadUnaligned(as: UInt32.self)) == Datagram.magic
                else {
                    stats.linesRejected.add(1)  // not ours: count it, keep going
                    state.datagram += 1
                    continue
                }
                state.linesLeft = Int(UInt32(littleEndian: datagram.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
                let reported = UInt64(littleEndian: datagram.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                // A writer's running total of lines it could not send: only increases are taken, and
                // only plausible ones (a forged 2^63 must not become the reader's count).
                if let known = connections[state.fd]?.lostTotal, reported > known {
                    if reported - known <= Self.largestLossReport {
                        stats.linesLost.add(reported - known)
                        connections[state.fd]?.lostTotal = reported
                    } else {
                        stats.linesRejected.add(1)
                    }
                }
                state.offset = Datagram.headerSize
            }
            while state.linesLeft > 0 {
                guard state.offset + Datagram.lengthSize <= length else { break }
                let lineLength = Int(
                    UInt16(
                        littleEndian: datagram.loadUnaligned(
                            fromByteOffset: state.offset,
                            as: UInt16.self)))
                let start = state.offset + Datagram.lengthSize
                guard start + lineLength <= length else { break }
                guard batch.append(UnsafeRawBufferPointer(start: datagram + start, count: lineLength)) else {
                    return false
                }
                state.offset = start + lineLength
                state.linesLeft -= 1
                count += 1
            }
            // Lines the header promised but a truncated datagram did not hold.
            if state.linesLeft > 0 { stats.linesRejected.add(UInt64(state.linesLeft)) }
            state.datagram += 1
            state.offset = 0
        }
        return true
    }

    /// Receives from one writer while `batch` has room.
    private func drain(_ fd: Int32, into batch: LineBatch) throws(TransportError) -> Int {
        var total = 0
        guard resumeUnpacking(into: batch, count: &total) else { return total }
        while !batch.isFull {
            let want = options.datagramsPerCall
            for index in 0..<want {
                var message = cportcullis_mmsghdr()
                message.msg_hdr.msg_iov = iovecs + index
                message.msg_hdr.msg_iovlen = 1
                messages[index] = message
            }
            let received: Int32
            switch systemCallResult({ cportcullis_recvmmsg(fd, messages, UInt32(want), Int32(MSG_DONTWAIT), nil) }) {
            case .success(let count): received = count
            case .failure(let error):
                if error.code != EAGAIN && error.code != EWOULDBLOCK { closeConnection(fd) }  // ECONNRESET: writer died
                return total
            }
            // A zero-length message without flags is the writer's orderly shutdown.
            let ends =
                received == 0
                || (0..<Int(received)).contains {
                    messages[$0].msg_len == 0 && messages[$0].msg_hdr.msg_flags == 0
                }
            let usable =
                received == 0
                ? 0
                : (0..<Int(received)).first {
                    messages[$0].msg_len == 0 && messages[$0].msg_hdr.msg_flags == 0
                } ?? Int(received)
            // A datagram larger than our buffers (a writer with a larger --socket-datagram-size)
            // arrives cut: the lines that fit are delivered, the header's rest counted rejected.
            unpacking = Unpacking(fd: fd, datagrams: usable)
            let finished = resumeUnpacking(into: batch, count: &total)
            if ends {
                if finished { closeConnection(fd) }
                return total
            }
            if !finished || Int(received) < want { return total }
        }
        return total
    }

    private func closeConnection(_ fd: Int32) {
        connections.removeValue(forKey: fd)
        Glibc.close(fd)  // closing also removes it from the epoll set
    }
}

/// The memory a socket reader receives into: `datagramsPerCall` datagram buffers with their
/// iovecs and mmsghdrs, and the epoll event array.
private final class ReceiveBuffers {
    let buffers: UnsafeMutableRawPointer
    let iovecs: UnsafeMutablePointer<iovec>
    let messages: UnsafeMutablePointer<cportcullis_mmsghdr>
    let events: UnsafeMutablePointer<epoll_event>

    init(options: SocketOptions, events eventCount: Int) {
        let count = options.datagramsPerCall
        buffers = .allocate(byteCount: count * options.datagramSize, alignment: 64)
        iovecs = .allocate(capacity: count)
        messages = .allocate(capacity: count)
        events = .allocate(capacity: eventCount)
        for index in 0..<count {
            iovecs[index] = iovec(iov_base: buffers + index * options.datagramSize, iov_len: options.datagramSize)
        }
    }

    deinit {
        buffers.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        events.deallocate()
    }
}
