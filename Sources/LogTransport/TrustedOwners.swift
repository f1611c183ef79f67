// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// Whose segment, socket directory or log file a transport uses (and whose reader sockets a
/// writer sends to): root's, this process's user's, and those named with `--trust-uid` (the
/// services' users) — never one anybody else could have made or could write. Who can write into a
/// transport can get any address banned and can read or starve the stream; docs/threat-model.md, "Who may
/// feed the daemon" is the threat model.
public struct TrustedOwners: Sendable, Equatable {
    /// Users besides root and this process's whose files are used.
    public var uids: [uid_t] = []
    /// Groups that may have write permission on them (by default, only the owner may write).
    public var gids: [gid_t] = []

    public init(uids: [uid_t] = [], gids: [gid_t] = []) {
        self.uids = uids
        self.gids = gids
    }

    /// Whether `uid` is one of the trusted users.
    public func trusts(uid: uid_t) -> Bool {
        uid == 0 || uid == geteuid() || uids.contains(uid)
    }

    /// Checks the owner and mode of `info` (from `fstat`/`lstat` of `path`).
    /// - Parameter what: what the file is, for the message ("shared-memory segment").
    func check(_ info: stat, _ what: String, path: String) throws(TransportError) {
        if !trusts(uid: info.st_uid) {
            throw .untrusted(
                "\(what) \(path) belongs to uid \(info.st_uid), not root or this user: if that user's service writes "
                    + "offence lines, pass --trust-uid \(info.st_uid); otherwise remove it (someone else made it)")
        }
        if info.st_mode & 0o002 != 0 {
            throw .untrusted("\(what) \(path) is writable by everyone; chmod o-w \(path)")
        }
        if info.st_mode & 0o020 != 0 && !gids.contains(info.st_gid) {
            throw .untrusted(
                "\(what) \(path) is writable by group \(info.st_gid): pass --trust-gid \(info.st_gid) if that "
                    + "group is the services', or chmod g-w \(path)")
        }
    }

    /// Checks `path` and each directory above it: none may be replaceable by an untrusted user (an
    /// untrusted owner, or write permission for others without the sticky bit).
    func checkPath(_ path: String, _ what: String) throws(TransportError) {
        var info = stat()
        try transportCall("lstat \(path)") { lstat(path, &info) }
        if (info.st_mode & S_IFMT) == S_IFLNK {
            throw .untrusted("\(what) \(path) is a symbolic link; give the real path")
        }
        try check(info, what, path: path)
        try checkParents(of: path, what)
    }

    /// Checks each directory above `path` (see `checkPath`). A relative path is checked from the
    /// working directory up.
    func checkParents(of path: String, _ what: String) throws(TransportError) {
        var parent = path.hasPrefix("/") ? path : (currentDirectory() ?? ".") + "/" + path
        while let slash = parent.lastIndex(of: "/"), slash != parent.startIndex {
            parent = String(parent[..<slash])
            try checkParent(parent, of: path, what)
        }
        try checkParent("/", of: path, what)
    }

    private func currentDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard getcwd(&buffer, buffer.count) != nil else { return nil }
        return String(cString: buffer)
    }

    private func checkParent(_ directory: String, of path: String, _ what: String) throws(TransportError) {
        var info = stat()
        try transportCall("lstat \(directory)") { lstat(directory, &info) }
        let sticky = info.st_mode & mode_t(S_ISVTX) != 0
        let groupMayReplace = info.st_mode & 0o020 != 0 && !sticky && !gids.contains(info.st_gid)
        if (info.st_mode & S_IFMT) == S_IFLNK || !trusts(uid: info.st_uid) || (info.st_mode & 0o002 != 0 && !sticky)
            || groupMayReplace
        {
            throw .untrusted(
                "\(what) \(path) lies in \(directory), which someone other than root or this user could replace "
                    + "(owner uid \(info.st_uid), mode \(String(info.st_mode & 0o7777, radix: 8))); use a directory "
                    + "only root (or a --trust-uid user) can write")
        }
    }
}
