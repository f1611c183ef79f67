// SPDX-License-Identifier: Apache-2.0
import Glibc

/// A process as people can recognise it: its pid and its start time (field 22 of /proc/PID/stat,
/// in clock ticks since boot), recorded beside the slots it holds in a segment. Not a liveness
/// test: a pid means nothing in another pid namespace or behind a hidden /proc (the segment's
/// slots use open-file-description locks for that, `ShmSegment.claim`).
public struct ProcessIdentity: Equatable, Sendable {
    public let pid: UInt32
    public let startTime: UInt64

    public init(pid: UInt32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }

    public static var current: ProcessIdentity {
        let pid = UInt32(getpid())
        return ProcessIdentity(pid: pid, startTime: startTime(of: pid) ?? 0)
    }

    public enum Status {
        case gone
        case zombie
        case unreadable
        case running(startTime: UInt64)
    }

    public static func status(of pid: UInt32) -> Status {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        if fd < 0 { return errno == ENOENT || errno == ESRCH ? .gone : .unreadable }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let length = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if length < 0 { return errno == ESRCH ? .gone : .unreadable }
        guard length > 0, let close = buffer[0..<length].lastIndex(of: UInt8(ascii: ")")) else { return .unreadable }
        let fields = buffer[(close + 2)..<length].split(separator: UInt8(ascii: " "))
        // fields[0] is field 3 (state: Z zombie, X dead); starttime is field 22.
        guard fields.count > 19, let state = fields[0].first else { return .unreadable }
        if state == UInt8(ascii: "Z") || state == UInt8(ascii: "X") { return .zombie }
        guard let start = UInt64(String(decoding: fields[19], as: UTF8.self)) else { return .unreadable }
        return .running(startTime: start)
    }

    /// Field 22 (starttime) of /proc/PID/stat; nil when the process is gone or unreadable.
    public static func startTime(of pid: UInt32) -> UInt64? {
        if case .running(let start) = status(of: pid) { return start }
        return nil
    }
}
