// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// A mutex with a condition variable on `CLOCK_MONOTONIC` (a wait is not stretched by a clock
/// set back): what the supervisor's thread sleeps on until an event or its next tick.
final class Condition: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Inside `withLock`: sleeps until `broadcast` or the monotonic `deadline` (nanoseconds).
    /// - Returns: false when the deadline passed.
    func wait(until deadline: UInt64) -> Bool {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        return pthread_cond_timedwait(condition, mutex, &time) != ETIMEDOUT
    }

    /// Inside `withLock`: wakes every waiter.
    func broadcast() {
        pthread_cond_broadcast(condition)
    }
}

/// What the supervisor's thread is asked to do.
public enum ServiceEvent: Sendable {
    /// SIGHUP, or a request: read the configuration again. `request` is answered with the outcome
    /// (nil for a signal, which nobody waits on).
    case reload(ReloadRequest?)
    /// SIGINT or SIGTERM: stop.
    case stop
}

/// The outcome of one reload, as `portcullis reload` answers it.
public struct ReloadOutcome: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case applied
        /// Applied, with a part that does not run.
        case degraded
        /// Nothing changed: the running configuration stays.
        case refused
    }

    public let kind: Kind
    /// The line the log has: "reloaded: ...", "configuration refused, the running one stays: ...".
    public let text: String

    public init(_ kind: Kind, _ text: String) {
        self.kind = kind
        self.text = text
    }
}

/// A reload asked for by a thread that waits for its outcome (the control socket's).
public final class ReloadRequest: @unchecked Sendable {
    private let condition = Condition()
    // Both under `condition`'s lock.
    private var outcome: ReloadOutcome?
    private var answered = false

    init() {}

    /// The supervisor's answer: nil when it stopped first.
    func answer(_ outcome: ReloadOutcome?) {
        condition.withLock {
            self.outcome = outcome
            answered = true
            condition.broadcast()
        }
    }

    /// Waits for the answer up to `seconds`. - Returns: nil when none came in time or the
    /// service stopped first.
    func wait(seconds: Double) -> (answered: Bool, outcome: ReloadOutcome?) {
        let deadline = SystemClock.monotonicNanoseconds() + UInt64(seconds * 1e9)
        return condition.withLock {
            while !answered, condition.wait(until: deadline) {}
            return (answered, outcome)
        }
    }
}

/// The supervisor's queue of events: posted by the signal thread and the control socket's thread,
/// taken by the supervisor's thread, which sleeps on it until one comes or its next tick is due.
public final class ServiceEvents: @unchecked Sendable {
    private let condition = Condition()
    private var queue: [ServiceEvent] = []
    private var closed = false

    public init() {}

    /// Queues `event`; once the supervisor has stopped, a reload request is answered nil at once.
    public func post(_ event: ServiceEvent) {
        let refused: ReloadRequest? = condition.withLock {
            guard !closed else {
                if case .reload(let request) = event { return request }
                return nil
            }
            queue.append(event)
            condition.broadcast()
            return nil
        }
        refused?.answer(nil)
    }

    /// Asks for a reload and waits for its outcome.
    /// - Returns: `.answered(nil)` when the service stopped first; `answered` false when no answer
    ///   came within `seconds`.
    public func reload(waitingSeconds seconds: Double) -> (answered: Bool, outcome: ReloadOutcome?) {
        let request = ReloadRequest()
        post(.reload(request))
        return request.wait(seconds: seconds)
    }

    /// The next event, waiting up to `seconds` for one.
    public func next(waitingSeconds seconds: Double) -> ServiceEvent? {
        let bounded = seconds.isFinite ? min(max(seconds, 0), 86_400) : 0
        let deadline = SystemClock.monotonicNanoseconds() + UInt64(bounded * 1e9)
        return condition.withLock {
            while queue.isEmpty, condition.wait(until: deadline) {}
            return queue.isEmpty ? nil : queue.removeFirst()
        }
    }

    /// No more events: the reloads still queued, and every one posted from now on, are answered nil.
    func close() {
        let pending: [ReloadRequest] = condition.withLock {
            closed = true
            defer { queue = [] }
            return queue.compactMap {
                if case .reload(let request) = $0 { return request }
                return nil
            }
        }
        for request in pending { request.answer(nil) }
    }
}

/// The thread that takes the process's signals (blocked in every thread by `StopSignals`) and posts
/// them: SIGHUP as the logs reopened and a reload, SIGUSR1 as the logs reopened alone (logrotate's
/// signal: it works with a configuration a reload would refuse), SIGINT and SIGTERM as the stop
/// (after which it ends).
public final class SignalForwarder {
    private let stop = StopFlag()
    private var thread: SystemThread?
    /// The signals besides SIGINT and SIGTERM.
    static let others = [SIGHUP, SIGUSR1]

    /// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 in the calling thread and the threads it starts
    /// from now on (call it before any), and ignores SIGPIPE: a reader gone from a pipe or socket is
    /// an error return, not the end of the daemon.
    public init() {
        _ = StopSignals(alsoWaitingFor: Self.others)
        StopSignals.ignoreBrokenPipes()
    }

    /// Starts the thread that posts the signals to `events`.
    /// - Parameter reopenLogs: reopens the log files (the ban log), on this thread.
    public func start(
        posting events: ServiceEvents, reopenLogs: @escaping @Sendable () -> Void = {}
    )
        throws(Errno)
    {
        let stop = self.stop
        thread = try SystemThread.spawn {
            var signals = StopSignals(alsoWaitingFor: Self.others)
            // The wait is bounded only so that `finish` ends the thread when the service stopped
            // for another reason than a signal (a SIGTERM or SIGINT ends it at once).
            while !stop.isSet {
                guard let signal = signals.next(waitingSeconds: 1) else { continue }
                if signal == SIGUSR1 {
                    reopenLogs()
                } else if signal == SIGHUP {
                    // Before the reload, which may be refused: the rotated log is reopened anyway.
                    reopenLogs()
                    events.post(.reload(nil))
                } else {
                    events.post(.stop)
                    return
                }
            }
        }
    }

    /// Ends the thread.
    public func finish() {
        stop.set()
        thread?.join()
        thread = nil
    }
}
