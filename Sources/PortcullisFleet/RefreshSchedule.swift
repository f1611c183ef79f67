// SPDX-License-Identifier: Apache-2.0
import PortcullisCore

/// When this host's keys are put again: only those whose ban outlasts the bucket's max age from
/// their last put (a ban ending before its key would age out needs none), each at its own age of
/// half the max age plus up to a quarter (a hash of its key: spread as the puts were, never all at
/// once). Times are wall-clock milliseconds. The link's thread keeps it; the watch tells it the
/// keys of an earlier run it reads in the bucket.
struct RefreshSchedule {
    /// What a key holds (its last put) and when it is due.
    struct Entry {
        var change: FleetChange
        var putAt: UInt64
        var due: UInt64
    }

    /// The bucket's max age in milliseconds (0: none, nothing is put again).
    private(set) var maxAge: UInt64
    private var entries: [String: Entry] = [:]
    private var heap = EndHeap<String>()

    init(maxAgeMilliseconds: UInt64) { maxAge = maxAgeMilliseconds }

    /// The keys that will be put again.
    var count: Int { entries.count }

    func entry(_ key: String) -> Entry? { entries[key] }

    /// Whether a ban ending at `end` (0: never) put at `putAt` outlasts its key.
    func outlasts(end: UInt64, putAt: UInt64) -> Bool {
        maxAge > 0 && (end == 0 || end > putAt &+ maxAge)
    }

    /// When a key put at `putAt` is put again: half the max age plus up to a quarter of it.
    func due(_ key: String, putAt: UInt64) -> UInt64 {
        // FNV-1a of the key: the same spread in every run.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return putAt &+ maxAge / 2 &+ hash % (maxAge / 4 + 1)
    }

    /// `change` went to the bucket at `putAt`: scheduled if its ban outlasts the key, else
    /// forgotten; a delete is forgotten.
    mutating func put(_ change: FleetChange, at putAt: UInt64) {
        guard !change.isDelete, outlasts(end: change.end, putAt: putAt) else {
            entries[change.key] = nil
            return
        }
        let due = due(change.key, putAt: putAt)
        entries[change.key] = Entry(change: change, putAt: putAt, due: due)
        heap.push(due, change.key)
    }

    /// A key this host put in an earlier run (read in the bucket), unless one of this run is known.
    mutating func learn(_ change: FleetChange, putAt: UInt64) {
        guard entries[change.key] == nil else { return }
        put(change, at: putAt)
    }

    /// Puts `change` again at the next `takeDue` (a bucket made anew lost it).
    mutating func putSoon(_ change: FleetChange) {
        entries[change.key] = Entry(change: change, putAt: 0, due: 0)
        heap.push(0, change.key)
    }

    mutating func forget(_ key: String) { entries[key] = nil }

    /// The bucket's max age, read after binding: every key's due time again.
    mutating func setMaxAge(milliseconds: UInt64) {
        guard milliseconds != maxAge else { return }
        maxAge = milliseconds
        heap.removeAll()
        for (key, entry) in entries {
            guard entry.putAt == 0 || outlasts(end: entry.change.end, putAt: entry.putAt) else {
                entries[key] = nil
                continue
            }
            let due = entry.putAt == 0 ? 0 : due(key, putAt: entry.putAt)
            entries[key]?.due = due
            heap.push(due, key)
        }
    }

    /// Up to `limit` keys due by `now`, as they were last put (those whose ban ended meanwhile are
    /// forgotten). Each stays due until `put` says it went out again.
    mutating func takeDue(now: UInt64, limit: Int) -> [FleetChange] {
        var changes: [FleetChange] = []
        var taken = Set<String>()
        while changes.count < limit, let first = heap.first, first.end <= now {
            heap.popFirst()
            // Put again or forgotten since: not due (nor twice).
            guard let entry = entries[first.key], entry.due == first.end, taken.insert(first.key).inserted else {
                continue
            }
            guard entry.change.end == 0 || entry.change.end > now else {
                entries[first.key] = nil
                continue
            }
            changes.append(entry.change)
        }
        return changes
    }

    /// Whether `change` (taken due) is still what its key holds, and due by `now` (not put since).
    func isStillDue(_ change: FleetChange, now: UInt64) -> Bool {
        guard let entry = entries[change.key] else { return false }
        return entry.due <= now && entry.change.end == change.end
    }
}
