// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Settings of the `SOCK_SEQPACKET` transport.
public struct SocketOptions: Sendable, Equatable {
    /// Directory holding one socket per reader; writers watch it with inotify.
    public var directory = "/run/portcullis/sockets"
    /// Bytes per datagram, header included; lines are packed until the next would not fit.
    public var datagramSize = 8192
    /// Most lines in one datagram (1 = one line per datagram, the prototype's way).
    public var linesPerDatagram = 65_535
    /// Datagrams per `sendmmsg`/`recvmmsg` call (1 = one `sendmsg` per datagram).
    public var datagramsPerCall = 64
    /// `SO_SNDBUF` of writer sockets; nil keeps the kernel default.
    public var sendBuffer: Int?
    /// `SO_RCVBUF` of reader connections; nil keeps the kernel default.
    public var receiveBuffer: Int?
    /// Writers whose uid is here may connect (SO_PEERCRED); root and the reader's own uid always may.
    public var allowedUIDs: [uid_t] = []
    /// Writers whose gid is here may connect.
    public var allowedGIDs: [gid_t] = []
    /// Mode of reader sockets (connecting needs write permission): never world-writable.
    public var socketMode: mode_t = 0o660
    /// Mode of the directory when a reader or writer creates it.
    public var directoryMode: mode_t = 0o750
    /// Whose files (and, for sockets, reader processes) are used besides root's and our own.
    public var owners = TrustedOwners()
    /// How long a writer waits for a lossless reader that does not read before it goes on without
    /// it for a while (its missed lines counted lost).
    public var blockTimeoutMilliseconds = 1000

    public init() {}

    /// Longest line a datagram carries.
    public var maxLineLength: Int { min(datagramSize - Datagram.headerSize - Datagram.lengthSize, Int(UInt16.max)) }

    func validate() throws(TransportError) {
        guard (1...3_600_000).contains(blockTimeoutMilliseconds) else {
            throw .invalidConfiguration("--block-timeout must be 1...3600000 milliseconds")
        }
        guard datagramSize >= 64, datagramSize <= 1 << 20 else {
            throw .invalidConfiguration("--socket-datagram-size must be 64...1048576 bytes, got \(datagramSize)")
        }
        guard linesPerDatagram >= 1 else {
            throw .invalidConfiguration("--socket-lines-per-datagram must be at least 1")
        }
        guard (1...1024).contains(datagramsPerCall) else {
            throw .invalidConfiguration("--socket-batch must be 1...1024 datagrams per call")
        }
        if let sendBuffer, sendBuffer <= 0 { throw .invalidConfiguration("--socket-sndbuf must be positive") }
        // A SEQPACKET datagram must fit the send buffer whole (the kernel doubles the value set).
        if let sendBuffer, datagramSize > 2 * sendBuffer {
            throw .invalidConfiguration(
                "--socket-datagram-size \(datagramSize) does not fit --socket-sndbuf \(sendBuffer)")
        }
        if let receiveBuffer, receiveBuffer <= 0 { throw .invalidConfiguration("--socket-rcvbuf must be positive") }
        if socketMode & 0o002 != 0 || directoryMode & 0o002 != 0 {
            throw .invalidConfiguration("world-writable socket or directory modes are refused")
        }
    }
}

/// Datagram layout (little-endian):
///
///      0 u32 magic       Datagram.magic
///      4 u32 lineCount
///      8 u64 lostTotal   lines this writer could not deliver to this reader so far (drop policy)
///     16 lines: u16 length, then the bytes, repeated lineCount times
enum Datagram {
    static let magic: UInt32 = 0x444C_5550  // "PULD"
    static let headerSize = 16
    static let lengthSize = 2
}

/// Reader socket file names: `reader-PID-N.POLICY.sock`, so writers learn the policy from the name.
enum SocketName {
    static let suffix = ".sock"

    static func policy(of name: String) -> SlowReaderPolicy? {
        guard name.hasPrefix("reader-"), name.hasSuffix(suffix) else { return nil }
        let stem = name.dropLast(suffix.count)
        guard let dot = stem.lastIndex(of: ".") else { return nil }
        return SlowReaderPolicy(rawValue: String(stem[stem.index(after: dot)...]))
    }
}

/// Creates `path` (and parents) with `mode` if missing; refuses a directory an untrusted user
/// made or could replace (`TrustedOwners.checkPath`), or one anybody may write.
func prepareDirectory(_ path: String, mode: mode_t, owners: TrustedOwners) throws(TransportError) {
    var prefix = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        prefix += "/" + component
        let last = prefix == path || prefix == "./" + path
        switch systemCallResult({ mkdir(prefix, last ? mode : 0o755) }) {
        case .success:
            // mkdir's mode is filtered by the umask.
            if last { try transportCall("set the mode of \(prefix)") { chmod(prefix, mode) } }
        case .failure(let error) where error.code == EEXIST: break
        case .failure(let error): throw .system(operation: "create directory \(prefix)", errno: error.code)
        }
    }
    var info = stat()
    try transportCall("lstat \(path)") { lstat(path, &info) }
    if (info.st_mode & S_IFMT) == S_IFLNK {
        throw .untrusted("socket directory \(path) is a symbolic link; give the real path")
    }
    guard (info.st_mode & S_IFMT) == S_IFDIR else { throw .invalidConfiguration("\(path) is not a directory") }
    // Even with the sticky bit, a writable directory lets anyone put a reader socket there and
    // read the stream: `checkPath` refuses it for the directory itself.
    try owners.checkPath(path, "socket directory")
}

/// Removes the sockets of readers that died without removing them (a crash, SIGKILL): nobody
/// listens on them any more (`connect` gives ECONNREFUSED), and every writer would try each.
func removeStaleReaderSockets(in directory: String) {
    guard let stream = opendir(directory) else { return }
    defer { closedir(stream) }
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) {
            String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
        }
        guard SocketName.policy(of: name) != nil, var address = try? unixAddress(directory + "/" + name) else {
            continue
        }
        // Non-blocking: a live reader with a full backlog answers EAGAIN at once (alive), not later.
        let probe = socket(
            AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard probe >= 0 else { return }
        let result = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                systemCallResult { connect(probe, socketAddress, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        Glibc.close(probe)
        if case .failure(let error) = result, error.code == ECONNREFUSED { unlink(directory + "/" + name) }
    }
}

/// Fills a `sockaddr_un` for `path`. - Throws: when the path does not fit.
func unixAddress(_ path: String) throws(TransportError) -> sockaddr_un {
    guard let address = UnixSocketAddress.of(path) else {
        throw .invalidConfiguration("socket path \(path) is longer than \(UnixSocketAddress.longestPath) bytes")
    }
    return address
}

@inline(__always)
func setSocketOption(_ fd: Int32, _ option: Int32, _ value: Int, what: String) throws(TransportError) {
    var value = Int32(clamping: value)
    try transportCall("set \(what)") { setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<Int32>.size)) }
}
