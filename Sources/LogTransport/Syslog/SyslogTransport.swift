import CPortcullis
import Glibc
import PortcullisSystem

/// Settings of the syslog source: a datagram socket that syslog clients send to (rsyslog's
/// `omuxsock`, `logger --socket`), and optionally UDP on loopback.
public struct SyslogOptions: Sendable, Equatable {
    public static let defaultPath = "/run/portcullis/syslog.sock"
    /// The `AF_UNIX` `SOCK_DGRAM` socket (mode 0666, as `/dev/log`: the sender's uid, which the
    /// kernel vouches for, decides).
    public var path = defaultPath
    /// Also listen on UDP at this loopback `ADDRESS:PORT` (`127.0.0.1:5514`, `[::1]:5514`); nil: no UDP.
    /// UDP carries no sender: any local process may send there, so it is refused unless
    /// `udpAnySender` (`--syslog-udp-any-sender`) says the operator accepts that.
    public var udp: String?
    /// The operator accepts that any local user can feed the UDP port (and get any address banned).
    public var udpAnySender = false
    /// Users (besides root and this process's) whose messages on the socket are read; others'
    /// are dropped and counted (`writersRefused`): anyone can reach the socket, and a message
    /// names any tag it likes.
    public var allowedUIDs: [uid_t] = []
    /// The tags (RFC 3164 TAG, RFC 5424 APP-NAME) a jail reads (`source = "syslog:sshd,nginx"`);
    /// empty: every message. Routing, not the reader's business: the daemon's jails share one reader.
    public var tags: [String] = []
    /// Longest line delivered (`TAG[PID]: MESSAGE`); longer messages are dropped and counted rejected.
    public var maxLineLength = 8192
    /// `SO_RCVBUF` of the sockets (the kernel caps it at `net.core.rmem_max`).
    public var receiveBuffer = 4 << 20
    /// Who may own the socket's directory.
    public var owners = TrustedOwners()

    public init() {}

    /// These settings with no routing: what one reader for all the jails on the socket is made of.
    public var withoutTags: SyslogOptions {
        var options = self
        options.tags = []
        return options
    }

    public func validate() throws(TransportError) {
        guard path.hasPrefix("/"), path.utf8.count <= UnixSocketAddress.longestPath else {
            throw .invalidConfiguration(
                "syslog socket '\(path)': give an absolute path of at most \(UnixSocketAddress.longestPath) bytes")
        }
        if let udp {
            _ = try InternetSocketAddress(syslogUDP: udp)
            guard udpAnySender else {
                throw .invalidConfiguration(
                    "--syslog-udp \(udp): UDP names no sender, so any local user could get any address banned; "
                        + "use the syslog socket (or the journal), or add --syslog-udp-any-sender to accept that")
            }
        }
        for tag in tags where !SyslogRoute.isTag(tag) {
            throw .invalidConfiguration(
                "syslog tag '\(tag)': a tag is 1 to 48 characters without blanks, '[', ':' or ','; e.g. syslog:sshd,nginx"
            )
        }
        guard (64...65_000).contains(maxLineLength) else {
            throw .invalidConfiguration("the syslog source's longest line must be 64...65000 bytes")
        }
    }
}

extension InternetSocketAddress {
    /// `--syslog-udp`: a loopback address and port.
    init(syslogUDP text: String) throws(TransportError) {
        let usage = "give a loopback ADDRESS:PORT, e.g. 127.0.0.1:5514 or [::1]:5514"
        do throws(InternetSocketAddressError) {
            self = try InternetSocketAddress(text)
        } catch {
            throw .invalidConfiguration("syslog UDP address '\(text)': \(error); \(usage)")
        }
        guard port > 0, isLoopback else {
            throw .invalidConfiguration("syslog UDP address '\(text)': not a loopback address and port; \(usage)")
        }
    }
}

