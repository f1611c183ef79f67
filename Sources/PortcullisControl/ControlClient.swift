// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Glibc
import PortcullisSystem

/// Why a request got no reply.
public enum ControlClientError: Error, CustomStringConvertible, Equatable {
    /// Nothing listens at the path (no socket, or a stale one): no daemon runs there.
    case noDaemon(path: String)
    /// The socket is there but may not be used (its mode, or the daemon's peer check).
    case permissionDenied(path: String)
    /// The daemon did not answer in time, or answered something that is not a reply.
    case noReply(path: String, detail: String)
    /// The daemon sent no reply line within the timeout (a busy or stuck daemon): nothing of its
    /// answer has come, so a caller may fall back to the maps as when no daemon answers.
    case timedOut(path: String, milliseconds: Int)

    public var description: String {
        switch self {
        case .noDaemon(let path): "no portcullisd answers at \(path)"
        case .permissionDenied(let path):
            "\(path): permission denied; run as root or as a member of the daemon's control group"
        case .noReply(let path, let detail): "portcullisd at \(path) did not answer: \(detail)"
        case .timedOut(let path, let milliseconds):
            "portcullisd at \(path) did not answer: no reply within \(milliseconds) ms"
        }
    }
}

/// The asking side of the control socket (`portcullis status`, `ban`...).
public enum ControlClient {
    /// Where portcullisd listens by default.
    public static let defaultPath = "/run/portcullis/control.sock"

    /// Sends one request and waits for its reply.
    /// - Parameters:
    ///   - timeoutMilliseconds: how long the whole exchange may take (a `reload` waits for the new
    ///     jails to start); with a stream, how long it may stall.
    ///   - output: where a streamed answer goes (a reply with `stream`): everything after the
    ///     reply line, copied as it comes until the daemon closes.
    public static func send(
        _ request: ControlRequest, to path: String, timeoutMilliseconds: Int = 10_000, output: Int32? = nil
    )
        throws(ControlClientError) -> ControlReply
    {
        guard var address = UnixSocketAddress.of(path) else { throw .noDaemon(path: path) }
        let fd = try systemCall(
            { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) },
            orThrow: { ControlClientError.noReply(path: path, detail: "\($0)") })
        defer { close(fd) }
        let connected = systemCallResult {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        if case .failure(let error) = connected {
            switch error.code {
            case ENOENT, ECONNREFUSED, ENOTDIR: throw .noDaemon(path: path)
            case EACCES, EPERM: throw .permissionDenied(path: path)
            default: throw .noReply(path: path, detail: "\(error)")
            }
        }
        var text = JSONOutput.line(request) + "\n"
        let sent: Bool = text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let result = systemCallResult {
                    Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                }
                guard case .success(let written) = result, written > 0 else { return false }
                offset += written
            }
            return true
        }
        // A daemon that refuses a peer answers before reading all of it: its reply is still read.
        if !sent { shutdown(fd, Int32(SHUT_WR)) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = SystemClock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        var complete = false
        while !complete {
            let now = SystemClock.monotonicNanoseconds()
            guard now < deadline else {
                throw .timedOut(path: path, milliseconds: timeoutMilliseconds)
            }
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let wait = Int32((deadline - now) / 1_000_000) + 1
            guard case .success(let ready) = systemCallResult({ Glibc.poll(&poll, 1, wait) }), ready > 0 else {
                continue
            }
            guard case .success(let count) = systemCallResult({ read(fd, &buffer, buffer.count) }), count > 0 else {
                break
            }
            complete = buffer[0..<count].contains(10)  // only the new bytes: a long reply is read once
            bytes += buffer[0..<count]
        }
        guard let reply = try? JSONDecoder().decode(ControlReply.self, from: Data(bytes.prefix { $0 != 10 })) else {
            throw .noReply(path: path, detail: sent ? "its reply is not one" : "the connection closed while sending")
        }
        if reply.stream == true, let output {
            let rest = bytes.firstIndex(of: 10).map { bytes.index(after: $0) } ?? bytes.endIndex
            try copyStream(from: fd, after: bytes[rest...], to: output, path: path, stall: timeoutMilliseconds)
        }
        return reply
    }

    /// Copies a streamed answer to `output` until the daemon closes the connection.
    private static func copyStream(
        from fd: Int32, after start: ArraySlice<UInt8>, to output: Int32, path: String, stall: Int
    ) throws(ControlClientError) {
        func write(_ pointer: UnsafeRawPointer, _ count: Int) throws(ControlClientError) {
            var done = 0
            while done < count {
                switch systemCallResult({ Glibc.write(output, pointer + done, count - done) }) {
                case .success(let written) where written > 0: done += written
                case .success: throw .noReply(path: path, detail: "cannot write its answer out (nothing written)")
                case .failure(let error): throw .noReply(path: path, detail: "cannot write its answer out (\(error))")
                }
            }
        }
        let first = Array(start)
        if !first.isEmpty {
            let pointer = UnsafeMutableRawPointer.allocate(byteCount: first.count, alignment: 1)
            defer { pointer.deallocate() }
            pointer.copyMemory(from: first, byteCount: first.count)
            try write(pointer, first.count)
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 18, alignment: 8)
        defer { buffer.deallocate() }
        // A streamed answer ends with a newline; a daemon that failed midway closes without one.
        var last = start.last
        while true {
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard case .success(let ready) = systemCallResult({ Glibc.poll(&poll, 1, Int32(stall)) }), ready > 0 else {
                throw .noReply(path: path, detail: "its answer stalled for \(stall) ms")
            }
            let count: Int
            switch systemCallResult({ read(fd, buffer, 1 << 18) }) {
            case .success(let read): count = read
            case .failure(let error): throw .noReply(path: path, detail: "its answer broke off (\(error))")
            }
            if count == 0 {
                guard last == 10 else {
                    throw .noReply(path: path, detail: "its answer broke off before its end (see its log)")
                }
                return
            }
            last = buffer.load(fromByteOffset: count - 1, as: UInt8.self)
            try write(buffer, count)
        }
    }
}
