// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Whole small files: configurations, list files, /proc entries read; state files written atomically.
public enum TextFile {
    /// The whole text of the file at `path`, at most `limit` bytes (longer: `EFBIG`).
    public static func read(_ path: String, limit: Int = 16 << 20) throws(Errno) -> String {
        let fd = try systemCall({ open(path, O_RDONLY | O_CLOEXEC) }, orThrow: { $0 })
        defer { close(fd) }
        return try read(descriptor: fd, limit: limit)
    }

    /// The whole text from an open descriptor (the caller closes it), at most `limit` bytes.
    public static func read(descriptor fd: Int32, limit: Int = 16 << 20) throws(Errno) -> String {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = try systemCall({ Glibc.read(fd, &buffer, buffer.count) }, orThrow: { $0 })
            if count == 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > limit { throw Errno(EFBIG) }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `text` to `path`, atomically: to a temporary file beside it, then renamed over it, so
    /// a reader never sees half a file.
    public static func write(_ text: String, to path: String) throws(Errno) {
        let temporary = path + ".tmp.\(getpid())"
        // O_EXCL | O_NOFOLLOW: nothing planted at the temporary name is followed or reused.
        unlink(temporary)
        let fd = try systemCall(
            { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644) }, orThrow: { $0 })
        var text = text
        var writeError: Int32 = 0
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count && writeError == 0 {
                switch systemCallResult({ Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }) {
                case .success(let written) where written > 0: offset += written
                case .success: writeError = ENOSPC
                case .failure(let error): writeError = error.code
                }
            }
        }
        // On disk before the rename: a crash never leaves the name pointing at a file cut short.
        if writeError == 0 && fsync(fd) != 0 { writeError = errno }
        close(fd)
        if writeError != 0 || rename(temporary, path) != 0 {
            let code = writeError != 0 ? writeError : errno
            unlink(temporary)
            throw Errno(code)
        }
    }
}
