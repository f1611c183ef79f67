// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import FoundationEssentials
import Glibc
import PortcullisSystem
import Synchronization

/// Why the control socket could not be made: one line, with what to do.
public struct ControlError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The daemon's control socket (`/run/portcullis/control.sock`): a `SOCK_STREAM` UNIX socket, mode
/// 0660, whose peers must be root or in the allowed group (checked with `SO_PEERCRED` on every
/// connection, whatever the file's mode says); `detach` is root's alone (`rootOnlyCommands`). Each connection carries one request line and gets
/// one reply line. Each connection is answered on a thread of its own with deadlines of its own (2 s
/// to send its request; a stream's stall and total limits), so a peer that idles or stops reading
/// holds only itself: another peer's `status` is answered meanwhile. At most
/// `connectionsPerUser` connections of one uid and `connectionsInAll` in all are served at once;
/// one more gets a `busy` error at once. Requests that change state (`ban`, `unban`, `reload`) are
/// answered one at a time; a bad request gets an error reply and is counted, and nothing a peer
/// sends stops the server.
public final class ControlServer: @unchecked Sendable {
    public let path: String
    /// Group whose members may ask besides root; nil: root only.
    public let allowedGroup: gid_t?
    private let listener: Int32
    private let handler: @Sendable (ControlRequest) -> ControlReply
    /// Answers a request by streaming on the connection itself (a reply line with `stream`, then
    /// the output), or returns false to leave it to the handler. Set before `start`.
    public var streamer: (@Sendable (ControlRequest, Int32) -> Bool)?
    /// How long a stream may wait for a peer that does not read.
    static let streamStallSeconds = 10
    private let counts = Mutex(ControlCounters())

    /// Longest request: a `ban` of 100,000 IPv6 addresses fits.
    public static let longestRequest = 8 << 20
    /// How long a peer may take to send its request.
    static let readDeadlineMilliseconds = 2_000
    /// Connections of one uid served at once (each on its own thread), and of all peers.
    public static let connectionsPerUser = 16
    public static let connectionsInAll = 64
    /// The connections being served (descriptor → peer uid), each by its own thread.
    private let active = Mutex<[Int32: uid_t]>([:])
    /// Held while a request that changes state is answered: those go one at a time.
    private let changing = Mutex(())

