import Glibc

/// A process as other processes can recognise it: its pid and its start time (field 22 of
/// /proc/PID/stat, in clock ticks since boot), so a recycled pid is not mistaken for the original.
struct ProcessIdentity: Equatable {
    let pid: UInt32
    let startTime: UInt64

    static var current: ProcessIdentity {
        let pid = UInt32(getpid())
        return ProcessIdentity(pid: pid, startTime: startTime(of: pid) ?? 0)
    }

    /// Whether the process that had this identity still runs.
    var isAlive: Bool {
        if pid == 0 { return false }
        if kill(pid_t(pid), 0) != 0 && errno == ESRCH { return false }
        guard let now = Self.startTime(of: pid) else { return false }
        return now == startTime
    }

    /// Field 22 (starttime) of /proc/PID/stat; nil when the process is gone.
    static func startTime(of pid: UInt32) -> UInt64? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let length = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard length > 0 else { return nil }
        // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
        guard let close = buffer[0..<length].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 2)..<length].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (state); starttime is field 22.
        guard fields.count > 19 else { return nil }
        return UInt64(String(decoding: fields[19], as: UTF8.self))
    }
}