/// One syslog message (RFC 3164 or RFC 5424) rewritten as the line the jails read:
/// `TAG[PID]: MESSAGE` (`TAG: MESSAGE` without a PID, `-: MESSAGE` without a tag), the shape of
/// fail2ban's systemd backend's lines, which its filters' `__prefix_line` takes. The priority,
/// the time stamp, the host name and (RFC 5424) the message id and the structured data are left
/// out: a line's time is when it arrived.
public enum SyslogMessage {
    /// Writes the line of `datagram` at `destination` (room for `capacity` bytes).
    /// - Returns: its length, or nil when it does not fit.
    public static func format(
        _ datagram: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer, capacity: Int
    )
        -> Int?
    {
        let parts = parse(datagram)
        let tag = parts.tag.isEmpty ? UnsafeRawBufferPointer(start: dash.utf8Start, count: 1) : parts.tag
        let length = tag.count + (parts.pid.isEmpty ? 0 : parts.pid.count + 2) + 2 + parts.message.count
        guard length <= capacity else { return nil }
        var at = 0
        func put(_ bytes: UnsafeRawBufferPointer) {
            if !bytes.isEmpty { (destination + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            at += bytes.count
        }
        func put(_ byte: UInt8) {
            destination.storeBytes(of: byte, toByteOffset: at, as: UInt8.self)
            at += 1
        }
        put(tag)
        if !parts.pid.isEmpty {
            put(UInt8(ascii: "["))
            put(parts.pid)
            put(UInt8(ascii: "]"))
        }
        put(UInt8(ascii: ":"))
        put(UInt8(ascii: " "))
        put(parts.message)
        return at
    }

    private static let dash: StaticString = "-"

    /// The parts of a message that make its line.
    public struct Parts {
        public var tag: UnsafeRawBufferPointer
        public var pid: UnsafeRawBufferPointer
        public var message: UnsafeRawBufferPointer
    }

    /// Splits a datagram. Never fails: what cannot be read as a header is message.
    public static func parse(_ whole: UnsafeRawBufferPointer) -> Parts {
        var end = whole.count
        // Senders end messages with a newline (rsyslog's templates) or a NUL (old syslog(3)).
        while end > 0, whole[end - 1] == 0x0A || whole[end - 1] == 0x0D || whole[end - 1] == 0 { end -= 1 }
        let empty = UnsafeRawBufferPointer(start: whole.baseAddress, count: 0)
        func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: whole[from..<max(from, to)])
        }
        var at = 0
        // <PRI>: 1 to 3 digits.
        if end > 2, whole[0] == UInt8(ascii: "<") {
            var digits = 1
            while digits < end, digits <= 4, (0x30...0x39).contains(whole[digits]) { digits += 1 }
            if digits > 1, digits < end, whole[digits] == UInt8(ascii: ">") { at = digits + 1 }
        }
        // RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
        if at > 0, at + 1 < end, whole[at] == UInt8(ascii: "1"), whole[at + 1] == UInt8(ascii: " ") {
            var fields: [Range<Int>] = []
            var cursor = at + 2
            while fields.count < 5 {
                let start = cursor
                while cursor < end, whole[cursor] != UInt8(ascii: " ") { cursor += 1 }
                fields.append(start..<cursor)
                if cursor >= end { break }
                cursor += 1
            }
            if fields.count == 5 {
                cursor = skipStructuredData(whole, from: cursor, end: end)
                if cursor < end, whole[cursor] == UInt8(ascii: " ") { cursor += 1 }
                // A UTF-8 message may start with its byte-order mark.
                if cursor + 3 <= end, whole[cursor] == 0xEF, whole[cursor + 1] == 0xBB, whole[cursor + 2] == 0xBF {
                    cursor += 3
                }
                func field(_ index: Int) -> UnsafeRawBufferPointer {
                    let range = fields[index]
                    return range.count == 1 && whole[range.lowerBound] == UInt8(ascii: "-")
                        ? empty : slice(range.lowerBound, range.upperBound)
                }
                return Parts(tag: field(2), pid: field(3), message: slice(min(cursor, end), end))
            }
        }
        // RFC 3164: [TIMESTAMP SP] [HOSTNAME SP] TAG[PID]: MSG
        at = skipTimestamp(whole, from: at, end: end)
        func word(from start: Int) -> Int {
            var cursor = start
            while cursor < end, whole[cursor] != UInt8(ascii: " ") { cursor += 1 }
            return cursor
        }
        /// Whether the word at `start..<stop` is a tag: `NAME[PID]:`, `NAME:` or `NAME[PID]`.
        func tagEnd(_ start: Int, _ stop: Int) -> Int? {
            var cursor = start
            while cursor < stop, whole[cursor] != UInt8(ascii: "["), whole[cursor] != UInt8(ascii: ":") {
                cursor += 1
            }
            guard cursor > start, cursor - start <= SyslogRoute.longestTag, cursor < stop else { return nil }
            return cursor
        }
        let first = word(from: at)
        var tagStart = at
        var nameEnd = tagEnd(at, first)
        if nameEnd == nil, first < end {
            let second = word(from: first + 1)
            if let end = tagEnd(first + 1, second) {
                tagStart = first + 1
                nameEnd = end
            }
        }
        guard let nameEnd else { return Parts(tag: empty, pid: empty, message: slice(at, end)) }
        var cursor = nameEnd
        var pid = empty
        if whole[cursor] == UInt8(ascii: "[") {
            let pidStart = cursor + 1
            while cursor < end, whole[cursor] != UInt8(ascii: "]") { cursor += 1 }
            guard cursor < end else { return Parts(tag: empty, pid: empty, message: slice(at, end)) }
            pid = slice(pidStart, cursor)
            cursor += 1
        }
        if cursor < end, whole[cursor] == UInt8(ascii: ":") { cursor += 1 }
        if cursor < end, whole[cursor] == UInt8(ascii: " ") { cursor += 1 }
        return Parts(tag: slice(tagStart, nameEnd), pid: pid, message: slice(cursor, end))
    }

