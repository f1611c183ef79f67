import BanEngine
import Glibc

/// The ban log (`portcullisd --ban-log`): one line per ban and per lift, like fail2ban's
/// "Ban"/"Unban" lines, for audits and for the testbed's checks:
///
///     2026-11-26T21:05:00.123Z ban 198.18.0.1
///     2026-11-26T21:05:30.201Z unban 198.18.0.1
///
/// Each batch is one `write` to a file opened with `O_APPEND`, so the lines of concurrent
/// workers never interleave inside a line.
public final class BanLog: @unchecked Sendable {
    public let path: String
    private let fd: Int32

    public init(path: String) throws(DaemonError) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            throw .invalidSetting("cannot open the ban log \(path): \(String(cString: strerror(errno))); "
                + "check that its directory exists and is writable")
        }
        self.path = path
    }

    deinit { close(fd) }

    /// Appends one line per key: `TIME EVENT ADDRESS`.
    public func record(_ event: String, _ keys: [AddressKey]) {
        guard !keys.isEmpty else { return }
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME, &clock)
        var seconds = clock.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var stamp = [CChar](repeating: 0, count: 32)
        strftime(&stamp, stamp.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let milliseconds = clock.tv_nsec / 1_000_000
        let prefix = String(decoding: stamp.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            + "." + String(repeating: "0", count: milliseconds < 10 ? 2 : milliseconds < 100 ? 1 : 0)
            + "\(milliseconds)Z \(event) "
        var text = ""
        text.reserveCapacity(keys.count * (prefix.utf8.count + 24))
        for key in keys { text += prefix + key.ipAddress.description + "\n" }
        var remaining = Array(text.utf8)[...]
        while !remaining.isEmpty {
            let written = remaining.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { return }  // a full disk must not stop the bans; the counters still count them
            remaining = remaining.dropFirst(written)
        }
    }
}
