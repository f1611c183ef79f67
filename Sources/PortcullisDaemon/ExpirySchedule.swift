import Glibc
import BanEngine

/// When each ban ends, earliest first: workers add bans, the expiry thread takes the due ones.
/// A client banned again before its old ban ended keeps only its latest end.
final class ExpirySchedule: @unchecked Sendable {
    private struct Entry {
        let end: UInt64
        let key: AddressKey
    }

    private var heap: [Entry] = []
    private var latest: [AddressKey: UInt64] = [:]
    private let lock = NSLockLike()

    /// Room for this many bans is made up front: growing the dictionary rehashes every entry
    /// while a worker waits (measured: milliseconds at tens of thousands of bans).
    init(capacity: Int = 1 << 17) {
        heap.reserveCapacity(capacity)
        latest.reserveCapacity(capacity)
    }

    var count: Int { lock.withLock { latest.count } }

    func add(_ key: AddressKey, end: UInt64) {
        lock.withLock {
            latest[key] = end
            heap.append(Entry(end: end, key: key))
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                if heap[parent].end <= heap[child].end { break }
                heap.swapAt(parent, child)
                child = parent
            }
        }
    }

    /// Removes and returns the clients whose ban ends at or before `now`.
    func takeDue(now: UInt64) -> [AddressKey] {
        lock.withLock {
            var due: [AddressKey] = []
            while let first = heap.first, first.end <= now {
                let last = heap.removeLast()
                if !heap.isEmpty {
                    heap[0] = last
                    var parent = 0
                    while true {
                        let left = 2 * parent + 1
                        let right = left + 1
                        var smallest = parent
                        if left < heap.count && heap[left].end < heap[smallest].end { smallest = left }
                        if right < heap.count && heap[right].end < heap[smallest].end { smallest = right }
                        if smallest == parent { break }
                        heap.swapAt(parent, smallest)
                        parent = smallest
                    }
                }
                // An older end of a client banned again since: not due.
                if latest[first.key] == first.end {
                    latest.removeValue(forKey: first.key)
                    due.append(first.key)
                }
            }
            return due
        }
    }
}

/// A pthread mutex (Foundation-free).
final class NSLockLike: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
