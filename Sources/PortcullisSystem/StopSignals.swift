import Glibc

/// SIGINT and SIGTERM, received by waiting rather than by a handler: blocked in the calling thread
/// (and every thread it starts later, which inherits the mask), then polled, so no system call is
/// interrupted halfway. Create it before starting any thread. SIGPIPE is ignored too: a reader gone
/// from a socket or pipe is an error return, not the end of the process.
public struct StopSignals {
    private var set = sigset_t()

    public init() {
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Whether a stop signal arrived within `milliseconds` (0: without waiting).
    public mutating func arrived(waitingMilliseconds milliseconds: Int = 0) -> Bool {
        var timeout = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        let signal = sigtimedwait(&set, nil, &timeout)
        return signal == SIGINT || signal == SIGTERM
    }

    /// Waits up to `seconds` for a stop signal. - Returns: whether one arrived.
    public mutating func arrived(waitingSeconds seconds: Double) -> Bool {
        var timeout = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - seconds.rounded(.down)) * 1e9))
        let signal = sigtimedwait(&set, nil, &timeout)
        return signal == SIGINT || signal == SIGTERM
    }

    /// Unblocks the signals again in the calling thread (a command that stops listening for them).
    public func release() {
        var set = self.set
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
