// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// Reads every ring of a shared-memory segment through its own reader slot (one cursor per ring).
///
/// Several threads of one process may share a reader (`poll(into:worker:workers:)`): each ring's
/// cursor has a lock word, so a ring is read by one thread at a time. With workload stealing any
/// idle thread takes any unlocked ring; without, thread `w` of `n` reads rings `w, w+n, ...`.
/// `poll` and `wait` may be called from several threads at once (hence Sendable); `close` may not.
public final class ShmReader: LogReader, @unchecked Sendable {
    let segment: ShmSegment
    /// This reader's slot in the segment's reader table.
    public let slotIndex: Int
    public let policy: SlowReaderPolicy
    /// Any idle worker thread may read any ring (see type documentation).
    public let workloadStealing: Bool
    private let entry: UnsafeMutableRawPointer
    private let lossy: Bool
    private let mask: UInt64
    private let slotCount: UInt64
    private let slotSize: Int
    private let received = AtomicCounter()
    private let lost = AtomicCounter()
    /// Slots with an impossible length (a broken or hostile writer): skipped, never waited on.
    private let corrupt = AtomicCounter()
    private var closed = false
    /// This reader's owner word in its slot.
    private var owner = OwnerWord(0)

    public var statistics: ReaderStatistics {
        var statistics = ReaderStatistics()
        statistics.linesReceived = received.load()
        statistics.linesLost = lost.load()
        statistics.linesRejected = corrupt.load()
        return statistics
    }

    /// Attaches to the segment (creating it if no writer has yet) in a free reader slot, or the
    /// slot of a reader that died. Reading starts at each ring's current head: lines published
    /// before the attach are not delivered.
    public init(
        options: ShmOptions, policy: SlowReaderPolicy = .block, workloadStealing: Bool = true
    )
        throws(TransportError)
    {
        let segment = try ShmSegment.open(options, adopt: true)
        self.segment = segment
        let layout = segment.layout
        let tag = options.readerName.map(Self.nameTag) ?? 0
        guard let (index, claimed, resumed) = Self.claimSlot(in: segment, tag: tag) else {
            throw .segmentFull(name: options.name, what: "reader slot")
        }
        segment.forgetSleepers(readerEntry: segment.readerEntry(index))  // a predecessor that died asleep
        slotIndex = index
        self.policy = policy
        self.workloadStealing = workloadStealing
        entry = segment.readerEntry(index)
        lossy = policy == .drop || layout.overwrite
        slotCount = UInt64(layout.slotsPerRing)
        mask = slotCount - 1
        slotSize = layout.slotSize
        let me = ProcessIdentity.current
        entry.storeBytes(of: me.startTime, toByteOffset: ShmField.Reader.startTime, as: UInt64.self)
        entry.storeBytes(of: policy == .drop ? 1 : 0, toByteOffset: ShmField.Reader.policy, as: UInt32.self)
        entry.storeBytes(of: UInt64(0), toByteOffset: ShmField.Reader.lost, as: UInt64.self)
        entry.storeBytes(of: tag, toByteOffset: ShmField.Reader.nameTag, as: UInt64.self)
        // Where the predecessor of this name stopped, per ring (nil: start at the heads).
        var overwrittenMeanwhile: UInt64 = 0
        let resumeTails: [UInt64]? =
            resumed
            ? (0..<layout.rings).map {
                cportcullis_load_acquire_u64(segment.cursor(ring: segment.ring($0), reader: index))
            } : nil
        for ringIndex in 0..<layout.rings {
            let ring = segment.ring(ringIndex)
            let cursor = segment.cursor(ring: ring, reader: index)
            // Pairs with the writer's store-release of head.
            let head = cportcullis_load_acquire_u64(ring + ShmField.Ring.head)
            var start = head
            if let resumeTails {
                let point = Self.resumePoint(resumeTails[ringIndex], head: head, slots: UInt64(layout.slotsPerRing))
                start = point.start
                overwrittenMeanwhile += point.missed
            }
            cportcullis_store_relaxed_u64(cursor, start)
            cportcullis_store_release_u32(cursor + 8, 0)  // lock: a dead predecessor may have held it
        }
        // Pairs with the writer's load-acquire of the owner word in minimumTail: tails (and start
        // time) before "attached".
        owner = claimed.next(state: OwnerWord.taken, pid: me.pid)
        cportcullis_store_release_u64(entry, owner.raw)
        // Start at the heads as they are now that writers can see this reader: slots a writer with
        // an older minimum may still reuse lie behind these. (A resumed reader keeps its tails: a
        // slot overwritten behind them is found by its sequence and counted lost.)
        cportcullis_fence_seq_cst()
        guard resumeTails == nil else {
            lost.add(overwrittenMeanwhile)
            return
        }
        for ringIndex in 0..<layout.rings {
            let ring = segment.ring(ringIndex)
            cportcullis_store_release_u64(
                segment.cursor(ring: ring, reader: index),
                cportcullis_load_acquire_u64(ring + ShmField.Ring.head))
        }
    }

