import Glibc

/// Whole small files: configurations, list files, /proc entries.
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
}
