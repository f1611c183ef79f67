// SPDX-License-Identifier: Apache-2.0
import Glibc

/// The process's file descriptors: how many are open, the limit, and raising it.
public enum Descriptors {
    /// The descriptors open now (the entries of `/proc/self/fd`, less the one reading it); nil
    /// when the directory cannot be read (which, out of descriptors, it cannot).
    public static func openCount() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        var count = 0
        while let entry = readdir(directory) {
            if entry.pointee.d_name.0 != UInt8(ascii: ".") { count += 1 }
        }
        closedir(directory)
        return count - 1
    }

    /// The soft limit (`RLIMIT_NOFILE`), and the hard one it may be raised to.
    public static var limits: (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises the soft limit to the hard one (no privilege needed; systemd's default soft limit
    /// of 1024 is meant for programs that still use `select`). - Returns: the soft limit now.
    @discardableResult
    public static func raiseSoftLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
    }
}

/// Watches the process's own descriptor count against its limit: a leak (one descriptor per check,
/// per connection, per rotation) shows long before the limit stops the daemon. It keeps
/// `/proc/self/fd` open, so it can still count when no descriptor is left.
public final class DescriptorWatch {
    /// Said when the count reaches this share of the soft limit...
    public static let warnShare = 0.8
    /// ...and said again as recovered once it falls below this one.
    public static let clearShare = 0.7

    private var warned = false
    private let limit: () -> UInt64
    private let count: () -> Int?
    private let directory: OpaquePointer?

    /// Counts this process's descriptors against its soft limit.
    public convenience init() {
        let directory = opendir("/proc/self/fd")
        self.init(directory: directory, limit: { Descriptors.limits.soft }) {
            guard let directory else { return nil }
            rewinddir(directory)
            var count = 0
            while let entry = readdir(directory) {
                if entry.pointee.d_name.0 != UInt8(ascii: ".") { count += 1 }
            }
            return count - 1  // its own
        }
    }

    /// Tests: another count and limit.
    public convenience init(limit: @escaping () -> UInt64, count: @escaping () -> Int?) {
        self.init(directory: nil, limit: limit, count: count)
    }

    private init(directory: OpaquePointer?, limit: @escaping () -> UInt64, count: @escaping () -> Int?) {
        self.directory = directory
        self.limit = limit
        self.count = count
    }

    deinit { if let directory { closedir(directory) } }

    /// - Returns: a line to say when the count crossed a threshold since the last check, else nil.
    public func check() -> String? {
        let limit = limit()
        guard limit > 0, limit < UInt64(Int.max), let open = count() else { return nil }
        let share = Double(open) / Double(limit)
        if !warned, share >= Self.warnShare {
            warned = true
            return "\(open) of \(limit) file descriptors are open: a leak, or too low a limit (LimitNOFILE=); "
                + "at the limit, logs, the control socket and the metrics stop (portcullis_process_open_fds)"
        }
        if warned, share < Self.clearShare {
            warned = false
            return "\(open) of \(limit) file descriptors are open again"
        }
        return nil
    }
}