    /// Claims a reader slot: a named reader (`tag` not 0) first the slot its predecessor of that
    /// name left, stopped or dead (`resumed`); otherwise a slot no named reader left first, so
    /// that a named reader's successor still finds its place.
    private static func claimSlot(
        in segment: ShmSegment, tag: UInt64
    )
        -> (index: Int, owner: OwnerWord, resumed: Bool)?
    {
        let slots = segment.layout.readerSlots
        let owners = (0..<slots).map { (owner: segment.readerEntry($0), lock: segment.readerLock($0)) }
        let tags = (0..<slots).map {
            segment.readerEntry($0).load(fromByteOffset: ShmField.Reader.nameTag, as: UInt64.self)
        }
        if tag != 0 {
            for index in 0..<slots where tags[index] == tag {
                if let claimed = segment.claim(slots: [owners[index]]) { return (index, claimed.owner, true) }
            }
        }
        let order = (0..<slots).filter { tags[$0] == 0 } + (0..<slots).filter { tags[$0] != 0 }
        return segment.claim(slots: order.map { owners[$0] }).map { (order[$0.index], $0.owner, false) }
    }

    /// The name's tag in the reader table (never 0, which is "unnamed").
    static func nameTag(_ name: String) -> UInt64 {
        max(name.stableTag, 1)
    }

    /// Where a resumed reader starts in a ring: its predecessor's tail, unless that lies outside
    /// the ring's last `slots` lines (overwritten: start at the oldest still there, the rest missed).
    static func resumePoint(_ tail: UInt64, head: UInt64, slots: UInt64) -> (start: UInt64, missed: UInt64) {
        let behind = head &- tail
        if behind > UInt64(Int64.max) { return (head, 0) }  // a tail ahead of the head: not a real one
        return behind > slots ? (head &- slots, behind - slots) : (tail, 0)
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        // Only if still ours: a writer that took this reader for dead may have freed it already.
        _ = cportcullis_cas_u64(entry, owner.raw, owner.next(state: OwnerWord.free, pid: 0).raw)
        segment.unlock(segment.readerLock(slotIndex))
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        poll(into: batch, worker: 0, workers: 1)
    }

    /// Reads what is available for thread `worker` of `workers` sharing this reader.
    public func poll(into batch: LineBatch, worker: Int, workers: Int) -> Int {
        let rings = segment.layout.rings
        var total = 0
        if workloadStealing || workers <= 1 {
            // Start at a different ring per worker so they spread out before they collide.
            for step in 0..<rings where !batch.isFull {
                total += drain(ring: (worker + step) % rings, into: batch)
            }
        } else {
            var ring = worker
            while ring < rings && !batch.isFull {
                total += drain(ring: ring, into: batch)
                ring += workers
            }
        }
        if total > 0 { received.add(UInt64(total)) }
        return total
    }

