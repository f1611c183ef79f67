// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Writes lines into one ring of a shared-memory segment: a single producer per ring, so one
/// `ShmWriter` per writer thread. Lines are copied into fixed-size slots; the head index is
/// published (store-release) once per batch, or every `publishInterval` lines of a long batch.
public final class ShmWriter: LogWriter {
    let segment: ShmSegment
    /// The ring this writer owns.
    public let ringIndex: Int
    private let ring: UnsafeMutableRawPointer
    private let slots: UnsafeMutableRawPointer
    private let mask: UInt64
    private let slotCount: UInt64
    private let slotSize: Int
    private let maxLine: Int
    private let overwrite: Bool
    /// How long a full ring waits for a lossless reader that does not read.
    private let blockTimeout: UInt64
    /// Lossless readers that made this writer wait past `blockTimeout`, with their tail then:
    /// passed over (lossy for that stretch; their reader counts what it missed) until they read.
    private var stalled: [Int: UInt64] = [:]
    private var head: UInt64
    private var published: UInt64
    /// The slowest lossless reader's tail as last read; re-read only when the ring looks full.
    private var cachedMinTail: UInt64
    private var closed = false
    /// This writer's owner word in the ring header.
    private var owner = OwnerWord(0)
    public private(set) var statistics = WriterStatistics()

    /// Lines written before the head is published inside one long batch.
    static let publishInterval: UInt64 = 1024

    /// Opens (or creates) the segment and claims a free ring, or the ring of a writer that died:
    /// a restarted writer continues where its ring's head stands, and readers just go on reading.
    public init(options: ShmOptions) throws(TransportError) {
        let segment = try ShmSegment.open(options, adopt: false)
        self.segment = segment
        let layout = segment.layout
        let owners = (0..<layout.rings).map {
            (owner: segment.ring($0) + ShmField.Ring.owner, lock: segment.ringLock($0))
        }
        guard let (index, claimed) = segment.claim(slots: owners) else {
            throw .segmentFull(name: options.name, what: "ring")
        }
        ringIndex = index
        ring = segment.ring(index)
        slots = segment.slots(ring: ring)
        slotCount = UInt64(layout.slotsPerRing)
        mask = slotCount - 1
        slotSize = layout.slotSize
        maxLine = layout.slotSize - ShmLayout.slotHeaderSize
        overwrite = layout.overwrite
        blockTimeout = UInt64(options.blockTimeoutMilliseconds) * 1_000_000
        let me = ProcessIdentity.current
        cportcullis_store_release_u64(ring + ShmField.Ring.writerStartTime, me.startTime)
        // A dead writer's unpublished slots are simply overwritten: only published lines exist.
        head = cportcullis_load_acquire_u64(ring + ShmField.Ring.head)
        published = head
        cachedMinTail = head
        owner = claimed.next(state: OwnerWord.taken, pid: me.pid)
        // Pairs with the load-acquire of the owner word by claimers: start time before "taken".
        cportcullis_store_release_u64(ring + ShmField.Ring.owner, owner.raw)
        cachedMinTail = minimumTail()
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        publish()
        // Only if still ours: a writer taken for dead may have lost the ring to another already.
        _ = cportcullis_cas_u64(ring + ShmField.Ring.owner, owner.raw, owner.next(state: OwnerWord.free, pid: 0).raw)
        segment.unlock(segment.ringLock(ringIndex))
    }

    /// Longest line this writer's slots hold.
    public var maxLineLength: Int { maxLine }

    public func publish(_ batch: LineBatch) throws(TransportError) -> PublishResult {
        precondition(!closed, "publish on a closed ShmWriter")
        // The per-line loop works on locals: stored `var`s of a class are checked for exclusive
        // access at run time on every write.
        var head = self.head
        var published = self.published
        var cachedMinTail = self.cachedMinTail
        var accepted = 0
        var rejected = 0
        let (slots, mask, slotSize, maxLine, slotCount, overwrite) =
            (self.slots, self.mask, self.slotSize, self.maxLine, self.slotCount, self.overwrite)
        batch.forEachLine { line in
            guard line.count <= maxLine else {
                rejected += 1
                return
            }
            if !overwrite && head &- cachedMinTail >= slotCount {
                self.head = head
                cachedMinTail = waitForSpace()
                published = head
            }
            let slot = slots + Int(head & mask) * slotSize
            let sequence = slot.assumingMemoryBound(to: UInt64.self)
            // Seqlock: invalidate, write, validate. A lossy reader copying this slot sees the
            // sequence change and discards its copy (pairs with the reader's acquire fence + reload).
            cportcullis_store_relaxed_u64(sequence, 0)
            cportcullis_fence_release()
            slot.storeBytes(of: UInt32(line.count), toByteOffset: ShmField.Slot.length, as: UInt32.self)
            if line.count > 0 {
                (slot + ShmLayout.slotHeaderSize).copyMemory(from: line.baseAddress!, byteCount: line.count)
            }
            // Pairs with the reader's load-acquire of the sequence before it copies.
            cportcullis_store_release_u64(sequence, head &+ 1)
            head &+= 1
            accepted += 1
            if head &- published >= Self.publishInterval {
                self.head = head
                publish()
                published = head
            }
        }
        self.head = head
        self.cachedMinTail = cachedMinTail
        publish()
        statistics.linesWritten += UInt64(accepted)
        if rejected > 0 {
            statistics.linesRejected += UInt64(rejected)
            _ = cportcullis_fetch_add_u64(ring + ShmField.Ring.rejected, UInt64(rejected))
        }
        return PublishResult(accepted: accepted, rejected: rejected)
    }

