// SPDX-License-Identifier: Apache-2.0
import Glibc
import Synchronization

/// SIGINT and SIGTERM (and any others asked for), received by waiting rather than by a handler:
/// blocked in the calling thread (and every thread it starts later, which inherits the mask),
/// then polled, so no system call is interrupted halfway. Create it before starting any thread.
public struct StopSignals {
    private var set = sigset_t()

    /// - Parameter others: more signals to block and report (the daemon: SIGHUP).
    public init(alsoWaitingFor others: [Int32] = []) {
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM] + others { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// A process that writes to pipes and sockets whose reader may go away (a daemon, a service)
    /// gets EPIPE from the write instead of dying of SIGPIPE.
    public static func ignoreBrokenPipes() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Waits up to `seconds` (0: not at all) for one of the signals. - Returns: it, or nil.
    public mutating func next(waitingSeconds seconds: Double) -> Int32? {
        let bounded = seconds.isFinite ? min(max(seconds, 0), 86_400 * 365) : 0
        var timeout = timespec(tv_sec: Int(bounded), tv_nsec: Int((bounded - bounded.rounded(.down)) * 1e9))
        let signal = sigtimedwait(&set, nil, &timeout)
        return signal > 0 ? signal : nil
    }

    /// Whether a stop signal arrived within `milliseconds` (0: without waiting).
    public mutating func arrived(waitingMilliseconds milliseconds: Int = 0) -> Bool {
        arrived(waitingSeconds: Double(milliseconds) / 1000)
    }

    /// Whether a stop signal (SIGINT, SIGTERM) arrived within `seconds`.
    public mutating func arrived(waitingSeconds seconds: Double) -> Bool {
        guard let signal = next(waitingSeconds: seconds) else { return false }
        return signal == SIGINT || signal == SIGTERM
    }

    /// Unblocks the signals again in the calling thread (a command that stops listening for them).
    public func release() {
        var set = self.set
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}

/// A flag set once, to stop threads (a `Sendable` class: threads hold it, not their owner).
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    public var isSet: Bool { flag.load(ordering: .acquiring) }

    /// Sets it. - Returns: whether it was already set.
    @discardableResult
    public func set() -> Bool { flag.exchange(true, ordering: .acquiringAndReleasing) }
}