    /// Copies the available lines of one ring into `batch`, if no other thread holds the ring.
    @inline(__always)
    private func drain(ring ringIndex: Int, into batch: LineBatch) -> Int {
        let ring = segment.ring(ringIndex)
        let cursor = segment.cursor(ring: ring, reader: slotIndex)
        let headWord = ring + ShmField.Ring.head
        // Cheap check before taking the lock. Pairs with the writer's store-release of head.
        var head = cportcullis_load_acquire_u64(headWord)
        var tail = cportcullis_load_relaxed_u64(cursor)
        if head == tail { return 0 }
        guard cportcullis_cas_u32(cursor + 8, 0, 1) else { return 0 }
        defer { cportcullis_store_release_u32(cursor + 8, 0) }
        // Another thread of this reader may have advanced the tail since the check: read both anew.
        tail = cportcullis_load_relaxed_u64(cursor)
        head = cportcullis_load_acquire_u64(headWord)
        if head &- tail == 0 || head &- tail > UInt64(Int64.max) { return 0 }
        let slots = segment.slots(ring: ring)
        var count = 0
        var missed: UInt64 = 0
        while tail != head {
            if lossy && head &- tail > slotCount {
                missed &+= head &- slotCount &- tail  // lapped: those lines are gone
                tail = head &- slotCount
            }
            let slot = slots + Int(tail & mask) * slotSize
            let sequenceWord = slot.assumingMemoryBound(to: UInt64.self)
            // Pairs with the writer's store-release of the sequence after the slot's bytes.
            let sequence = cportcullis_load_acquire_u64(sequenceWord)
            if sequence != tail &+ 1 {
                // Overwritten (or being overwritten) by a lapping writer. A lossless reader can only
                // meet this in the instant of its attach, before the writer saw it (the writer
                // then held a stale minimum); count it and skip ahead rather than wait forever.
                if !lossy && sequence &- (tail &+ 1) > UInt64(Int64.max) { break }  // not yet written
                missed &+= 1
                tail &+= 1
                head = cportcullis_load_acquire_u64(headWord)
                if head &- tail > slotCount {
                    missed &+= head &- slotCount &- tail
                    tail = head &- slotCount
                }
                continue
            }
            let length = Int(slot.load(fromByteOffset: ShmField.Slot.length, as: UInt32.self))
            guard length <= slotSize - ShmLayout.slotHeaderSize else {
                // No writer of ours writes this: count it and go on (stopping here would wedge the
                // ring for good, and every writer on it with it).
                corrupt.add(1)
                tail &+= 1
                if tail == head { head = cportcullis_load_acquire_u64(headWord) }
                continue
            }
            guard let destination = batch.appendUninitialized(length: length) else { break }
            if length > 0 { destination.copyMemory(from: slot + ShmLayout.slotHeaderSize, byteCount: length) }
            do {
                // Seqlock validation (lossless readers too: a writer that timed out waiting passes
                // over a reader that stopped, and may be rewriting the slot as it resumes). Pairs
                // with the writer's invalidate + release fence.
                cportcullis_fence_acquire()
                if cportcullis_load_relaxed_u64(sequenceWord) != sequence {
                    batch.removeLast()
                    missed &+= 1
                    tail &+= 1
                    continue
                }
            }
            count += 1
            tail &+= 1
            if tail == head { head = cportcullis_load_acquire_u64(headWord) }
        }
        // Pairs with the writer's load-acquire of this tail in minimumTail: the slots are free.
        cportcullis_store_release_u64(cursor, tail)
        if missed > 0 {
            lost.add(missed)
            _ = cportcullis_fetch_add_u64(entry + ShmField.Reader.lost, missed)
        }
        return count
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        wait(into: batch, timeoutMilliseconds: timeoutMilliseconds, worker: 0, workers: 1)
    }

    /// `poll`, sleeping on the segment's futex until a writer publishes or the timeout passes.
    public func wait(into batch: LineBatch, timeoutMilliseconds: Int, worker: Int, workers: Int) -> Int {
        var count = poll(into: batch, worker: worker, workers: workers)
        if count > 0 || timeoutMilliseconds <= 0 { return count }
        let sequenceWord = segment.header(ShmField.wakeSequence)
        let sleepers = segment.header(ShmField.sleepers)
        let deadline = SystemClock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            let sequence = cportcullis_load_acquire_u32(sequenceWord)
            // seq_cst: pairs with the writer's fence before it reads `sleepers` (ShmSegment.wakeReaders).
            _ = cportcullis_fetch_add_seq_cst_u32(entry + ShmField.Reader.sleeping, 1)
            _ = cportcullis_fetch_add_seq_cst_u32(sleepers, 1)
            count = poll(into: batch, worker: worker, workers: workers)
            if count > 0 {
                wakeUp(sleepers)
                return count
            }
            let now = SystemClock.monotonicNanoseconds()
            if now >= deadline {
                wakeUp(sleepers)
                return 0
            }
            let remaining = deadline - now
            var timeout = timespec(tv_sec: Int(remaining / 1_000_000_000), tv_nsec: Int(remaining % 1_000_000_000))
            _ = cportcullis_futex_wait(sequenceWord.assumingMemoryBound(to: UInt32.self), sequence, &timeout)
            wakeUp(sleepers)
            count = poll(into: batch, worker: worker, workers: workers)
            if count > 0 { return count }
        }
    }
}

extension ShmReader {
    /// Leaves `sleepers` (one thread of this reader).
    @inline(__always)
    fileprivate func wakeUp(_ sleepers: UnsafeMutableRawPointer) {
        _ = cportcullis_fetch_add_seq_cst_u32(entry + ShmField.Reader.sleeping, -1)
        _ = cportcullis_fetch_add_seq_cst_u32(sleepers, -1)
    }
}
