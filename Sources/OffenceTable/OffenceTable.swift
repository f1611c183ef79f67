// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNUMA
import Glibc
import PortcullisCore
import PortcullisSystem

/// Counts offences per client in one open-addressing table shared by every ban worker, without
/// locks: a bin is claimed with compare-and-swap, counts move with compare-and-swap on one 64-bit
/// word. The call whose increment makes a count reach the threshold is told so, and only that one:
/// exactly one ban per threshold crossing, however many workers see the client at once.
///
/// Bin layout (32 bytes, two per cache line), in memory obtained with mmap (on a NUMA node if asked):
///
///      0 u64 key high    IPAddress bytes 0-7
///      8 u64 key low     IPAddress bytes 8-15
///     16 u32 state       0 empty, 1 being claimed (key being written), 2 in use
///     20 u32 touched     the caller's stamp of the last offence (`record(_:now:stamp:)`): which of
///                        equal counts went quiet first, finer than a second (a hint, written plainly)
///     24 u64 count word  bits 0-23: offences counted (saturating); bits 24-31: the bin's
///                        generation, bumped by every takeover (so that an update read before a
///                        takeover cannot succeed after it, ABA); high 32 bits: when the count started
///                        (seconds of the table's clock), for the find-time window; once the
///                        count has crossed, when the ban's time started
///
/// The memory is faulted in when the table is made (bins x 32 bytes: 192 MB for the default 6,000,011
/// bins), so the first attack does not pay for it.
///
/// The table ages: a new client whose probe window (`probeLimit` bins from its home) is full takes
/// over a bin that no longer matters — first one whose count has gone stale (older than the find
/// time; with find time 0, not seen for `idleHorizon` seconds; or a ban that has ended), else the
/// one with the lowest count and, among those, the oldest, never one whose ban is in force
/// (`OffenceTable+Aging.swift`). So a flood of distinct, spoofed or one-off sources can never stop
/// real attackers from being counted; only a window full of bans in force refuses an offence
/// (`full`). With find time 0 the start field of a count below the threshold holds when the client
/// was last seen, which is what the idle horizon is measured from.
public final class OffenceTable: @unchecked Sendable {
    public enum Recorded: Equatable, Sendable {
        /// Counted; the client's count is now this (below the threshold, or past it).
        case counted(UInt32)
        /// This offence made the count reach the threshold: ban the client.
        case crossed
        /// No free bin near the client's position: not counted.
        case full
    }

    public static let binSize = 32
    /// Byte offsets inside a bin (the table above).
    enum Bin {
        static let keyHigh = 0
        static let keyLow = 8
        static let state = 16
        static let touched = 20
        static let countWord = 24
    }
    /// A client's window: the bins from its home a probe walks. Under a flood of new clients every
    /// window is full and each new client walks all of it twice (looking, then taking a bin over):
    /// measured with `portcullis-perf aging` (10,000,000 one-off sources, 600,011 bins), CPU per
    /// line 162 ns with 8 bins, 267 with 16, 451 with 32, about 1,300 with 128. Without a flood
    /// a window fills only at loads no daemon runs at, and a full one takes a stale bin over.
    public static let probeLimit = 8

    public let bins: Int
    public let threshold: UInt32
    /// Offences older than this many seconds start a new count; 0 keeps counting until expiry.
    public let findTime: UInt32
    /// Seconds a ban lasts (0: for good). An offence this long after a crossing starts a new
    /// count at once: the client's ban has ended, and offences that pass the filter before the
    /// daemon gets round to lifting it count toward the next ban instead of being lost.
    public let banTime: UInt32
    /// With find time 0: a client below the threshold not seen for this many seconds no longer
    /// holds its bin against a new client.
    public let idleHorizon: UInt32
    /// Bins a probe walks (`probeLimit`; a test may make it the whole table).
    public let window: Int
    let memory: UnsafeMutableRawPointer
    private let size: Int
    let occupiedCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    let fullCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Bins taken over from stale counts, and from live ones (the lowest, oldest count in a full
    /// window).
    let reclaimedCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
    /// Spin locks serialising takeovers per group of home bins: two workers bringing the same new
    /// client into a full window must not take two bins for it.
    let takeoverLocks: UnsafeMutablePointer<UInt32>
    /// Set (for good) before the first takeover: until then no bin has changed hands, and count
    /// updates skip checking the key again.
    let takeoverStarted = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
    static let takeoverLockCount = 4096
    /// The count word of a bin changing hands: every update sees it and looks again (a count
    /// never reaches its all-ones value: it saturates one below).
    static let reclaiming = UInt64.max
    /// The count's bits in the count word, and the generation's.
    static let countMask: UInt64 = 0x00FF_FFFF
    static let generationMask: UInt64 = 0xFF00_0000
    /// The highest count: offences past it are not counted further.
    public static let highestCount: UInt32 = 0x00FF_FFFE

    @inline(__always) static func count(_ word: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: word & countMask) }
    /// The default idle horizon: a day.
    public static let defaultIdleHorizon: UInt32 = 86_400