    /// Makes the lines written so far visible to readers and wakes sleeping ones.
    @inline(__always)
    private func publish() {
        guard head != published else { return }
        // Pairs with the readers' load-acquire of head: slot contents before the index.
        cportcullis_store_release_u64(ring + ShmField.Ring.head, head)
        published = head
        segment.wakeReaders()
    }

    /// The tail of reader slot `reader` if an attached lossless (`block`) reader holds it.
    @inline(__always)
    private func losslessTail(_ reader: Int) -> UInt64? {
        let entry = segment.readerEntry(reader)
        // Pairs with the reader's store-release of its state after it set its tails.
        guard OwnerWord(cportcullis_load_acquire_u64(entry)).state == OwnerWord.taken,
            entry.load(fromByteOffset: ShmField.Reader.policy, as: UInt32.self) == 0
        else { return nil }
        // Pairs with the reader's store-release of its tail after copying lines out.
        return cportcullis_load_acquire_u64(segment.cursor(ring: ring, reader: reader))
    }

    /// The smallest tail among attached lossless (`block`) readers; `head` when there is none.
    private func minimumTail() -> UInt64 {
        var minimum = head
        for reader in 0..<segment.layout.readerSlots {
            guard let tail = losslessTail(reader) else { continue }
            if stalled[reader] != nil {
                // Passed over until it has caught up to half a ring behind: a reader that reads
                // a trickle would otherwise hold the writer for a timeout at every wait.
                if head &- tail >= slotCount / 2 { continue }
                stalled[reader] = nil
            }
            if head &- tail > head &- minimum { minimum = tail }
        }
        return minimum
    }

    /// Waits until the slowest lossless reader frees a slot. Readers that died are detached (every
    /// 10 ms of waiting), so a killed reader holds the writer for a bounded time only; a live one
    /// that does not read (stopped, stuck) holds it for `blockTimeout`, then is passed over until
    /// it reads again: its reader counts the lines it missed (`lost`), the writer the timeout.
    private func waitForSpace() -> UInt64 {
        publish()
        var spins = 0
        let start = SystemClock.monotonicNanoseconds()
        var lastLivenessCheck = start
        while true {
            let minimum = minimumTail()
            if head &- minimum < slotCount { return minimum }
            if SystemClock.monotonicNanoseconds() - start > blockTimeout {
                passOverSlowReaders()
                statistics.blockTimeouts += 1
                continue
            }
            spins += 1
            if spins < 64 {
                cportcullis_cpu_relax()
            } else if spins < 128 {
                sched_yield()
            } else {
                SystemClock.sleep(nanoseconds: 50_000)
            }
            let now = SystemClock.monotonicNanoseconds()
            if now - lastLivenessCheck > 10_000_000 {
                lastLivenessCheck = now
                detachDeadReaders()
            }
        }
    }

    /// Marks every lossless reader whose tail holds the ring full as stalled.
    private func passOverSlowReaders() {
        for reader in 0..<segment.layout.readerSlots {
            if let tail = losslessTail(reader), head &- tail >= slotCount { stalled[reader] = tail }
        }
    }

    private func detachDeadReaders() {
        for reader in 0..<segment.layout.readerSlots {
            let entry = segment.readerEntry(reader)
            let current = OwnerWord(cportcullis_load_acquire_u64(entry))
            // Its lock byte tells, not its pid (hidden /proc, another pid namespace, a reused pid).
            guard current.state == OwnerWord.taken, !segment.isHeld(segment.readerLock(reader)) else { continue }
            // The generation makes this fail if the slot changed hands since it was read.
            if cportcullis_cas_u64(entry, current.raw, current.next(state: OwnerWord.free, pid: 0).raw) {
                segment.forgetSleepers(readerEntry: entry)
            }
        }
    }
}
