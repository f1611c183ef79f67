// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

extension ShmSegment {
    // MARK: Liveness

    /// Every holder of a ring or reader slot holds an open-file-description lock (`F_OFD_SETLK`)
    /// on one byte of the segment file for as long as it holds the slot: byte `slotLockBase + i`
    /// for ring i, `slotLockBase + rings + j` for reader slot j (far beyond the file's end). The
    /// kernel drops it when the holder dies, whatever its pid namespace, and whether or not its
    /// /proc entry can be seen (`hidepid`, `ProtectProc`): pids alone cannot tell that.
    static let slotLockBase: Int64 = 1 << 40

    /// The lock byte of ring `ring`.
    func ringLock(_ ring: Int) -> Int64 { Self.slotLockBase + Int64(ring) }
    /// The lock byte of reader slot `reader`.
    func readerLock(_ reader: Int) -> Int64 { Self.slotLockBase + Int64(layout.rings + reader) }

    /// Takes the lock byte `byte` without waiting. - Returns: false when someone alive holds it.
    func lock(_ byte: Int64) -> Bool {
        systemCallResult { cportcullis_ofd_try_lock(fd, byte) }.isSuccess
    }

    func unlock(_ byte: Int64) {
        _ = cportcullis_ofd_unlock(fd, byte)  // ours: cannot fail but for a bad descriptor
    }

    /// Whether a live process (another open of the segment) holds the lock byte `byte`.
    func isHeld(_ byte: Int64) -> Bool {
        guard case .success(let held) = systemCallResult({ cportcullis_ofd_is_locked(fd, byte) }) else {
            return true  // unknown: taken for alive
        }
        return held == 1
    }

    /// Claims a slot for this process: a free one first, else one whose holder died (also one
    /// left "being claimed" by a process killed in the act). The slot's lock byte is taken before
    /// its owner word changes, so a slot whose lock is held is never taken, and one whose holder
    /// died (lock dropped by the kernel) always can be.
    /// - Parameter slots: each slot's owner word and lock byte.
    /// - Returns: the slot's index and the owner word now in it (state "being claimed").
    func claim(slots: [(owner: UnsafeMutableRawPointer, lock: Int64)]) -> (index: Int, owner: OwnerWord)? {
        let me = UInt32(getpid())
        for pass in 0..<2 {
            for (index, slot) in slots.enumerated() {
                let current = OwnerWord(cportcullis_load_acquire_u64(slot.owner))
                guard current.state == OwnerWord.free || pass == 1, lock(slot.lock) else { continue }
                let claimed = current.next(state: OwnerWord.claiming, pid: me)
                // The generation in the word makes this fail if anyone changed the slot meanwhile.
                if cportcullis_cas_u64(slot.owner, current.raw, claimed.raw) { return (index, claimed) }
                unlock(slot.lock)
            }
        }
        return nil
    }
}