    /// - Parameters:
    ///   - bins: table size (the prototype's 6,000,011 by default).
    ///   - numaNode: place the memory on this node (libnuma), if the machine has NUMA.
    ///   - idleHorizon: see `idleHorizon` (find time 0 only).
    ///   - window: see `window`.
    public init(
        bins: Int = 6_000_011, threshold: UInt32, findTime: UInt32 = 0, banTime: UInt32 = 0,
        idleHorizon: UInt32 = OffenceTable.defaultIdleHorizon, numaNode: Int? = nil,
        window: Int = OffenceTable.probeLimit
    ) throws(SettingError) {
        guard bins >= 16, bins <= 1 << 31 else { throw SettingError("--table-bins must be 16...2147483648") }
        guard threshold >= 1, threshold <= Self.highestCount else {
            throw SettingError("--threshold must be 1...\(Self.highestCount)")
        }
        let physical = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        guard bins * Self.binSize <= physical / 2 else {
            throw SettingError(
                "--table-bins \(bins) needs \(bins * Self.binSize >> 20) MiB, more than half of this "
                    + "machine's \(physical >> 20) MiB; lower --table-bins")
        }
        self.bins = bins
        self.threshold = threshold
        self.findTime = findTime
        self.banTime = banTime
        self.idleHorizon = max(idleHorizon, 1)
        self.window = min(max(window, 1), bins)
        size = bins * Self.binSize
        let bytes = size
        let reserved = mapMemoryResult {
            mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        }
        let mapped: UnsafeMutableRawPointer
        switch reserved {
        case .success(let mapping): mapped = mapping
        case .failure(let error):
            throw SettingError("cannot reserve \(size) bytes for \(bins) table bins (\(error)); lower --table-bins")
        }
        memory = mapped
        // Clients land in bins all over the table: with 4 KiB pages nearly every record is a TLB
        // miss. Transparent huge pages (where enabled, as "madvise" is by default) take most away.
        // Advice only: where THP is off the table works the same, slower (failure ignored on purpose).
        _ = madvise(memory, size, MADV_HUGEPAGE)
        if let numaNode, numa_available() >= 0 {
            numa_tonode_memory(memory, size, Int32(numaNode))  // a placement preference: returns nothing
        }
        // Fault every page in now (on the chosen node), not during the first attack: measured,
        // first touches in the first 10-35 ms of a run put 5-35 ms on the first clients' bans.
        for offset in stride(from: 0, to: size, by: 4096) {
            memory.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
        }
        occupiedCounter.initialize(to: 0)
        fullCounter.initialize(to: 0)
        reclaimedCounter.initialize(repeating: 0, count: 2)
        takeoverLocks = .allocate(capacity: Self.takeoverLockCount)
        takeoverLocks.initialize(repeating: 0, count: Self.takeoverLockCount)
        takeoverStarted.initialize(to: 0)
    }

    deinit {
        munmap(memory, size)
        occupiedCounter.deallocate()
        fullCounter.deallocate()
        reclaimedCounter.deallocate()
        takeoverLocks.deallocate()
        takeoverStarted.deallocate()
    }

    /// Bins in use (they stay in use: a bin changes hands, it is never emptied).
    public var occupied: UInt64 { cportcullis_load_acquire_u64(occupiedCounter) }
    /// Offences refused because every bin near their position held a ban in force.
    public var fullRefusals: UInt64 { cportcullis_load_acquire_u64(fullCounter) }
    /// Bins taken over from stale counts.
    public var reclaimedStale: UInt64 { cportcullis_load_acquire_u64(reclaimedCounter) }
    /// Bins taken over from live counts below the threshold (a full window: the lowest, oldest).
    public var evictedLive: UInt64 { cportcullis_load_acquire_u64(reclaimedCounter + 1) }

