import CPortcullis
import Glibc
import PortcullisCore

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
///     24 u64 count word  low 32 bits: offences counted; high 32 bits: when the count started
///                        (seconds of the table's clock), for the find-time window; once the
///                        count has crossed, when the ban's time started
///
/// The memory is faulted in when the table is made (bins x 32 bytes: 192 MB for the default 6,000,011
/// bins), so the first attack does not pay for it. Bins are never freed: an expired ban resets the
/// count, the key stays. When a probe finds no
/// free bin within `probeLimit` steps the offence is not counted and `full` says so.
public final class OffenceTable: @unchecked Sendable {
    public enum Recorded: Equatable, Sendable {
        /// Counted; the client's count is now this (below the threshold, or past it).
        case counted(UInt32)
        /// This offence made the count reach the threshold: ban the client.
        case crossed
        /// No free bin near the client's position: not counted.
        case full
    }

    static let binSize = 32
    /// Byte offsets inside a bin (the table above).
    enum Bin {
        static let keyHigh = 0
        static let keyLow = 8
        static let state = 16
        static let countWord = 24
    }
    /// Longest linear probe before a record is refused as `full`.
    public static let probeLimit = 128

    public let bins: Int
    public let threshold: UInt32
    /// Offences older than this many seconds start a new count; 0 keeps counting until expiry.
    public let findTime: UInt32
    /// Seconds a ban lasts (0: for good). An offence this long after a crossing starts a new
    /// count at once: the client's ban has ended, and offences that pass the filter before the
    /// daemon gets round to lifting it count toward the next ban instead of being lost.
    public let banTime: UInt32
    private let memory: UnsafeMutableRawPointer
    private let size: Int
    private let occupiedCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let fullCounter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)

    /// - Parameters:
    ///   - bins: table size (the prototype's 6,000,011 by default).
    ///   - numaNode: place the memory on this node (libnuma), if the machine has NUMA.
    public init(
        bins: Int = 6_000_011, threshold: UInt32, findTime: UInt32 = 0, banTime: UInt32 = 0,
        numaNode: Int? = nil
    ) throws(SettingError) {
        guard bins >= 16, bins <= 1 << 31 else { throw SettingError("--table-bins must be 16...2147483648") }
        guard threshold >= 1 else { throw SettingError("--threshold must be at least 1") }
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
        size = bins * Self.binSize
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else {
            let code = errno
            throw SettingError(
                "cannot reserve \(size) bytes for \(bins) table bins (\(String(cString: strerror(code))));"
                    + " lower --table-bins")
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
    }

    deinit {
        munmap(memory, size)
        occupiedCounter.deallocate()
        fullCounter.deallocate()
    }

    /// Bins in use.
    public var occupied: UInt64 { cportcullis_load_acquire_u64(occupiedCounter) }
    /// Offences refused because no bin was free near their position.
    public var fullRefusals: UInt64 { cportcullis_load_acquire_u64(fullCounter) }

    @inline(__always)
    func home(_ key: IPAddress) -> Int {
        var hash = key.high ^ (key.low &* 0x9E37_79B9_7F4A_7C15)
        hash = (hash ^ (hash >> 29)) &* 0xBF58_476D_1CE4_E5B9
        hash ^= hash >> 32
        return Int(hash.multipliedFullWidth(by: UInt64(bins)).high)  // uniform over bins, no division
    }

    /// The bin holding `key`, claiming a free one if `insert`; nil when absent (or no free bin).
    @inline(__always)
    func bin(for key: IPAddress, insert: Bool) -> UnsafeMutableRawPointer? {
        var index = home(key)
        for _ in 0..<Self.probeLimit {
            let bin = memory + index * Self.binSize
            let state = bin + Bin.state
            var current = cportcullis_load_acquire_u32(state)
            if current == 0 {
                guard insert else { return nil }
                if cportcullis_cas_u32(state, 0, 1) {
                    bin.storeBytes(of: key.high, as: UInt64.self)
                    bin.storeBytes(of: key.low, toByteOffset: Bin.keyLow, as: UInt64.self)
                    // Pairs with the load-acquire of the state by probers: the key before "in use".
                    cportcullis_store_release_u32(state, 2)
                    _ = cportcullis_fetch_add_u64(occupiedCounter, 1)
                    return bin
                }
                current = cportcullis_load_acquire_u32(state)
            }
            while current == 1 {  // another worker is writing this bin's key: a few instructions
                cportcullis_cpu_relax()
                current = cportcullis_load_acquire_u32(state)
            }
            if bin.load(as: UInt64.self) == key.high && bin.load(fromByteOffset: Bin.keyLow, as: UInt64.self) == key.low
            {
                return bin
            }
            index += 1
            if index == bins { index = 0 }
        }
        return nil
    }

    /// Starts loading the bin where `key`'s probe begins, so a `record` shortly after finds it in
    /// cache. Workers scan a few lines, prefetch their bins, then record them: the table's cache
    /// misses overlap instead of coming one after another.
    @inline(__always)
    public func prefetch(_ key: IPAddress) {
        cportcullis_prefetch_for_write(memory + home(key) * Self.binSize)
    }

    /// Counts one offence of `key` at `now` (seconds on the caller's clock).
    @inline(__always)
    public func record(_ key: IPAddress, now: UInt32) -> Recorded {
        guard let bin = bin(for: key, insert: true) else {
            _ = cportcullis_fetch_add_u64(fullCounter, 1)
            return .full
        }
        let word = bin + Bin.countWord
        var old = cportcullis_load_acquire_u64(word)
        while true {
            let count = UInt32(truncatingIfNeeded: old)
            let start = UInt32(truncatingIfNeeded: old >> 32)
            let banEnded = banTime > 0 && count >= threshold && Int64(Int32(bitPattern: now &- start)) >= Int64(banTime)
            let windowPassed = findTime > 0 && Int64(Int32(bitPattern: now &- start)) > Int64(findTime)
            let restart = count == 0 || banEnded || (windowPassed && count < threshold)
            let newCount = restart ? 1 : (count == UInt32.max ? count : count + 1)
            let crossing = newCount == threshold && (restart || count != threshold)
            let new = UInt64(newCount) | UInt64(restart || crossing ? now : start) << 32
            if cportcullis_cas_u64(word, old, new) {
                return crossing ? .crossed : .counted(newCount)
            }
            old = cportcullis_load_acquire_u64(word)
        }
    }

    /// Starts the client's count over (its ban was lifted by hand).
    public func reset(_ key: IPAddress) {
        guard let bin = bin(for: key, insert: false) else { return }
        cportcullis_store_release_u64(bin + Bin.countWord, 0)
    }

    /// Starts the client's count over after its ban ended at `endedAt` (table seconds), unless
    /// offences since then have started a new count or crossed again (`start` at or after the
    /// end): those are kept. - Returns: whether it reset.
    @discardableResult
    public func resetEnded(_ key: IPAddress, endedAt: UInt32) -> Bool {
        guard let bin = bin(for: key, insert: false) else { return false }
        let word = bin + Bin.countWord
        while true {
            let old = cportcullis_load_acquire_u64(word)
            let count = UInt32(truncatingIfNeeded: old)
            let start = UInt32(truncatingIfNeeded: old >> 32)
            if count < threshold || Int32(bitPattern: endedAt &- start) <= 0 { return false }
            if cportcullis_cas_u64(word, old, 0) { return true }
        }
    }

    /// Sets the client's count to the threshold without a crossing: a ban found in the maps at
    /// start-up, so further lines do not ban it again.
    /// - Parameter remaining: seconds the ban has left, if it ends: its time is dated so that it
    ///   ends then on the table's clock too (nil: for good, or as long as a ban lasts).
    public func markBanned(_ key: IPAddress, now: UInt32, remaining: UInt32? = nil) {
        guard let bin = bin(for: key, insert: true) else { return }
        // start + banTime = the ban's end; for a ban longer than banTime, start lies ahead. With
        // bans for good (banTime 0) counts never restart by time: date it now, before its end,
        // so that the lift at its end resets it.
        let start = banTime > 0 ? remaining.map { now &+ $0 &- banTime } ?? now : now
        cportcullis_store_release_u64(bin + Bin.countWord, UInt64(threshold) | UInt64(start) << 32)
    }

    /// The client's current count, nil when the table has never seen it.
    public func count(of key: IPAddress) -> UInt32? {
        guard let bin = bin(for: key, insert: false) else { return nil }
        return UInt32(truncatingIfNeeded: cportcullis_load_acquire_u64(bin + Bin.countWord))
    }
}
