// SPDX-License-Identifier: Apache-2.0
import Glibc

/// The files a daemon keeps in its state directory (a log file's place, a journal cursor, the ban
/// history): read without following a symbolic link and without waiting for a FIFO's writer, and
/// only when they are regular files. Anything else there is moved aside, never waited on.
public enum StateFile {
    /// What is wrong with a state file, as part of one line.
    public struct Problem: Error, CustomStringConvertible, Sendable {
        public let description: String
        public init(_ description: String) { self.description = description }
    }

    /// The bytes of the state file at `path`, at most `limit`; nil when there is none.
    /// - Throws: what is wrong with it: not a regular file (a link, FIFO, device, directory), too
    ///   long, unreadable.
    public static func read(_ path: String, limit: Int = 1 << 20) throws(Problem) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ENOENT: return nil
            case ELOOP: throw Problem("is a symbolic link, not a file this daemon wrote")
            default: throw Problem("cannot be opened (\(Errno(code)))")
            }
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Problem("cannot be examined (\(Errno(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw Problem("is not a regular file (\(kind(info.st_mode))), not a file this daemon wrote")
        }
        guard info.st_size <= limit else { throw Problem("is larger (\(info.st_size) bytes) than this daemon writes") }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw Problem("cannot be read (\(Errno(errno)))") }
            if count == 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > limit { throw Problem("is larger than this daemon writes") }
        }
        return bytes
    }

    /// Moves the bad state file at `path` to `PATH.bad` (replacing an older one). - Returns: where
    /// it went, or nil when it could not be moved (then it is left and ignored).
    @discardableResult
    public static func setAside(_ path: String) -> String? {
        let aside = path + ".bad"
        if rename(path, aside) == 0 { return aside }
        // A directory cannot replace a file (or a non-empty directory): clear the old one first.
        var info = stat()
        if lstat(aside, &info) == 0 && (info.st_mode & S_IFMT) != S_IFDIR { unlink(aside) }
        return rename(path, aside) == 0 ? aside : nil
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFDIR: "a directory"
        case S_IFCHR, S_IFBLK: "a device"
        case S_IFSOCK: "a socket"
        default: "mode \(String(mode, radix: 8))"
        }
    }
}