    @inline(__always)
    func home(_ key: IPAddress) -> Int {
        var hash = key.high ^ (key.low &* 0x9E37_79B9_7F4A_7C15)
        hash = (hash ^ (hash >> 29)) &* 0xBF58_476D_1CE4_E5B9
        hash ^= hash >> 32
        return Int(hash.multipliedFullWidth(by: UInt64(bins)).high)  // uniform over bins, no division
    }

    /// Where a probe for a key ended.
    enum Probe {
        /// The key's bin.
        case found(UnsafeMutableRawPointer)
        /// The key is absent, and this empty bin is where it goes.
        case empty(UnsafeMutableRawPointer)
        /// The key is absent and every bin of its window is in use.
        case windowFull
    }

    /// Walks the key's window. Bins are never emptied, so an empty bin ends it: the key is not
    /// further on.
    @inline(__always)
    func probe(_ key: IPAddress) -> Probe {
        var index = home(key)
        for _ in 0..<window {
            let bin = memory + index * Self.binSize
            let state = bin + Bin.state
            var current = cportcullis_load_acquire_u32(state)
            if current == 0 { return .empty(bin) }
            while current == 1 {  // another worker is writing this bin's key: a few instructions
                cportcullis_cpu_relax()
                current = cportcullis_load_acquire_u32(state)
            }
            if current == 0 { return .empty(bin) }  // a claim that gave up
            if holds(bin, key) { return .found(bin) }
            index += 1
            if index == bins { index = 0 }
        }
        return .windowFull
    }

    @inline(__always)
    func holds(_ bin: UnsafeMutableRawPointer, _ key: IPAddress) -> Bool {
        bin.load(as: UInt64.self) == key.high && bin.load(fromByteOffset: Bin.keyLow, as: UInt64.self) == key.low
    }

    /// The bin holding `key`, bringing it in if `insert` (into an empty bin, or by taking one over
    /// when its window is full); nil when absent (or, inserting, when every bin of the window
    /// holds a ban in force).
    @inline(__always)
    func bin(for key: IPAddress, insert: Bool, now: UInt32, stamp: UInt32 = 0) -> UnsafeMutableRawPointer? {
        while true {
            switch probe(key) {
            case .found(let bin):
                return bin
            case .empty(let bin):
                guard insert else { return nil }
                let state = bin + Bin.state
                guard cportcullis_cas_u32(state, 0, 1) else { continue }  // lost the race: look again
                bin.storeBytes(of: key.high, as: UInt64.self)
                bin.storeBytes(of: key.low, toByteOffset: Bin.keyLow, as: UInt64.self)
                // A zero count dated now: not stale before its first offence lands (see `worth`).
                cportcullis_store_release_u64(bin + Bin.countWord, UInt64(now) << 32)
                // Pairs with the load-acquire of the state by probers: the key before "in use".
                cportcullis_store_release_u32(state, 2)
                _ = cportcullis_fetch_add_u64(occupiedCounter, 1)
                return bin
            case .windowFull:
                guard insert else { return nil }
                return takeOver(for: key, now: now, stamp: stamp)
            }
        }
    }

    /// Starts loading the bin where `key`'s probe begins, so a `record` shortly after finds it in
    /// cache. Workers scan a few lines, prefetch their bins, then record them: the table's cache
    /// misses overlap instead of coming one after another.
    @inline(__always)
    public func prefetch(_ key: IPAddress) {
        cportcullis_prefetch_for_write(memory + home(key) * Self.binSize)
    }

    /// Changes `key`'s count word with `change` (given the word, nil to leave it) by compare-and-
    /// swap, checking after each read that the bin still holds `key`: a bin being taken over shows
    /// `reclaiming`, and one taken over holds another key; either way the key is looked up again.
    /// - Returns: the word written (nil: absent, or left as it was).
    @inline(__always)
    func update(
        _ key: IPAddress, insert: Bool, now: UInt32, stamp: UInt32 = 0, _ change: (UInt64) -> UInt64?
    ) -> (bin: UnsafeMutableRawPointer, old: UInt64, new: UInt64)? {
        lookup: while true {
            guard let bin = bin(for: key, insert: insert, now: now, stamp: stamp) else { return nil }
            let word = bin + Bin.countWord
            while true {
                let old = cportcullis_load_acquire_u64(word)
                // Pairs with the store-release of the word by a takeover (and with its CAS, after
                // it set `takeoverStarted`): a word read after it comes with the new key in place.
                if old == Self.reclaiming
                    || (cportcullis_load_acquire_u32(takeoverStarted) != 0 && !holds(bin, key))
                {
                    cportcullis_cpu_relax()
                    continue lookup
                }
                guard let new = change(old) else { return nil }
                if cportcullis_cas_u64(word, old, new) { return (bin, old, new) }
            }
        }
    }

