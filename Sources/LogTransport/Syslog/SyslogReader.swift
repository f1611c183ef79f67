// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

import Synchronization

/// Receives syslog datagrams on the socket (and UDP) and delivers each as a line. One thread
/// reads (the group's note says so when more were asked for).
public final class SyslogReader: LogReader {
    let options: SyslogOptions
    private let unix: Int32
    private var udp: Int32 = -1
    /// The socket file's inode: only the file this reader made is removed at close.
    private var inode: ino_t = 0
    /// Written by the thread that reads (once per `drain`); read by any.
    private let stats = ReaderCounters()
    private var closed = false
    private let allowedUIDs: Set<uid_t>
    private static let datagramsPerCall = 64
    private let bufferSize: Int
    private let buffers: UnsafeMutableRawPointer
    private let controls: UnsafeMutableRawPointer
    private let controlSize: Int
    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cportcullis_mmsghdr>

    /// The kernel filter's count of datagrams dropped because their socket's owner is refused
    /// (an array map of one u64), or -1 without the filter. Under a lock: `statistics` reads the
    /// map from any thread, and `close` must not close the descriptor under it.
    private let kernelDrops = Mutex<Int32>(-1)

    public var statistics: ReaderStatistics {
        var total = stats.statistics
        total.writersRefused += kernelDrops.withLock { Self.kernelDropCount($0) }
        return total
    }

    /// The kernel filter's count (0 without the filter, or when the map cannot be read).
    private static func kernelDropCount(_ map: Int32) -> UInt64 {
        var key: UInt32 = 0
        var dropped: UInt64 = 0
        guard map >= 0, bpf_map_lookup_elem(map, &key, &dropped) == 0 else { return 0 }
        return dropped
    }

    /// Whether the kernel drops refused senders' datagrams before they take a place in the queue.
    public var filtersInKernel: Bool { kernelDrops.withLock { $0 >= 0 } }

