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
/// `BanLifter` is the expiry thread: every 100 ms it lifts the bans the schedule says are due,
/// and every 10 s it sweeps the maps for ended bans the schedule does not know (an operator's
/// `portcullis ban --for`, a ban whose end was lost).
final class BanLifter: @unchecked Sendable {
    private let enforcement: Enforcement
    /// Every jail's offence table: a lifted client's count restarts in each.
    private let tables: [OffenceTable]
    /// Saved every sweep interval when it changed, and at the end.
    private let history: BanHistory?
    private let clock: DaemonClock
    private let publishers: [BanPublisher]
    private let unbans = Atomic<UInt64>(0)
    private let sweptUnbans = Atomic<UInt64>(0)
    private let cpuNanoseconds = Atomic<UInt64>(0)
    private let unbannedByOperator = Atomic<UInt64>(0)

    static let interval: UInt64 = 100_000_000
    /// How often the maps are swept (set before the thread starts).
    var sweepInterval: UInt64 = 10_000_000_000

    init(
        enforcement: Enforcement, tables: [OffenceTable], history: BanHistory?, clock: DaemonClock,
        publishers: [BanPublisher]
    ) {
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
        while !isStopping() {
            SystemClock.sleep(nanoseconds: Self.interval)
            let now = clock.bootNow
            let due = enforcement.schedule.takeDue(now: now)
            if !due.isEmpty { lift(due, swept: false) }
            if SystemClock.monotonicNanoseconds() - lastSweep > sweepInterval {
                lastSweep = SystemClock.monotonicNanoseconds()
                if let entries = try? enforcement.maps.entries() {
                    let ended = entries.filter { $0.isExpired(now: now) }.map(\.address)
                    if !ended.isEmpty { lift(ended, swept: true) }
                    let present = Set(entries.map(\.address))
                    let forgotten = enforcement.forgetUnbanned(present: present, tables: tables)
                    unbannedByOperator.wrappingAdd(UInt64(forgotten), ordering: .relaxed)
                }
                // Network bans (an operator's prefixes): the program passes them once ended; they
                // are removed here.
                if let lifted = try? enforcement.maps.liftEndedNetworkBans(now: now), lifted > 0 {
                    unbans.wrappingAdd(UInt64(lifted), ordering: .acquiringAndReleasing)
                    sweptUnbans.wrappingAdd(UInt64(lifted), ordering: .acquiringAndReleasing)
                }
                saveHistory()
            }
        }
        saveHistory()
        cpuNanoseconds.store(SystemClock.threadCPUNanoseconds(), ordering: .releasing)
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
        let deleted = enforcement.lift(addresses, tables: tables, clock: clock) { lifted in
            let event = BanEvent(
                kind: .unban, origin: .expiry, addresses: lifted,
                monotonicNanoseconds: SystemClock.monotonicNanoseconds())
            for publisher in publishers { publisher.publish(event) }
        }
        unbans.wrappingAdd(deleted, ordering: .acquiringAndReleasing)
        if swept { sweptUnbans.wrappingAdd(deleted, ordering: .acquiringAndReleasing) }
    }
}

/// When each ban ends, earliest first: workers add bans, the expiry thread takes the due ones.
/// A client banned again before its old ban ended keeps only its latest end.
final class ExpirySchedule: Sendable {
    private struct State {
        var heap: EndHeap<IPAddress>
        var latest: [IPAddress: UInt64] = [:]
    }

    private let state: Mutex<State>

    /// Room for this many bans is made up front: growing the dictionary rehashes every entry
    /// while a worker waits (measured: milliseconds at tens of thousands of bans).
    init(capacity: Int = 1 << 17) {
        var initial = State(heap: EndHeap(capacity: capacity))
        initial.latest.reserveCapacity(capacity)
        state = Mutex(initial)
    }

    /// Bans with an end the daemon is waiting for.
    var count: Int { state.withLock { $0.latest.count } }

    /// Their addresses.
    var addresses: Set<IPAddress> { state.withLock { Set($0.latest.keys) } }

    /// Stops waiting for `address`'s end (its ban is gone); the heap's entry for it is skipped.
    func forget(_ address: IPAddress) {
        _ = state.withLock { $0.latest.removeValue(forKey: address) }
    }

    func add(_ address: IPAddress, end: UInt64) {
        state.withLock { state in
            state.latest[address] = end
            state.heap.push(end, address)
        }
    }

    /// Removes and returns the clients whose ban ends at or before `now`.
    func takeDue(now: UInt64) -> [IPAddress] {
        state.withLock { state in
            var due: [IPAddress] = []
            while let first = state.heap.first, first.end <= now {
                state.heap.popFirst()
                // An older end of a client banned again since: not due.
                if state.latest[first.key] == first.end {
                    state.latest.removeValue(forKey: first.key)
                    due.append(first.key)
                }
            }
            return due
        }
    }
}
