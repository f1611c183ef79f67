// SPDX-License-Identifier: Apache-2.0
import Glibc
import OffenceTable
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// Where bans end. The XDP program stops dropping a client once its ban's end has passed, with no
/// daemon at all (`pc_enforce` in bpf/portcullis.bpf.c); the daemon then lifts the ended ban from
/// the map and starts the client's count over (the offence table also restarts a count by itself
/// once a ban time has passed since its crossing, so offences in between are not lost).
///
/// `BanLifter` is the expiry thread: every 100 ms it lifts the bans the schedule says are due.
/// It also sweeps, a slice per tick: `sweepSlice` entries of the maps, whose ended bans the
/// schedule does not know are lifted (an operator's `portcullis ban --for` written into the maps,
/// a ban whose end was lost), and `checkSlice` of the daemon's own bans, those gone from the maps
/// forgotten (an operator's `unban` there). A walk starts at most every `sweepInterval` (10 s);
/// each tick's cost is the same however many bans are held: with 1,000,000 bans a walk of the
/// maps takes about 200 s, one of the daemon's own about 400 s. Every `sweepInterval` it also
/// lifts ended network bans and saves the ban history.
final class BanLifter: @unchecked Sendable {
    private let enforcement: Enforcement
    /// Every jail's offence table: a lifted client's count restarts in each.
    private let tables: [OffenceTable]
    /// Saved every sweep interval when it changed, and at the end.
    private let history: BanHistory?
    private let clock: DaemonClock
    private let publishers: [BanPublisher]
    /// The jail of each origin slot (`Daemon.jailNames`): what an unban's journal line names.
    private let jailNames: [UInt32: String]
    private let unbans = Atomic<UInt64>(0)
    private let sweptUnbans = Atomic<UInt64>(0)
    private let cpuNanoseconds = Atomic<UInt64>(0)
    private let unbannedByOperator = Atomic<UInt64>(0)

    static let interval: UInt64 = 100_000_000
    /// Map entries read per step (one `bpf_map_lookup_batch`).
    static let sweepSlice = 512
    /// The daemon's own bans looked up per step.
    static let checkSlice = 256
    /// How long after its end a ban the sweep finds is lifted by it (before, the schedule would).
    static let sweepGrace: UInt64 = 1_000_000_000
    /// How often network bans are swept and the history saved (set before the thread starts).
    var sweepInterval: UInt64 = 10_000_000_000

    init(
        enforcement: Enforcement, tables: [OffenceTable], history: BanHistory?, clock: DaemonClock,
        publishers: [BanPublisher], jailNames: [UInt32: String] = [:]
    ) {
        self.jailNames = jailNames
        self.enforcement = enforcement
        self.tables = tables
        self.history = history
        self.clock = clock
        self.publishers = publishers
    }

    /// Bans lifted so far, of them found by the sweep, the daemon's bans found unbanned by an
    /// operator, and this thread's CPU time (once stopped).
    var counts: (unbans: UInt64, swept: UInt64, unbannedByOperator: UInt64, cpuNanoseconds: UInt64) {
        (
            unbans.load(ordering: .acquiring), sweptUnbans.load(ordering: .acquiring),
            unbannedByOperator.load(ordering: .relaxed), cpuNanoseconds.load(ordering: .acquiring)
        )
    }

    /// The expiry thread's loop, until `isStopping` says so.
    func run(isStopping: () -> Bool) {
        var lastSweep = SystemClock.monotonicNanoseconds()
        var walk = BanMaps.Walk()
        // When the current walk of the maps, and of the daemon's own bans, began.
        var walkStarted = lastSweep
        var checkStarted = lastSweep
        var checking: [ExpirySchedule.Waited] = []
        var checked = 0
        while !isStopping() {
            SystemClock.sleep(nanoseconds: Self.interval)
            let now = clock.bootNow
            let due = enforcement.schedule.takeDue(now: now)
            if !due.isEmpty { lift(due.map(\.address), swept: false) }
            let clockNow = SystemClock.monotonicNanoseconds()
            // One slice of the maps: ended bans nobody waits for. A walk starts at most every
            // sweep interval: a read of a hash map visits its empty buckets too (about 3 ms for
            // 1,048,576 of them), so sparse maps are walked in one step, not one step a tick.
            if walk.position.started || walk.ipv6 || clockNow - walkStarted >= sweepInterval {
                if !walk.position.started && !walk.ipv6 { walkStarted = clockNow }
                if let entries = try? enforcement.maps.entries(walking: &walk, limit: Self.sweepSlice) {
                    // Ended more than a second ago: the schedule would have lifted one it waits for.
                    let ended = entries.filter { $0.isExpired(now: now &- Self.sweepGrace) }.map(\.address)
                    if !ended.isEmpty { lift(ended, swept: true) }
                }
            }
            // One slice of the daemon's own bans: those an operator deleted from the maps.
            if checked >= checking.count && clockNow - checkStarted >= sweepInterval {
                checking = enforcement.ownBans
                checked = 0
                checkStarted = clockNow
            }
            if checked < checking.count {
                let slice = checking[checked..<min(checked + Self.checkSlice, checking.count)]
                checked += slice.count
                let forgotten = enforcement.forgetGone(slice, tables: tables, now: clock.bootNow)
                if forgotten > 0 { unbannedByOperator.wrappingAdd(UInt64(forgotten), ordering: .relaxed) }
            }
            if clockNow - lastSweep > sweepInterval {
                lastSweep = clockNow
                liftEndedNetworks(now: now)
                saveHistory()
            }
        }
        saveHistory()
        cpuNanoseconds.store(SystemClock.threadCPUNanoseconds(), ordering: .releasing)
    }