    /// `Mmm dd hh:mm:ss ` (RFC 3164) or an RFC 3339 stamp (`2026-12-01T10:00:00.5+00:00 `, as
    /// rsyslog's forwarding formats send), if one starts at `at`.
    private static func skipTimestamp(_ bytes: UnsafeRawBufferPointer, from at: Int, end: Int) -> Int {
        func digit(_ index: Int) -> Bool { index < end && (0x30...0x39).contains(bytes[index]) }
        func letter(_ index: Int) -> Bool {
            index < end && (bytes[index] | 0x20) >= 0x61 && (bytes[index] | 0x20) <= 0x7A
        }
        func byte(_ index: Int, _ value: Character) -> Bool { index < end && bytes[index] == value.asciiValue! }
        if letter(at), letter(at + 1), letter(at + 2), byte(at + 3, " "), byte(at + 4, " ") || digit(at + 4),
            digit(at + 5), byte(at + 6, " "), digit(at + 7), digit(at + 8), byte(at + 9, ":"), digit(at + 10),
            digit(at + 11), byte(at + 12, ":"), digit(at + 13), digit(at + 14), byte(at + 15, " ")
        {
            return at + 16
        }
        if digit(at), digit(at + 1), digit(at + 2), digit(at + 3), byte(at + 4, "-"), byte(at + 10, "T") {
            var cursor = at
            while cursor < end, bytes[cursor] != UInt8(ascii: " ") { cursor += 1 }
            return min(cursor + 1, end)
        }
        return at
    }

    /// RFC 5424's STRUCTURED-DATA: `-`, or `[ID PARAM="VALUE"...]...` where a value escapes `"`,
    /// `\` and `]` with a backslash. - Returns: where it ends.
    private static func skipStructuredData(_ bytes: UnsafeRawBufferPointer, from at: Int, end: Int) -> Int {
        guard at < end else { return end }
        if bytes[at] == UInt8(ascii: "-") { return at + 1 }
        var cursor = at
        while cursor < end, bytes[cursor] == UInt8(ascii: "[") {
            var quoted = false
            cursor += 1
            while cursor < end {
                let byte = bytes[cursor]
                if quoted && byte == UInt8(ascii: "\\") {
                    cursor += 2
                    continue
                }
                if byte == UInt8(ascii: "\"") { quoted.toggle() }
                cursor += 1
                if !quoted && byte == UInt8(ascii: "]") { break }
            }
        }
        return min(cursor, end)
    }
}

/// Which lines of the syslog source a jail reads: those whose tag is one of its own (all without
/// any), whole for its filter, or only the message for the built-in scanner (whose format a
/// service logs as its message). The lines are `SyslogMessage`'s: `TAG[PID]: MESSAGE`.
public struct SyslogRoute: Sendable, Equatable {
    public let tags: [[UInt8]]
    public let messageOnly: Bool
    /// RFC 3164 allows 32; rsyslog takes longer ones.
    static let longestTag = 48

    public init(tags: [String], messageOnly: Bool) {
        self.tags = tags.map { Array($0.utf8) }
        self.messageOnly = messageOnly
    }

    static func isTag(_ tag: String) -> Bool {
        (1...longestTag).contains(tag.utf8.count)
            && !tag.utf8.contains {
                $0 <= 0x20 || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ",")
            }
    }

    /// The part of `line` the jail reads, or nil when the line is another jail's.
    @inline(__always)
    public func select(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var cursor = 0
        while cursor < line.count, line[cursor] != UInt8(ascii: "["), line[cursor] != UInt8(ascii: ":") { cursor += 1 }
        if !tags.isEmpty {
            let tag = UnsafeRawBufferPointer(rebasing: line[0..<cursor])
            guard tags.contains(where: { $0.elementsEqual(tag) }) else { return nil }
        }
        guard messageOnly else { return line }
        // `TAG[PID]: ` or `TAG: `: the message starts after ": ".
        while cursor < line.count, line[cursor] != UInt8(ascii: ":") { cursor += 1 }
        return UnsafeRawBufferPointer(rebasing: line[min(cursor + 2, line.count)...])
    }
}

