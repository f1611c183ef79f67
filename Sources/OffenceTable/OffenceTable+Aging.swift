// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

/// How the table ages: a new client whose window is full takes over a bin that no longer matters.
///
/// A takeover holds the lock of the new client's group of home bins (so that two workers bringing
/// the same client in take one bin, not two), looks through the window again (the client may have
/// come in meanwhile), picks a victim, and changes the bin's hands in three steps, each checked:
/// its state 2 → 1 (no other takeover), its count word → `reclaiming` by compare-and-swap from the
/// word it judged by (an offence counted meanwhile makes the takeover pick again), then the new key,
/// a zero count, state 2. Bins full of empty windows never reach this: they are claimed as before.
extension OffenceTable {
    /// What a bin is worth keeping, judged from its count word at `now`; lower is given up first.
    enum Worth: Comparable {
        /// Nothing to keep: a reset count, a window or idle horizon passed, a ban ended.
        case stale
        /// A count below the threshold: the lower `count`, then the older `start`, then the older
        /// stamp go first.
        case counting(count: UInt32, age: UInt32, quiet: UInt32)
        /// A ban in force (or for good): never given up.
        case banned
    }

    @inline(__always)
    func worth(_ word: UInt64, touched: UInt32, now: UInt32, stamp: UInt32) -> Worth {
        let count = Self.count(word)
        let start = UInt32(truncatingIfNeeded: word >> 32)
        let since = Int64(Int32(bitPattern: now &- start))
        // A reset count is stale; a bin just brought in (count 0, dated this second) is not: it
        // must not be taken from under its first offence.
        if count == 0 { return since > 0 ? .stale : .counting(count: 1, age: UInt32.max, quiet: UInt32.max) }
        if count >= threshold {
            return banTime > 0 && since >= Int64(banTime) ? .stale : .banned
        }
        if since > Int64(findTime > 0 ? findTime : idleHorizon) { return .stale }
        // Higher worth for a higher count, then a more recent start, then a more recent stamp.
        let quiet = UInt32(clamping: max(Int64(Int32(bitPattern: stamp &- touched)), 0))
        return .counting(count: count, age: UInt32.max &- UInt32(clamping: max(since, 0)), quiet: UInt32.max &- quiet)
    }

    /// Brings `key` into its full window by taking over the least worth bin in it.
    /// - Returns: the bin, now holding `key` with a zero count (or found holding it already); nil
    ///   when every bin of the window holds a ban in force.
    func takeOver(for key: IPAddress, now: UInt32, stamp: UInt32) -> UnsafeMutableRawPointer? {
        let homeIndex = home(key)
        // Before any bin changes hands: count updates from now on check their key again.
        if cportcullis_load_acquire_u32(takeoverStarted) == 0 { cportcullis_store_release_u32(takeoverStarted, 1) }
        let lock = takeoverLocks + homeIndex % Self.takeoverLockCount
        while !cportcullis_cas_u32(lock, 0, 1) { cportcullis_cpu_relax() }
        defer { cportcullis_store_release_u32(lock, 0) }
        for _ in 0..<8 {
            // One pass: the client may have come in meanwhile (then it is in its window); else
            // the bin least worth keeping.
            let (found, least) = scanWindow(from: homeIndex, for: key, now: now, stamp: stamp)
            if let found { return found }
            guard let (victim, word, worth) = least else { break }
            let state = victim + Bin.state
            guard cportcullis_cas_u32(state, 2, 1) else { continue }  // another takeover has it
            guard cportcullis_cas_u64(victim + Bin.countWord, word, Self.reclaiming) else {
                cportcullis_store_release_u32(state, 2)  // counted meanwhile: judge again
                continue
            }
            victim.storeBytes(of: key.high, as: UInt64.self)
            victim.storeBytes(of: key.low, toByteOffset: Bin.keyLow, as: UInt64.self)
            victim.storeBytes(of: stamp, toByteOffset: Bin.touched, as: UInt32.self)
            // Pairs with the load-acquire of the word in `update`: the new key before the word. A
            // new generation: an update that read the old word before this takeover cannot land.
            let generation = (word & Self.generationMask) &+ 0x0100_0000 & Self.generationMask
            cportcullis_store_release_u64(victim + Bin.countWord, generation | UInt64(now) << 32)
            cportcullis_store_release_u32(state, 2)
            _ = cportcullis_fetch_add_u64(reclaimedCounter + (worth == .stale ? 0 : 1), 1)
            return victim
        }
        return nil
    }

    /// Walks the window starting at `homeIndex`: the bin holding `key` if one does, else the bin
    /// least worth keeping (a stale one ends the walk; nil when all hold bans in force), with the
    /// count word it was judged by.
    private func scanWindow(
        from homeIndex: Int, for key: IPAddress, now: UInt32, stamp: UInt32
    )
        -> (found: UnsafeMutableRawPointer?, least: (UnsafeMutableRawPointer, UInt64, Worth)?)
    {
        var best: (UnsafeMutableRawPointer, UInt64, Worth)?
        var stale: (UnsafeMutableRawPointer, UInt64, Worth)?
        var index = homeIndex
        for _ in 0..<window {
            let bin = memory + index * Self.binSize
            var state = cportcullis_load_acquire_u32(bin + Bin.state)
            while state == 1 {  // a key being written: a few instructions
                cportcullis_cpu_relax()
                state = cportcullis_load_acquire_u32(bin + Bin.state)
            }
            if state == 2 && holds(bin, key) { return (bin, nil) }
            let word = cportcullis_load_acquire_u64(bin + Bin.countWord)
            if stale == nil && state == 2 && word != Self.reclaiming {
                let touched = bin.load(fromByteOffset: Bin.touched, as: UInt32.self)
                let value = worth(word, touched: touched, now: now, stamp: stamp)
                if value == .stale {
                    stale = (bin, word, value)
                } else if value != .banned && best.map({ value < $0.2 }) ?? true {
                    best = (bin, word, value)
                }
            }
            index += 1
            if index == bins { index = 0 }
        }
        return (nil, stale ?? best)
    }
}