    /// Makes the socket (its directory too, mode 0755, if missing), replacing a stale one.
    /// - Throws: `ControlError` when the path is too long, its directory cannot be made, or a live
    ///   daemon answers there already.
    public init(
        path: String, allowedGroup: gid_t?, handler: @escaping @Sendable (ControlRequest) -> ControlReply
    )
        throws(ControlError)
    {
        self.path = path
        self.allowedGroup = allowedGroup
        self.handler = handler
        guard var address = UnixSocketAddress.of(path) else {
            throw ControlError(
                "control socket \(path): longer than \(UnixSocketAddress.longestPath) bytes; give a shorter --control")
        }
        // 0755: /run/portcullis also holds the socket transport's directory, which the services'
        // users must reach; the control socket itself is 0660 and checks every peer.
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        if !directory.isEmpty, case .failure(let error) = systemCallResult({ mkdir(directory, 0o755) }),
            error.code != EEXIST
        {
            throw ControlError("control socket \(path): cannot make \(directory) (\(error))")
        }
        // A socket left by a daemon that died: replaced; one a live daemon answers on: refused.
        if (try? ControlClient.send(ControlRequest(command: "status"), to: path, timeoutMilliseconds: 500)) != nil {
            throw ControlError("control socket \(path): another portcullisd answers there; stop it first")
        }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw ControlError("control socket \(path): something else than a socket is there; move it away")
            }
            unlink(path)
        }
        let fd = try systemCall(
            { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) },
            orThrow: { ControlError("control socket: \($0)") })
        do throws(Errno) {
            try systemCall(
                {
                    withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                        }
                    }
                }, orThrow: { $0 })
            try systemCall({ chmod(path, 0o660) }, orThrow: { $0 })
            try systemCall({ listen(fd, 64) }, orThrow: { $0 })
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw ControlError("control socket \(path): \(error); check that its directory is writable")
        }
        // Without the group the operators meant to let in, they would meet "permission denied".
        if let allowedGroup, case .failure(let error) = systemCallResult({ chown(path, 0, allowedGroup) }) {
            Glibc.close(fd)
            unlink(path)
            throw ControlError(
                "control socket \(path): cannot give it to group \(allowedGroup) (\(error)); run as root")
        }
        listener = fd
    }

    deinit { close() }

    /// Requests answered and refused so far.
    public var counters: ControlCounters { counts.withLock { $0 } }

    private let closed = Atomic<Bool>(false)

    /// Removes the socket (the listener is closed; a request being answered is finished).
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Glibc.close(listener)
        unlink(path)
    }

    /// Answers requests until `isStopping` says so (checked every 100 ms). Each connection is
    /// served on a thread of its own; on return, the connections still served are shut down and
    /// waited for (a stream or a reload gives up at once).
    public func run(isStopping: () -> Bool) {
        while !isStopping() && !closed.load(ordering: .acquiring) {
            var poll = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard case .success(let ready) = systemCallResult({ Glibc.poll(&poll, 1, 100) }), ready > 0 else {
                continue
            }
            let accepted = systemCallResult { cportcullis_accept4(listener, Int32(SOCK_CLOEXEC.rawValue)) }
            guard case .success(let connection) = accepted else {
                // Out of descriptors: wait for some to come back rather than spin.
                SystemClock.sleep(nanoseconds: 100_000_000)
                continue
            }
            serve(connection)
        }
        // Under the lock: a connection listed there is not closed yet (its descriptor is its own).
        active.withLock { for connection in $0.keys { shutdown(connection, Int32(SHUT_RDWR)) } }
        let deadline = SystemClock.monotonicNanoseconds() + 5_000_000_000
        while active.withLock({ !$0.isEmpty }) && SystemClock.monotonicNanoseconds() < deadline {
            SystemClock.sleep(nanoseconds: 10_000_000)
        }
    }

    /// Connections being served now (tests, and the status of a busy socket).
    public var activeConnections: Int { active.withLock { $0.count } }

    /// Hands `connection` to a thread of its own, or refuses it at once when its uid (or everyone)
    /// has too many connections served already.
    private func serve(_ connection: Int32) {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard cportcullis_peer_credentials(connection, &pid, &uid, &gid) == 0 else {
            count { $0.requests += 1 }
            Glibc.close(connection)
            return
        }
        let admitted = active.withLock { active in
            guard active.count < Self.connectionsInAll,
                active.values.lazy.filter({ $0 == uid }).count < Self.connectionsPerUser
            else { return false }
            active[connection] = uid
            return true
        }
        guard admitted else {
            count {
                $0.requests += 1; $0.failed += 1
            }
            // Never waits: a small reply fits in the socket's buffer, and a peer that cannot take it is gone.
            reply(
                .failure(
                    "busy: uid \(uid) has \(Self.connectionsPerUser) control connections open (or all peers \(Self.connectionsInAll)); close some and ask again"
                ), to: connection, flags: Int32(MSG_DONTWAIT))
            Glibc.close(connection)
            return
        }
        let finish = { @Sendable [self] in
            _ = active.withLock { $0.removeValue(forKey: connection) }
            Glibc.close(connection)
        }
        do throws(Errno) {
            try SystemThread.spawn { [self, uid, gid] in
                answer(connection, uid: uid, gid: gid)
                finish()
            }.detach()
        } catch {
            count {
                $0.requests += 1; $0.failed += 1
            }
            reply(
                .failure("busy: cannot start a thread for the request (\(error)); ask again"), to: connection,
                flags: Int32(MSG_DONTWAIT))
            finish()
        }
    }

    private func count(_ update: (inout ControlCounters) -> Void) {
        counts.withLock { update(&$0) }
    }

    private func answer(_ connection: Int32, uid: uid_t, gid: gid_t) {
        count { $0.requests += 1 }
        guard uid == 0 || (allowedGroup.map { Self.isMember(uid: uid, gid: gid, of: $0) } ?? false) else {
            count { $0.unauthorised += 1 }
            reply(.failure("not allowed: uid \(uid) is neither root nor in the control group"), to: connection)
            return
        }
        let request: ControlRequest
        switch readRequest(connection) {
        case .failure(let reason):
            count {
                if reason == .oversized { $0.oversized += 1 } else { $0.malformed += 1 }
            }
            let why =
                switch reason {
                case .oversized: "request longer than \(Self.longestRequest) bytes; send fewer addresses at once"
                case .tooDeep:
                    "not a request: nested deeper than \(Self.deepestNesting) levels; send one JSON object, e.g. {\"command\":\"status\"}, and a newline"
                case .malformed: "not a request: send one JSON object, e.g. {\"command\":\"status\"}, and a newline"
                }
            reply(.failure(why), to: connection)
            return
        case .success(let parsed):
            request = parsed
        }
        guard ControlRequest.commands.contains(request.command) else {
            count { $0.unknownCommand += 1 }
            reply(
                .failure(
                    "unknown command '\(request.command)'; the commands are "
                        + ControlRequest.commands.joined(separator: ", ")), to: connection)
            return
        }
        guard uid == 0 || !ControlRequest.rootOnlyCommands.contains(request.command) else {
            count { $0.unauthorised += 1 }
            reply(
                .failure(
                    "not allowed: only root may \(request.command) (uid \(uid) is in the control group, which may "
                        + "ban, unban, list and reload)"), to: connection)
            return
        }
        if let streamer {
            // A peer that stops reading holds its own thread this long at most per send.
            var timeout = timeval(tv_sec: Self.streamStallSeconds, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            if streamer(request, connection) { return }
        }
        let changes = ["ban", "unban", "reload"].contains(request.command)
        let answer = changes ? changing.withLock { _ in handler(request) } : handler(request)
        if !answer.ok { count { $0.failed += 1 } }
        reply(answer, to: connection)
    }

    enum ReadFailure: Error { case malformed, oversized, tooDeep }

    /// Deepest nesting of arrays and objects in a request (one has 2: an object holding an array of
    /// addresses). Checked before the request is decoded: 6 MB of nested brackets made the decoder
    /// allocate 183 MB.
    public static let deepestNesting = 8

    /// Whether the JSON text `line` nests arrays and objects deeper than `deepestNesting` (brackets
    /// inside strings do not count). One pass, no allocation.
    public static func nestsTooDeep(_ line: some Collection<UInt8>) -> Bool {
        var depth = 0
        var inString = false
        var escaped = false
        for byte in line {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > deepestNesting { return true }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        return false
    }

    /// Whether the user `uid` (primary group `gid`) is in `group`: as its primary group or one of
    /// its supplementary groups (`getgrouplist`).
    static func isMember(uid: uid_t, gid: gid_t, of group: gid_t) -> Bool {
        if gid == group { return true }
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var text = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(uid, &entry, &text, text.count, &found) == 0, found != nil, let name = entry.pw_name else {
            return false
        }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(name, gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))
            guard getgrouplist(name, gid, &groups, &count) >= 0 else { return false }
        }
        return groups.prefix(Int(count)).contains(group)
    }

    /// One line (or everything until the peer shuts its side), within the deadline.
    private func readRequest(_ connection: Int32) -> Result<ControlRequest, ReadFailure> {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = SystemClock.monotonicNanoseconds() + UInt64(Self.readDeadlineMilliseconds) * 1_000_000
        var complete = false
        while !complete {
            let now = SystemClock.monotonicNanoseconds()
            guard now < deadline else { return .failure(.malformed) }
            var poll = pollfd(fd: connection, events: Int16(POLLIN), revents: 0)
            let wait = Int32((deadline - now) / 1_000_000) + 1
            guard case .success(let ready) = systemCallResult({ Glibc.poll(&poll, 1, wait) }), ready > 0 else {
                continue
            }
            guard case .success(let count) = systemCallResult({ read(connection, &buffer, buffer.count) }), count > 0
            else { break }
            complete = buffer[0..<count].contains(10)  // only the new bytes: a long request is read once
            bytes += buffer[0..<count]
            if bytes.count > Self.longestRequest { return .failure(.oversized) }
        }
        let line = bytes.prefix { $0 != 10 }
        if Self.nestsTooDeep(line) { return .failure(.tooDeep) }
        guard let request = try? JSONDecoder().decode(ControlRequest.self, from: Data(line)) else {
            return .failure(.malformed)
        }
        return .success(request)
    }

    private func reply(_ reply: ControlReply, to connection: Int32, flags: Int32 = 0) {
        var text = JSONOutput.line(reply) + "\n"
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let sent = systemCallResult {
                    send(connection, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL) | flags)
                }
                guard case .success(let written) = sent, written > 0 else { return }  // the peer left
                offset += written
            }
        }
    }
}