    /// Network bans (a jail's `ipv6-prefix`, aggregates, an operator's prefixes): the program
    /// passes them once ended; they are removed here.
    func liftEndedNetworks(now: UInt64) {
        let lifted = enforcement.liftEndedNetworks(now: now)
        if lifted > 0 {
            unbans.wrappingAdd(UInt64(lifted), ordering: .acquiringAndReleasing)
            sweptUnbans.wrappingAdd(UInt64(lifted), ordering: .acquiringAndReleasing)
        }
    }

    /// A history that cannot be written is said once per failure; banning goes on.
    private func saveHistory() {
        do throws(Errno) {
            try history?.save()
        } catch {
            Console.say(
                "portcullisd: cannot save the ban history \(history?.path ?? ""): \(error); escalation "
                    + "counts will be lost at restart", to: STDERR_FILENO)
        }
    }

    private func lift(_ addresses: [IPAddress], swept: Bool) {
        let deleted = enforcement.lift(addresses, tables: tables, clock: clock) { lifted, origins in
            let event = BanEvent(
                kind: .unban, origin: .expiry, addresses: lifted,
                monotonicNanoseconds: SystemClock.monotonicNanoseconds(), liftedJails: origins.map { jailNames[$0] })
            for publisher in publishers { publisher.publish(event) }
        }
        unbans.wrappingAdd(deleted, ordering: .acquiringAndReleasing)
        if swept { sweptUnbans.wrappingAdd(deleted, ordering: .acquiringAndReleasing) }
    }
}

/// When each ban ends, earliest first: workers add bans, the expiry thread takes the due ones.
///
/// Bans of one length made one after another end in the order they were made: each length has a
/// queue of its own, appended to and taken from in O(1) (a jail's ban time, each escalation
/// level). Bans that do not fit one (an operator's end, resumed bans, more lengths than
/// `maximumRuns`) go into a heap. Nothing is hashed on the ban path (measured: a dictionary of
/// the bans' ends cost about 400 ns per ban at 131,068 bans, more than the map write): an entry
/// the daemon knows stale (`forget`: lifted by an operator through it, covered by an aggregate)
/// is skipped when it comes due, and one replaced by a later ban is found in force by the lift,
/// which leaves it.
final class ExpirySchedule: Sendable {
    /// One end waited for: the address, and when its ban was made (boot nanoseconds).
    struct Entry: Sendable {
        let address: IPAddress
        let made: UInt64
    }

    /// The bans of one length, in the order of their ends.
    private struct Run {
        var ends: [UInt64] = []
        var addresses: [IPAddress] = []
        var head = 0

        var isEmpty: Bool { head == ends.count }
        var count: Int { ends.count - head }

        mutating func append(_ end: UInt64, _ address: IPAddress) {
            ends.append(end)
            addresses.append(address)
        }

        /// Drops the first entry; the taken ones are compacted away once they are half the run.
        mutating func dropFirst() {
            head += 1
            if head == ends.count {
                ends.removeAll(keepingCapacity: true)
                addresses.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 4096 && head * 2 >= ends.count {
                ends.removeFirst(head)
                addresses.removeFirst(head)
                head = 0
            }
        }
    }

    private struct State {
        var heap = EndHeap<Entry>()
        var runs: [UInt64: Run] = [:]
        /// Addresses whose entries made before this time are stale (`forget`): few, an operator's.
        var forgotten: [IPAddress: UInt64] = [:]
        /// The longest ban length queued: a forgotten address older than that has no entry left.
        var longest: UInt64 = 0
        /// Forgotten addresses past which the next `forget` purges the old ones.
        var purgeAt = 4096
        var count = 0
    }

