import CPortcullis
import Glibc

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
    private let epoll: Int32
    private var connections: [Int32: Connection] = [:]
    private var lostByClosedConnections: UInt64 = 0
    private var stats = ReaderStatistics()
    private var closed = false
    private let allowedUIDs: Set<uid_t>
    private let allowedGIDs: Set<gid_t>

    private let buffers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cportcullis_mmsghdr>
    private let events: UnsafeMutablePointer<epoll_event>
    private static let eventCapacity = 64
    nonisolated(unsafe) private static var sequence: UInt32 = 0

    public var statistics: ReaderStatistics {
        var result = stats
        result.linesLost = lostByClosedConnections + connections.values.reduce(0) { $0 + $1.lostTotal }
        return result
    }

    /// Number of writers connected now.
    public var writerCount: Int { connections.count }

    /// Creates the reader's socket in `options.directory` (created if missing, mode
    /// `directoryMode`) and starts accepting writers.
    public init(options: SocketOptions, policy: SlowReaderPolicy = .block) throws(TransportError) {
        try options.validate()
        self.options = options
        self.policy = policy
        try prepareDirectory(options.directory, mode: options.directoryMode)
        allowedUIDs = Set(options.allowedUIDs + [0, geteuid()])
        allowedGIDs = Set(options.allowedGIDs)
        let number = cportcullis_fetch_add_seq_cst_u32(&Self.sequence, 1)
        let name = "reader-\(getpid())-\(number).\(policy.rawValue)\(SocketName.suffix)"
        path = options.directory + "/" + name
        let temporary = options.directory + "/.\(name).tmp"
        listener = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
                          | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw .system(operation: "create socket", errno: errno) }
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        let count = options.datagramsPerCall
        buffers = .allocate(byteCount: count * options.datagramSize, alignment: 64)
        iovecs = .allocate(capacity: count)
        messages = .allocate(capacity: count)
        events = .allocate(capacity: Self.eventCapacity)
        do throws(TransportError) {
            guard epoll >= 0 else { throw TransportError.system(operation: "epoll_create1", errno: errno) }
            unlink(temporary)
            var address = try unixAddress(temporary)
            try systemCall("bind socket \(temporary)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            try systemCall("chmod \(temporary)") { chmod(temporary, options.socketMode) }
            try systemCall("listen on \(temporary)") { listen(listener, 128) }
            // Appear under the final name only once listening: a writer's inotify sees a socket
            // it can connect to, never one that refuses.
            try systemCall("rename \(temporary) to \(path)") { rename(temporary, path) }
            try watch(listener)
        } catch {
            unlink(temporary)
            Glibc.close(listener)
            if epoll >= 0 { Glibc.close(epoll) }
            throw error
        }
        for index in 0..<count {
            iovecs[index] = iovec(iov_base: buffers + index * options.datagramSize, iov_len: options.datagramSize)
        }
    }

    deinit {
        close()
        buffers.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        events.deallocate()
    }

    /// Removes the socket file (writers see their sends fail and forget this reader) and closes.
    public func close() {
        guard !closed else { return }
        closed = true
        unlink(path)
        for fd in connections.keys { Glibc.close(fd) }
        connections.removeAll()
        Glibc.close(listener)
        Glibc.close(epoll)
    }

    private func watch(_ fd: Int32) throws(TransportError) {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = fd
        try systemCall("epoll_ctl") { epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) }
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        try receive(into: batch, timeoutMilliseconds: 0)
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        try receive(into: batch, timeoutMilliseconds: timeoutMilliseconds)
    }

    private func receive(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        precondition(!closed, "receive on a closed SocketReader")
        let ready = try systemCall("epoll_wait") {
            epoll_wait(epoll, events, Int32(Self.eventCapacity), Int32(clamping: timeoutMilliseconds))
        }
        var total = 0
        for index in 0..<Int(ready) {
            let fd = events[index].data.fd
            if fd == listener {
                acceptWriters()
            } else {
                total += try drain(fd, into: batch)
            }
        }
        stats.linesReceived += UInt64(total)
        return total
    }

    private func acceptWriters() {
        while true {
            let fd = cportcullis_accept4(listener, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            guard fd >= 0 else { return }  // EAGAIN: all accepted
            var pid: pid_t = 0
            var uid: uid_t = 0
            var gid: gid_t = 0
            guard cportcullis_peer_credentials(fd, &pid, &uid, &gid) == 0,
                  allowedUIDs.contains(uid) || allowedGIDs.contains(gid) else {
                stats.writersRefused += 1
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

    /// Receives from one writer as many datagrams as `batch` can surely take.
    private func drain(_ fd: Int32, into batch: LineBatch) throws(TransportError) -> Int {
        var total = 0
        let maxLinesPerDatagram = min(options.linesPerDatagram,
                                      (options.datagramSize - Datagram.headerSize) / Datagram.lengthSize)
        while true {
            let byLines = (batch.lineCapacity - batch.count) / max(1, maxLinesPerDatagram)
            let byBytes = (batch.byteCapacity - batch.byteCount) / options.datagramSize
            let want = min(options.datagramsPerCall, byLines, byBytes)
            if want == 0 { return total }  // batch full: the rest waits in the socket
            for index in 0..<want {
                var message = cportcullis_mmsghdr()
                message.msg_hdr.msg_iov = iovecs + index
                message.msg_hdr.msg_iovlen = 1
                messages[index] = message
            }
            let received = cportcullis_recvmmsg(fd, messages, UInt32(want), Int32(MSG_DONTWAIT), nil)
            if received < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EAGAIN || code == EWOULDBLOCK { return total }
                closeConnection(fd)  // ECONNRESET: the writer died
                return total
            }
            if received == 0 {
                closeConnection(fd)
                return total
            }
            for index in 0..<Int(received) {
                let length = Int(messages[index].msg_len)
                if length == 0 && messages[index].msg_hdr.msg_flags == 0 {
                    closeConnection(fd)  // orderly shutdown shows as a zero-length message
                    return total
                }
                total += unpack(buffers + index * options.datagramSize, length: length,
                                truncated: messages[index].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0,
                                from: fd, into: batch)
            }
            if Int(received) < want { return total }
        }
    }

    private func unpack(_ datagram: UnsafeMutableRawPointer, length: Int, truncated: Bool, from fd: Int32,
                        into batch: LineBatch) -> Int {
        guard length >= Datagram.headerSize,
              UInt32(littleEndian: datagram.loadUnaligned(as: UInt32.self)) == Datagram.magic else {
            stats.linesRejected += 1  // not ours: count it, keep going
            return 0
        }
        let lines = Int(UInt32(littleEndian: datagram.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        connections[fd]?.lostTotal = UInt64(littleEndian: datagram.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        var offset = Datagram.headerSize
        var count = 0
        while count < lines {
            guard offset + Datagram.lengthSize <= length else { break }
            let lineLength = Int(UInt16(littleEndian: datagram.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
            offset += Datagram.lengthSize
            guard offset + lineLength <= length else { break }
            batch.append(UnsafeRawBufferPointer(start: datagram + offset, count: lineLength))
            offset += lineLength
            count += 1
        }
        if count < lines || truncated { stats.linesRejected += UInt64(lines - count) }
        return count
    }

    private func closeConnection(_ fd: Int32) {
        if let connection = connections.removeValue(forKey: fd) { lostByClosedConnections += connection.lostTotal }
        Glibc.close(fd)  // closing also removes it from the epoll set
    }
}
