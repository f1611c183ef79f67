// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisCore

/// The clocks Portcullis reads, in nanoseconds.
public enum SystemClock {
    /// `CLOCK_MONOTONIC`: intervals, timeouts, rates.
    @inline(__always)
    public static func monotonicNanoseconds() -> UInt64 { read(CLOCK_MONOTONIC) }

    /// `CLOCK_BOOTTIME`, the clock the XDP program reads ban ends against (`bpf_ktime_get_boot_ns`):
    /// it keeps counting through suspend, so a ban's end does not move when the host sleeps.
    @inline(__always)
    public static func bootNanoseconds() -> UInt64 { read(CLOCK_BOOTTIME) }

    /// CPU time (user + system) of the calling thread.
    public static func threadCPUNanoseconds() -> UInt64 { read(CLOCK_THREAD_CPUTIME_ID) }

    /// CPU time (user + system) of the whole process.
    public static func processCPUNanoseconds() -> UInt64 { read(CLOCK_PROCESS_CPUTIME_ID) }

    /// The calling thread's context switches, voluntary (it slept) and not (`RUSAGE_THREAD`).
    public static func threadContextSwitches() -> UInt64 {
        var usage = rusage()
        // RUSAGE_THREAD (1): Glibc's module leaves the GNU-only constant out.
        guard getrusage(__rusage_who_t(1), &usage) == 0 else { return 0 }
        return UInt64(usage.ru_nvcsw + usage.ru_nivcsw)
    }

    /// Seconds since the monotonic clock's origin, as a `Double` (rates in tools and benchmarks).
    public static func monotonicSeconds() -> Double { Double(monotonicNanoseconds()) / 1e9 }

    /// The wall-clock time now, in UTC.
    public static func utcNow() -> UTCTime {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UTCTime(secondsSinceEpoch: now.tv_sec, millisecond: now.tv_nsec / 1_000_000)
    }

    /// Wall-clock seconds since the epoch (`CLOCK_REALTIME`): for records that outlive a boot.
    public static func wallSeconds() -> UInt64 { read(CLOCK_REALTIME) / 1_000_000_000 }

    /// Wall-clock milliseconds since the epoch: times that travel between hosts (their boot
    /// clocks differ).
    public static func wallMilliseconds() -> UInt64 { read(CLOCK_REALTIME) / 1_000_000 }

    /// Sleeps for `nanoseconds` (resuming after a signal until the time is up).
    public static func sleep(nanoseconds: UInt64) {
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    @inline(__always)
    private static func read(_ clock: clockid_t) -> UInt64 {
        var now = timespec()
        clock_gettime(clock, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}
