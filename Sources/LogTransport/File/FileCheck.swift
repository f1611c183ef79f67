// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

extension FileReader {
    /// What a reader checks when it opens `options.path`, without reading it (`--check-config`):
    /// the options, the parent directories' owners and modes, and, if the file is there, that it
    /// is a regular file of a trusted owner reached without a symbolic link. A missing file passes
    /// (a reader waits for it to appear).
    /// - Throws: the error a reader would refuse the file with.
    public static func checkOpen(_ options: FileOptions) throws(TransportError) {
        try options.validate()
        try options.owners.checkParents(of: options.path, "log file")
        guard let fd = try openForReading(options.path) else { return }
        defer { Glibc.close(fd) }
        try checkLogFile(fd: fd, options: options)
    }

    /// Opens the file at `path` for reading as a reader does: not through a symbolic link (a link to
    /// /dev/zero or a FIFO there would blind or hang it), never waiting (`O_NONBLOCK`).
    /// - Returns: the descriptor, or nil when there is no file.
    static func openForReading(_ path: String) throws(TransportError) -> Int32? {
        switch systemCallResult({ open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) }) {
        case .success(let fd): return fd
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error):
            let hint = error.code == ELOOP ? " (it is a symbolic link; give the real path)" : ""
            throw .system(operation: "open \(path)\(hint)", errno: error.code)
        }
    }
}