    /// Counts one offence of `key` at `now` (seconds on the caller's clock).
    /// - Parameter stamp: a finer clock of the caller's (the daemon's: milliseconds, per batch),
    ///   wrapping: among equal counts of the same second, the bin stamped longest ago is the
    ///   first a new client takes over.
    @inline(__always)
    public func record(_ key: IPAddress, now: UInt32, stamp: UInt32 = 0) -> Recorded {
        var crossing = false
        guard
            let (bin, _, new) = update(
                key, insert: true, now: now, stamp: stamp,
                { old in
                    let count = Self.count(old)
                    let start = UInt32(truncatingIfNeeded: old >> 32)
                    let since = Int64(Int32(bitPattern: now &- start))
                    let banEnded = banTime > 0 && count >= threshold && since >= Int64(banTime)
                    let windowPassed = findTime > 0 && since > Int64(findTime)
                    let restart = count == 0 || banEnded || (windowPassed && count < threshold)
                    let newCount = restart ? 1 : (count >= Self.highestCount ? count : count + 1)
                    crossing = newCount == threshold && (restart || count != threshold)
                    // Find time 0: below the threshold, the start is when the client was last seen.
                    let lastSeen = findTime == 0 && newCount < threshold
                    return (old & Self.generationMask) | UInt64(newCount)
                        | UInt64(restart || crossing || lastSeen ? now : start) << 32
                })
        else {
            _ = cportcullis_fetch_add_u64(fullCounter, 1)
            return .full
        }
        if bin.load(fromByteOffset: Bin.touched, as: UInt32.self) != stamp {
            bin.storeBytes(of: stamp, toByteOffset: Bin.touched, as: UInt32.self)
        }
        return crossing ? .crossed : .counted(Self.count(new))
    }

    /// Starts the client's count over (its ban was lifted by hand).
    public func reset(_ key: IPAddress) {
        _ = update(key, insert: false, now: 0) { old in old & Self.generationMask }
    }

    /// Starts the client's count over after its ban ended at `endedAt` (table seconds), unless
    /// offences since then have started a new count or crossed again (`start` at or after the
    /// end): those are kept. - Returns: whether it reset.
    @discardableResult
    public func resetEnded(_ key: IPAddress, endedAt: UInt32) -> Bool {
        update(key, insert: false, now: 0) { old in
            let count = Self.count(old)
            let start = UInt32(truncatingIfNeeded: old >> 32)
            return count < threshold || Int32(bitPattern: endedAt &- start) <= 0 ? nil : old & Self.generationMask
        } != nil
    }

    /// Sets the client's count to the threshold without a crossing: a ban found in the maps at
    /// start-up, so further lines do not ban it again.
    /// - Parameter remaining: seconds the ban has left, if it ends: its time is dated so that it
    ///   ends then on the table's clock too (nil: for good, or as long as a ban lasts).
    public func markBanned(_ key: IPAddress, now: UInt32, remaining: UInt32? = nil) {
        // start + banTime = the ban's end; for a ban longer than banTime, start lies ahead. With
        // bans for good (banTime 0) counts never restart by time: date it now, before its end,
        // so that the lift at its end resets it.
        let start = banTime > 0 ? remaining.map { now &+ $0 &- banTime } ?? now : now
        _ = update(key, insert: true, now: now) { old in
            (old & Self.generationMask) | UInt64(self.threshold) | UInt64(start) << 32
        }
    }

    /// The client's current count, nil when the table has never seen it (or has given its bin to
    /// another client).
    public func count(of key: IPAddress) -> UInt32? {
        var seen: UInt32?
        _ = update(key, insert: false, now: 0) { old in
            seen = Self.count(old)
            return nil
        }
        return seen
    }
}