    /// Queues of ban lengths at most; a ban of a further length goes into the heap.
    static let maximumRuns = 64
    private let state = Mutex(State())

    init() {}

    /// Ends waited for (a ban lifted or replaced before its end counts until that end).
    var count: Int { state.withLock { $0.count } }

    /// An end waited for: the address, when its ban was made and when it ends (nil: a ban for
    /// good, watched rather than waited for).
    struct Waited: Sendable {
        let address: IPAddress
        let made: UInt64
        let end: UInt64?
    }

    /// The ends waited for (an address twice if banned again before its end).
    var waited: [Waited] {
        state.withLock { state in
            var waited: [Waited] = []
            waited.reserveCapacity(state.count)
            for (length, run) in state.runs {
                for index in run.head..<run.ends.count {
                    let end = run.ends[index]
                    waited.append(
                        Waited(address: run.addresses[index], made: end &- min(end, length &* 1_000_000_000), end: end))
                }
            }
            for entry in state.heap.all {
                waited.append(Waited(address: entry.key.address, made: entry.key.made, end: entry.end))
            }
            return waited
        }
    }

    /// Stops waiting for the ends of `address`'s bans made before `now` (its ban is gone, or
    /// replaced): they are skipped when due.
    func forget(_ address: IPAddress, now: UInt64) {
        state.withLock { state in
            state.forgotten[address] = now
            if state.forgotten.count > state.purgeAt { Self.purge(&state, now: now) }
        }
    }

    /// Drops the addresses forgotten longer ago than the longest ban and a minute (no entry of
    /// theirs is left, due or waiting to be taken); the next purge comes when twice as many are
    /// forgotten (amortised O(1) per `forget`).
    private static func purge(_ state: inout State, now: UInt64) {
        let horizon = now &- min(now, state.longest &+ 60_000_000_000)
        state.forgotten = state.forgotten.filter { $0.value >= horizon }
        state.purgeAt = max(4096, 2 * state.forgotten.count)
    }

    /// Whether the end of `address`'s ban made at `made` was forgotten (its ban gone, the daemon
    /// knows).
    func isForgotten(_ address: IPAddress, madeAt made: UInt64) -> Bool {
        state.withLock { state in state.forgotten[address].map { made < $0 } ?? false }
    }

    /// One ban ending at `end` (boot nanoseconds), made at `made`.
    func add(_ address: IPAddress, end: UInt64, made: UInt64) {
        state.withLock { state in
            state.heap.push(end, Entry(address: address, made: made))
            state.longest = max(state.longest, end &- min(end, made))
            state.count += 1
        }
    }

    /// Bans of `length` seconds made at once, at `made`, under one hold of the lock: appended to
    /// their length's queue (a heap push if it does not fit one).
    func add(_ bans: [(address: IPAddress, end: UInt64)], lengthSeconds: UInt64, made: UInt64) {
        state.withLock { state in
            state.count += bans.count
            state.longest = max(state.longest, lengthSeconds &* 1_000_000_000)
            if state.runs[lengthSeconds] != nil || state.runs.count < Self.maximumRuns {
                // Taken out while it is worked on: its arrays are not copied.
                var run = state.runs.removeValue(forKey: lengthSeconds) ?? Run()
                for (address, end) in bans {
                    if let last = run.ends.last, last > end {
                        state.heap.push(end, Entry(address: address, made: made))
                    } else {
                        run.append(end, address)
                    }
                }
                state.runs[lengthSeconds] = run
            } else {
                for (address, end) in bans { state.heap.push(end, Entry(address: address, made: made)) }
            }
        }
    }

    /// Removes and returns the clients whose ban ends at or before `now`, with their ends;
    /// forgotten ones are dropped.
    func takeDue(now: UInt64) -> [(address: IPAddress, end: UInt64)] {
        state.withLock { state in
            var due: [(address: IPAddress, end: UInt64)] = []
            for length in Array(state.runs.keys) {
                guard var run = state.runs.removeValue(forKey: length) else { continue }
                while !run.isEmpty, run.ends[run.head] <= now {
                    let (end, address) = (run.ends[run.head], run.addresses[run.head])
                    run.dropFirst()
                    state.count -= 1
                    let made = end &- min(end, length &* 1_000_000_000)
                    if let forgotten = state.forgotten[address], made < forgotten { continue }
                    due.append((address, end))
                }
                if !run.isEmpty { state.runs[length] = run }
            }
            while let first = state.heap.first, first.end <= now {
                state.heap.popFirst()
                state.count -= 1
                if let forgotten = state.forgotten[first.key.address], first.key.made < forgotten { continue }
                due.append((first.key.address, first.end))
            }
            return due
        }
    }
}