/// Receives syslog datagrams on the socket (and UDP) and delivers each as a line. One thread
/// reads (the group's note says so when more were asked for).
public final class SyslogReader: LogReader {
    let options: SyslogOptions
    private let unix: Int32
    private var udp: Int32 = -1
    /// The socket file's inode: only the file this reader made is removed at close.
    private var inode: ino_t = 0
    private var stats = ReaderStatistics()
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
    /// (an array map of one u64), or -1 without the filter.
    private var kernelDrops: Int32 = -1

    public var statistics: ReaderStatistics {
        var total = stats
        var key: UInt32 = 0
        var dropped: UInt64 = 0
        if kernelDrops >= 0 && bpf_map_lookup_elem(kernelDrops, &key, &dropped) == 0 { total.writersRefused += dropped }
        return total
    }

    /// Whether the kernel drops refused senders' datagrams before they take a place in the queue.
    public var filtersInKernel: Bool { kernelDrops >= 0 }

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
        unix = socket(
            AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        do throws(TransportError) {
            guard unix >= 0 else { throw TransportError.system(operation: "create the syslog socket", errno: errno) }
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
                kernelDrops = filter
            } else {
                sayProblem(
                    "note: the syslog socket \(options.path) has no kernel filter (\(String(cString: strerror(-filter)))"
                        + "; it needs CAP_BPF): refused senders are dropped by the reader, and a flood of theirs can "
                        + "crowd out non-blocking senders")
            }
            setReceiveBuffer(unix)
            if let text = options.udp {
                let address = try InternetSocketAddress(syslogUDP: text)
                udp = socket(
                    address.family,
                    Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard udp >= 0 else {
                    throw TransportError.system(operation: "create the syslog UDP socket", errno: errno)
                }
                try transportCall("bind syslog UDP \(text)") { address.withSocketAddress { bind(udp, $0, $1) } }
                setReceiveBuffer(udp)
            }
        } catch {
            if inode != 0 { unlink(options.path) }
            if unix >= 0 { Glibc.close(unix) }
            if kernelDrops >= 0 { Glibc.close(kernelDrops) }
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
        stats = statistics  // the kernel's count kept
        if kernelDrops >= 0 { Glibc.close(kernelDrops) }
        kernelDrops = -1
        release()
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        drain(unix, credentials: true, into: batch) + (udp >= 0 ? drain(udp, credentials: false, into: batch) : 0)
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        let got = try poll(into: batch)
        if got > 0 || closed { return got }
        var fds = [pollfd(fd: unix, events: Int16(POLLIN), revents: 0)]
        if udp >= 0 { fds.append(pollfd(fd: udp, events: Int16(POLLIN), revents: 0)) }
        let ready = Glibc.poll(&fds, nfds_t(fds.count), Int32(clamping: timeoutMilliseconds))
        if ready < 0 && errno != EINTR { throw .system(operation: "poll the syslog socket", errno: errno) }
        return ready > 0 ? try poll(into: batch) : 0
    }

    /// Receives what is waiting on `fd` while `batch` has room.
    private func drain(_ fd: Int32, credentials: Bool, into batch: LineBatch) -> Int {
        var total = 0
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
            let received = cportcullis_recvmmsg(fd, messages, UInt32(room), Int32(MSG_DONTWAIT), nil)
            guard received > 0 else { return total }
            for index in 0..<Int(received) {
                let message = messages[index]
                if credentials {
                    let uid = withUnsafePointer(to: messages[index].msg_hdr) { cportcullis_message_uid($0) }
                    guard uid >= 0, allowedUIDs.contains(uid_t(uid)) else {
                        stats.writersRefused += 1
                        continue
                    }
                }
                stats.linesReceived += 1
                if message.msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 {
                    stats.linesRejected += 1
                    continue
                }
                let datagram = UnsafeRawBufferPointer(start: buffers + index * bufferSize, count: Int(message.msg_len))
                guard let destination = batch.appendUninitialized(length: options.maxLineLength) else {
                    stats.linesRejected += 1  // not reached: room was checked above
                    continue
                }
                if let length = SyslogMessage.format(datagram, into: destination, capacity: options.maxLineLength) {
                    batch.shortenLast(to: length)
                    total += 1
                } else {
                    batch.removeLast()
                    stats.linesRejected += 1
                }
            }
            if Int(received) < room { return total }
        }
    }
}