    /// Binds the socket (a stale one, which nobody reads, is replaced; a live one refuses the
    /// start) and the UDP port, if any.
    public init(options: SyslogOptions) throws(TransportError) {
        try options.validate()
        self.options = options
        allowedUIDs = Set(options.allowedUIDs + [0, geteuid()])
        bufferSize = options.maxLineLength + 1024  // the header the line leaves out
        controlSize = cportcullis_credentials_space()
        buffers = .allocate(byteCount: bufferSize * Self.datagramsPerCall, alignment: 16)
        controls = .allocate(byteCount: controlSize * Self.datagramsPerCall, alignment: 16)
        iovecs = .allocate(capacity: Self.datagramsPerCall)
        messages = .allocate(capacity: Self.datagramsPerCall)
        for index in 0..<Self.datagramsPerCall {
            iovecs[index] = iovec(iov_base: buffers + index * bufferSize, iov_len: bufferSize)
        }
        let unixSocket = systemCallResult {
            socket(
                AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        unix = (try? unixSocket.get()) ?? -1
        do throws(TransportError) {
            if case .failure(let error) = unixSocket {
                throw TransportError.system(operation: "create the syslog socket", errno: error.code)
            }
            let directory = String(options.path[..<options.path.lastIndex(of: "/")!])
            if !directory.isEmpty { try prepareDirectory(directory, mode: 0o755, owners: options.owners) }
            try removeStale(options.path)
            var address = try unixAddress(options.path)
            try transportCall("bind the syslog socket \(options.path)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(unix, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            var info = stat()
            if lstat(options.path, &info) == 0 { inode = info.st_ino }
            try transportCall("chmod \(options.path)") { chmod(options.path, 0o666) }
            var on: Int32 = 1
            try transportCall("SO_PASSCRED on \(options.path)") {
                setsockopt(unix, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size))
            }
            // A flood from a refused user must neither fill the queue (max_dgram_qlen datagrams:
            // trusted non-blocking senders would meet EAGAIN) nor cost this thread a receive per
            // datagram: the kernel drops refused users' datagrams in their own sendmsg and counts
            // them. SCM_CREDENTIALS below stay the check (what a root sender claims, say).
            let uids = allowedUIDs.map { UInt32($0) }
            let filter = cportcullis_attach_uid_filter(unix, uids, uids.count)
            if filter >= 0 {
                kernelDrops.withLock { $0 = filter }
            } else {
                sayProblem(
                    "note: the syslog socket \(options.path) has no kernel filter (\(String(cString: strerror(-filter)))"
                        + "; it needs CAP_BPF): refused senders are dropped by the reader, and a flood of theirs can "
                        + "crowd out non-blocking senders")
            }
            setReceiveBuffer(unix)
            if let text = options.udp {
                let address = try InternetSocketAddress(syslogUDP: text)
                udp = try transportCall("create the syslog UDP socket") {
                    socket(
                        address.family,
                        Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                }
                try transportCall("bind syslog UDP \(text)") { address.withSocketAddress { bind(udp, $0, $1) } }
                setReceiveBuffer(udp)
            }
        } catch {
            if inode != 0 { unlink(options.path) }
            if unix >= 0 { Glibc.close(unix) }
            kernelDrops.withLock { if $0 >= 0 { Glibc.close($0) } }
            if udp >= 0 { Glibc.close(udp) }
            closed = true
            release()
            throw error
        }
    }

    deinit {
        close()
    }

    private func release() {
        buffers.deallocate()
        controls.deallocate()
        iovecs.deallocate()
        messages.deallocate()
    }

    private func setReceiveBuffer(_ fd: Int32) {
        var size = Int32(clamping: options.receiveBuffer)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A socket at `path` that nobody reads (a crashed daemon's) is removed; one somebody reads,
    /// or a file that is not a socket, refuses the start.
    private func removeStale(_ path: String) throws(TransportError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw .invalidConfiguration("\(path) exists and is not a socket; remove it or give another --syslog-socket")
        }
        let probe = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { return }
        defer { Glibc.close(probe) }
        var address = try unixAddress(path)
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                systemCallResult { connect(probe, socketAddress, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        switch result {
        case .success:
            throw .invalidConfiguration(
                "syslog socket \(path) is read by another process (another portcullisd?); stop it or give another "
                    + "--syslog-socket")
        case .failure(let error) where error.code == ECONNREFUSED:
            unlink(path)
        case .failure:
            return
        }
    }

    /// Closes the sockets and removes the socket file (if it is still this reader's).
    public func close() {
        guard !closed else { return }
        closed = true
        var info = stat()
        if lstat(options.path, &info) == 0, info.st_ino == inode { unlink(options.path) }
        Glibc.close(unix)
        if udp >= 0 { Glibc.close(udp) }
        kernelDrops.withLock { map in
            guard map >= 0 else { return }
            stats.writersRefused.add(Self.kernelDropCount(map))  // the kernel's count kept
            Glibc.close(map)
            map = -1
        }
        release()
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        guard !closed else { return 0 }  // the buffers are released
        return try drain(unix, credentials: true, into: batch)
            + (udp >= 0 ? drain(udp, credentials: false, into: batch) : 0)
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        let got = try poll(into: batch)
        if got > 0 || closed { return got }
        var fds = [pollfd(fd: unix, events: Int16(POLLIN), revents: 0)]
        if udp >= 0 { fds.append(pollfd(fd: udp, events: Int16(POLLIN), revents: 0)) }
        // EINTR is retried by the funnel with the whole timeout: a signal only lengthens the wait.
        let ready = try transportCall("poll the syslog socket") {
            Glibc.poll(&fds, nfds_t(fds.count), Int32(clamping: timeoutMilliseconds))
        }
        return ready > 0 ? try poll(into: batch) : 0
    }

    /// Receives what is waiting on `fd` while `batch` has room.
    /// - Throws: when `recvmmsg` fails other than for "nothing waiting" (`EAGAIN`).
    private func drain(_ fd: Int32, credentials: Bool, into batch: LineBatch) throws(TransportError) -> Int {
        var total = 0
        // Counted here and published once per call: no atomic per datagram.
        var received: UInt64 = 0
        var rejected: UInt64 = 0
        var refused: UInt64 = 0
        defer {
            if received > 0 { stats.linesReceived.add(received) }
            if rejected > 0 { stats.linesRejected.add(rejected) }
            if refused > 0 { stats.writersRefused.add(refused) }
        }
        while true {
            // Only as many datagrams as lines and bytes the batch still takes: none is received
            // that could not be delivered.
            var room = min(Self.datagramsPerCall, batch.lineCapacity - batch.count)
            while room > 0 && !batch.canAppend(length: room * bufferSize) { room /= 2 }
            guard room > 0 else { return total }
            for index in 0..<room {
                var message = cportcullis_mmsghdr()
                message.msg_hdr.msg_iov = iovecs + index
                message.msg_hdr.msg_iovlen = 1
                if credentials {
                    message.msg_hdr.msg_control = controls + index * controlSize
                    message.msg_hdr.msg_controllen = controlSize
                }
                messages[index] = message
            }
            let count = try transportCallCount("receive from the syslog socket") {
                Int(cportcullis_recvmmsg(fd, messages, UInt32(room), Int32(MSG_DONTWAIT), nil))
            }
            guard count > 0 else { return total }
            for index in 0..<count {
                let message = messages[index]
                if credentials {
                    let uid = withUnsafePointer(to: messages[index].msg_hdr) { cportcullis_message_uid($0) }
                    guard uid >= 0, allowedUIDs.contains(uid_t(uid)) else {
                        refused += 1
                        continue
                    }
                }
                received += 1
                if message.msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 {
                    rejected += 1
                    continue
                }
                let datagram = UnsafeRawBufferPointer(start: buffers + index * bufferSize, count: Int(message.msg_len))
                guard let destination = batch.appendUninitialized(length: options.maxLineLength) else {
                    rejected += 1  // not reached: room was checked above
                    continue
                }
                if let length = SyslogMessage.format(datagram, into: destination, capacity: options.maxLineLength) {
                    batch.shortenLast(to: length)
                    total += 1
                } else {
                    batch.removeLast()
                    rejected += 1
                }
            }
            if count < room { return total }
        }
    }
}
