// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Sends lines to every reader socket in the directory, packing many lines per datagram and many
/// datagrams per `sendmmsg`. Readers are discovered with inotify as they appear; a reader that
/// goes away is dropped at its first failed send. One `SocketWriter` per writer thread.
public final class SocketWriter: LogWriter {
    private final class Peer {
        let fd: Int32
        let path: String
        let policy: SlowReaderPolicy
        var lost: UInt64 = 0
        /// A lossless reader whose send timed out (it does not read): sent to without waiting,
        /// as a lossy one, until a send goes through again.
        var stalled = false
        init(fd: Int32, path: String, policy: SlowReaderPolicy) {
            self.fd = fd
            self.path = path
            self.policy = policy
        }
        deinit { Glibc.close(fd) }
    }

    let options: SocketOptions
    private let inotify: Int32
    private var peers: [Peer] = []
    private var knownPaths: Set<String> = []
    public private(set) var statistics = WriterStatistics()
    private var closed = false

    // Packing buffers, allocated once: datagram payloads, per-peer headers, iovecs and mmsghdrs.
    private let payload: UnsafeMutableRawPointer
    private var payloadLengths: [Int]
    private var lineCounts: [UInt32]
    private let headers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cportcullis_mmsghdr>
    private let inotifyBuffer = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 8)

    /// Number of readers currently connected.
    public var readerCount: Int { peers.count }

    public init(options: SocketOptions) throws(TransportError) {
        try options.validate()
        self.options = options
        try prepareDirectory(options.directory, mode: options.directoryMode, owners: options.owners)
        inotify = try transportCall("inotify_init1") { inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) }
        let count = options.datagramsPerCall
        payload = .allocate(byteCount: count * options.datagramSize, alignment: 64)
        payloadLengths = Array(repeating: 0, count: count)
        lineCounts = Array(repeating: 0, count: count)
        headers = .allocate(byteCount: count * Datagram.headerSize, alignment: 8)
        iovecs = .allocate(capacity: 2 * count)
        messages = .allocate(capacity: count)
        if case .failure(let error) = systemCallResult({
            inotify_add_watch(inotify, options.directory, UInt32(IN_CREATE | IN_MOVED_TO))
        }) {
            Glibc.close(inotify)
            closed = true  // deinit runs after a throwing init: nothing left to close
            throw .system(operation: "watch socket directory \(options.directory)", errno: error.code)
        }
        scanDirectory()
    }

    deinit {
        close()
        payload.deallocate()
        headers.deallocate()
        iovecs.deallocate()
        messages.deallocate()
        inotifyBuffer.deallocate()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        // Tell lossy readers the final count of what they missed (bounded: SO_SNDTIMEO).
        for peer in peers where peer.policy == .drop && peer.lost > 0 {
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(peer.fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            writeHeader(at: headers, lines: 0, lost: peer.lost)
            _ = Glibc.send(peer.fd, headers, Datagram.headerSize, Int32(MSG_NOSIGNAL))
        }
        peers.removeAll()
        Glibc.close(inotify)
    }

    // MARK: Readers coming and going

    private func scanDirectory() {
        guard let directory = opendir(options.directory) else { return }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            connect(name: name)
        }
    }

    /// Reads pending inotify events (non-blocking: one syscall when there are none).
    private func refreshReaders() {
        while true {
            let length = read(inotify, inotifyBuffer, 4096)
            guard length > 0 else { return }
            var offset = 0
            while offset < length {
                let event = (inotifyBuffer + offset).assumingMemoryBound(to: inotify_event.self)
                let nameLength = Int(event.pointee.len)
                if event.pointee.mask & UInt32(IN_Q_OVERFLOW) != 0 {
                    scanDirectory()
                } else if nameLength > 0 {
                    let namePointer = (inotifyBuffer + offset + MemoryLayout<inotify_event>.size)
                        .assumingMemoryBound(to: UInt8.self)
                    let name = String(
                        decoding: UnsafeBufferPointer(start: namePointer, count: nameLength)
                            .prefix { $0 != 0 }, as: UTF8.self)
                    connect(name: name)
                }
                offset += MemoryLayout<inotify_event>.size + nameLength
            }
        }
    }

    private func connect(name: String) {
        guard let policy = SocketName.policy(of: name) else { return }
        let path = options.directory + "/" + name
        guard !knownPaths.contains(path) else { return }
        guard var address = try? unixAddress(path) else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        if let size = options.sendBuffer { try? setSocketOption(fd, SO_SNDBUF, size, what: "SO_SNDBUF") }
        // A lossless reader that does not read holds a blocking send for the block timeout at
        // most; then the datagrams are counted lost for it (EAGAIN below) and it is kept.
        var timeout = timeval(
            tv_sec: options.blockTimeoutMilliseconds / 1000, tv_usec: options.blockTimeoutMilliseconds % 1000 * 1000)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var connected: Int32
        connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                (try? systemCall(
                    { Glibc.connect(fd, socketAddress, socklen_t(MemoryLayout<sockaddr_un>.size)) },
                    orThrow: { $0 })) == nil ? -1 : 0
            }
        }
        guard connected == 0 else {
            Glibc.close(fd)  // a leftover socket of a dead reader (ECONNREFUSED) or gone already
            return
        }
        // Lines go only to a reader run by a trusted user: a socket someone else put there would
        // read the stream (or, never reading, hold the writers).
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard cportcullis_peer_credentials(fd, &pid, &uid, &gid) == 0, options.owners.trusts(uid: uid) else {
            Glibc.close(fd)
            knownPaths.insert(path)  // not tried again
            statistics.readersRefused += 1
            return
        }
        knownPaths.insert(path)
        peers.append(Peer(fd: fd, path: path, policy: policy))
    }

    private func drop(_ peer: Peer) {
        knownPaths.remove(peer.path)
        peers.removeAll { $0 === peer }
    }

    // MARK: Sending

    public func publish(_ batch: LineBatch) throws(TransportError) -> PublishResult {
        precondition(!closed, "publish on a closed SocketWriter")
        refreshReaders()
        var result = PublishResult()
        let maxLine = options.maxLineLength
        var datagrams = 0
        var offset = Datagram.headerSize  // write position inside the current datagram
        var linesInDatagram = 0
        batch.forEachLine { line in
            guard line.count <= maxLine else {
                result.rejected += 1
                return
            }
            if linesInDatagram == options.linesPerDatagram
                || offset + Datagram.lengthSize + line.count > options.datagramSize
            {
                finishDatagram(datagrams, length: offset, lines: linesInDatagram)
                datagrams += 1
                offset = Datagram.headerSize
                linesInDatagram = 0
                if datagrams == options.datagramsPerCall {
                    sendAll(datagrams)
                    datagrams = 0
                }
            }
            let position = payload + datagrams * options.datagramSize + offset
            position.storeBytes(of: UInt16(line.count).littleEndian, as: UInt16.self)
            if line.count > 0 {
                (position + Datagram.lengthSize).copyMemory(from: line.baseAddress!, byteCount: line.count)
            }
            offset += Datagram.lengthSize + line.count
            linesInDatagram += 1
            result.accepted += 1
        }
        if linesInDatagram > 0 {
            finishDatagram(datagrams, length: offset, lines: linesInDatagram)
            datagrams += 1
        }
        if datagrams > 0 { sendAll(datagrams) }
        statistics.linesWritten += UInt64(result.accepted)
        statistics.linesRejected += UInt64(result.rejected)
        return result
    }

    private func finishDatagram(_ index: Int, length: Int, lines: Int) {
        payloadLengths[index] = length - Datagram.headerSize
        lineCounts[index] = UInt32(lines)
    }

    @inline(__always)
    private func writeHeader(at address: UnsafeMutableRawPointer, lines: UInt32, lost: UInt64) {
        address.storeBytes(of: Datagram.magic.littleEndian, as: UInt32.self)
        address.storeBytes(of: lines.littleEndian, toByteOffset: 4, as: UInt32.self)
        address.storeBytes(of: lost.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// Sends datagrams `0..<count` to every reader: one header per reader (its own lost count),
    /// the packed lines shared.
    private func sendAll(_ count: Int) {
        for peer in peers {
            for index in 0..<count {
                let header = headers + index * Datagram.headerSize
                writeHeader(at: header, lines: lineCounts[index], lost: peer.lost)
                iovecs[2 * index] = iovec(iov_base: header, iov_len: Datagram.headerSize)
                iovecs[2 * index + 1] = iovec(
                    iov_base: payload + index * options.datagramSize + Datagram.headerSize,
                    iov_len: payloadLengths[index])
                var message = cportcullis_mmsghdr()
                message.msg_hdr.msg_iov = iovecs + 2 * index
                message.msg_hdr.msg_iovlen = 2
                messages[index] = message
            }
            if !send(to: peer, count) { drop(peer) }
        }
    }

    /// - Returns: false when the reader is gone.
    private func send(to peer: Peer, _ count: Int) -> Bool {
        var sent = 0
        let flags = Int32(MSG_NOSIGNAL) | (peer.policy == .drop || peer.stalled ? Int32(MSG_DONTWAIT) : 0)
        while sent < count {
            let result = systemCallResult { () -> Int32 in
                if options.datagramsPerCall == 1 {
                    return sendmsg(peer.fd, &messages[sent].msg_hdr, flags) >= 0 ? 1 : -1
                }
                return cportcullis_sendmmsg(peer.fd, messages + sent, UInt32(count - sent), flags)
            }
            let code: Int32
            switch result {
            case .success(let count) where count > 0:
                sent += Int(count)
                peer.stalled = false
                continue
            case .success: code = EAGAIN  // nothing taken (never seen): as a full buffer
            case .failure(let error): code = error.code
            }
            // A momentary shortage (ENOBUFS, ENOMEM) loses these datagrams, not the reader.
            if code == EAGAIN || code == EWOULDBLOCK || code == ENOBUFS || code == ENOMEM {
                if peer.policy == .block && !peer.stalled && (code == EAGAIN || code == EWOULDBLOCK) {
                    statistics.blockTimeouts += 1
                    peer.stalled = true
                }
                // A drop-policy reader (EAGAIN) or a kernel short of memory: count what is missed.
                var missed: UInt64 = 0
                for index in sent..<count { missed += UInt64(lineCounts[index]) }
                peer.lost += missed
                statistics.linesDropped += missed
                return true
            }
            return false  // EPIPE, ECONNRESET...: the reader went away
        }
        return true
    }
}
