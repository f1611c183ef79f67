import Glibc

extension FileReader {
    /// What a reader checks when it opens `options.path`, without reading it (`--check-config`):
    /// the options, the parent directories' owners and modes, and, if the file is there, that it
    /// is a regular file of a trusted owner reached without a symbolic link. A missing file passes
    /// (a reader waits for it to appear).
    /// - Throws: the error a reader would refuse the file with.
    public static func checkOpen(_ options: FileOptions) throws(TransportError) {
        try options.validate()
        try options.owners.checkParents(of: options.path, "log file")
        let fd = open(options.path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { return }
            let hint = code == ELOOP ? " (it is a symbolic link; give the real path)" : ""
            throw .system(operation: "open \(options.path)\(hint)", errno: code)
        }
        defer { Glibc.close(fd) }
        try checkLogFile(fd: fd, options: options)
    }
}
