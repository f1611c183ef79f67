// SPDX-License-Identifier: Apache-2.0
import Dispatch
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// A line in the daemon's log (the journal, under systemd) for each ban and unban of a jail or an
/// operator, in fail2ban's words, at NOTICE (`<5>`: `journalctl -u portcullisd -p notice` shows
/// them without the information lines):
///
///     [sshd] Ban 198.18.0.4 for 1h origin=jail
///     [manual] Ban 198.18.0.0/24 for good origin=manual
///     [sshd] Unban 198.18.0.4 reason=ended
///
/// A ban names its jail (`manual` for an operator's without `--jail`), the address (a network with
/// its length), how long (`for good`) and its origin: `jail` (a jail's filter) or `manual` (the
/// control socket). An unban names the jail whose ban was lifted (left out when no jail of this
/// daemon made it) and why: `ended`, `manual` (an operator's unban), `aggregated` (the member of a
/// network banned whole). Blocklists, CrowdSec and the fleet install thousands of entries at once
/// and say so in one line each; they have no line per entry here.
///
/// A flood does not flood the journal: at most `linesPerSecond` lines a second (bans and unbans
/// together); past that, bans and unbans are counted, and one summary line says how many went
/// unsaid every `summarySeconds` while it lasts (journald's default limit, 10,000 lines per 30 s
/// per service, would otherwise drop lines of every kind, the warnings too). The ban log and
/// `portcullis list` have every one.
///
/// `publish` runs on the banning thread: it counts, formats the few lines let through and queues
/// them; a thread of its own writes them (a journal slow to read must not hold a ban).
public final class BanJournal: BanPublisher, @unchecked Sendable {
    /// The default cap: 50 lines a second is 1,500 per 30 s, leaving journald's default burst of
    /// 10,000 most of its room for everything else the service says.
    public static let defaultLinesPerSecond = 50
    public static let defaultSummarySeconds: UInt64 = 10

    struct State {
        var lines: [String] = []
        /// The second (monotonic) whose lines `used` counts.
        var second: UInt64 = 0
        var used = 0
        /// Bans and unbans not said since `unsaidSince` (monotonic nanoseconds).
        var unsaidBans: UInt64 = 0
        var unsaidUnbans: UInt64 = 0
        var unsaidSince: UInt64 = 0
        var stopping = false
        /// `flush`: the summary is due at once.
        var summaryNow = false
        /// Lines taken by the writer and not yet written (`flush` waits for them).
        var writing = 0
    }

    private let linesPerSecond: Int
    /// What the writer's thread holds (never the journal itself: its deinit ends the thread).
    private let writer: Writer
    private var thread: SystemThread?

    /// - Parameters:
    ///   - linesPerSecond: the cap of ban and unban lines a second.
    ///   - summarySeconds: how often a flood's summary line comes while it lasts.
    ///   - write: writes one line at NOTICE (the daemon's logger).
    public init(
        linesPerSecond: Int = BanJournal.defaultLinesPerSecond,
        summarySeconds: UInt64 = BanJournal.defaultSummarySeconds,
        write: @escaping @Sendable (String) -> Void
    ) throws(Errno) {
        self.linesPerSecond = linesPerSecond
        writer = Writer(every: summarySeconds * 1_000_000_000, cap: linesPerSecond, write: write)
        thread = try SystemThread.spawn { [writer] in writer.run() }
    }

    deinit {
        writer.state.withLock { $0.stopping = true }
        writer.wakeup.signal()
        thread?.join()
    }

    public func publish(_ event: BanEvent) {
        guard !event.addresses.isEmpty else { return }
        let now = SystemClock.monotonicNanoseconds()
        let (allowed, firstUnsaid) = writer.state.withLock { state in
            let second = now / 1_000_000_000
            if second != state.second {
                state.second = second
                state.used = 0
            }
            let allowed = min(event.addresses.count, max(linesPerSecond - state.used, 0))
            state.used += allowed
            let unsaid = UInt64(event.addresses.count - allowed)
            var first = false
            if unsaid > 0 {
                first = state.unsaidBans == 0 && state.unsaidUnbans == 0
                if first { state.unsaidSince = now }
                if event.kind == .ban { state.unsaidBans += unsaid } else { state.unsaidUnbans += unsaid }
            }
            return (allowed, first)
        }
        // The writer waits without a timeout while nothing is unsaid: the first unsaid wakes it.
        if firstUnsaid { writer.wakeup.signal() }
        guard allowed > 0 else { return }
        // Formatted outside the lock: at most `linesPerSecond` a second.
        let lines = (0..<allowed).map { Self.line(event, $0) }
        let wasEmpty = writer.state.withLock { state in
            state.lines += lines
            return state.lines.count == lines.count
        }
        if wasEmpty { writer.wakeup.signal() }
    }

    /// Writes what is queued and, at once, the summary of what went unsaid (the daemon stops).
    public func flush() {
        while writer.state.withLock({ state in
            state.summaryNow = true
            return !state.lines.isEmpty || state.writing > 0 || state.unsaidBans + state.unsaidUnbans > 0
        }) {
            writer.wakeup.signal()
            _ = writer.written.wait(timeout: .now() + .milliseconds(10))
        }
    }

    /// The writer's thread and what it shares with the journal.
    final class Writer: @unchecked Sendable {
        let state = Mutex(State())
        let wakeup = DispatchSemaphore(value: 0)
        let written = DispatchSemaphore(value: 0)
        private let every: UInt64
        private let cap: Int
        private let write: @Sendable (String) -> Void

        init(every: UInt64, cap: Int, write: @escaping @Sendable (String) -> Void) {
            self.every = every
            self.cap = cap
            self.write = write
        }

        /// The queued lines, and the summary once `every` has passed since the first unsaid one
        /// (looked at once a second while there is one).
        func run() {
            while true {
                let now = SystemClock.monotonicNanoseconds()
                let (lines, summary, stopping, pending) = state.withLock { state in
                    let lines = state.lines
                    state.lines.removeAll(keepingCapacity: true)
                    state.writing = lines.count
                    var summary: String?
                    let unsaid = state.unsaidBans + state.unsaidUnbans
                    if unsaid > 0 && (now &- state.unsaidSince >= every || state.stopping || state.summaryNow) {
                        summary = BanJournal.summary(
                            bans: state.unsaidBans, unbans: state.unsaidUnbans,
                            seconds: (now &- min(now, state.unsaidSince)) / 1_000_000_000, cap: cap)
                        state.unsaidBans = 0
                        state.unsaidUnbans = 0
                    }
                    state.summaryNow = false
                    return (lines, summary, state.stopping, state.unsaidBans + state.unsaidUnbans > 0)
                }
                for line in lines { write(line) }
                if let summary { write(summary) }
                state.withLock { $0.writing = 0 }
                written.signal()
                guard lines.isEmpty && summary == nil else { continue }
                if stopping { return }
                // Unsaid bans and unbans: looked at again in a second, for their summary.
                if pending { _ = wakeup.wait(timeout: .now() + .seconds(1)) } else { wakeup.wait() }
            }
        }
    }

    /// The line for `event.addresses[index]`.
    static func line(_ event: BanEvent, _ index: Int) -> String {
        switch event.kind {
        case .ban:
            let seconds = index < event.seconds.count ? event.seconds[index] : 0
            let length = seconds == 0 ? "for good" : "for " + duration(seconds)
            let origin = event.origin == .operator ? "manual" : "jail"
            return "[\(event.jail ?? "manual")] Ban \(event.text(index)) \(length) origin=\(origin)"
        case .unban:
            let jail = index < event.liftedJails.count ? event.liftedJails[index] : nil
            let reason: String
            switch event.origin {
            case .expiry: reason = "ended"
            case .operator: reason = "manual"
            case .aggregate: reason = "aggregated"
            case .filter: reason = "lifted"
            }
            return (jail.map { "[\($0)] " } ?? "") + "Unban \(event.text(index)) reason=\(reason)"
        }
    }

    /// `seconds` as fail2ban's and systemd's short spans: `1h`, `1h30m`, `2d`, `90s` → `1m30s`.
    static func duration(_ seconds: UInt64) -> String {
        var left = seconds
        var text = ""
        for (unit, size) in [("w", UInt64(604_800)), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            guard left >= size else { continue }
            text += "\(left / size)\(unit)"
            left %= size
        }
        return text.isEmpty ? "0s" : text
    }

    /// The summary of a flood's unsaid lines.
    static func summary(bans: UInt64, unbans: UInt64, seconds: UInt64, cap: Int) -> String {
        var counts: [String] = []
        if bans > 0 { counts.append("\(grouped(bans)) more ban(s)") }
        if unbans > 0 { counts.append("\(grouped(unbans)) more unban(s)") }
        return "... and " + counts.joined(separator: " and ")
            + " in the last \(max(seconds, 1)) s, not logged one by one "
            + "(at most \(cap) lines a second; every one is in portcullis list and the ban log)"
    }

    /// `12345` as `12,345`.
    static func grouped(_ value: UInt64) -> String {
        let digits = Array(String(value))
        var text = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { text += "," }
            text.append(digit)
        }
        return text
    }
}
