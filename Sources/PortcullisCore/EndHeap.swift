// SPDX-License-Identifier: Apache-2.0
/// Ends and what ends then, earliest first: a binary min-heap, O(log n) per push and pop. The
/// daemon's expiry schedule and the CrowdSec bouncer's decisions use it (each skips entries it
/// has since replaced: a lazy deletion).
public struct EndHeap<Key>: Sendable where Key: Sendable {
    public struct Entry: Sendable {
        public let end: UInt64
        public let key: Key

        @inlinable init(end: UInt64, key: Key) {
            self.end = end
            self.key = key
        }
    }

    @usableFromInline var entries: [Entry] = []

    public init(capacity: Int = 0) { entries.reserveCapacity(capacity) }

    public var count: Int { entries.count }
    public var first: Entry? { entries.first }
    /// Every entry, in no particular order.
    public var all: [Entry] { entries }

    @inlinable
    public mutating func push(_ end: UInt64, _ key: Key) {
        entries.append(Entry(end: end, key: key))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if entries[parent].end <= entries[child].end { break }
            entries.swapAt(parent, child)
            child = parent
        }
    }

    /// Removes and returns the earliest entry.
    @inlinable
    @discardableResult
    public mutating func popFirst() -> Entry? {
        guard let first = entries.first else { return nil }
        let last = entries.removeLast()
        guard !entries.isEmpty else { return first }
        entries[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < entries.count && entries[left].end < entries[smallest].end { smallest = left }
            if right < entries.count && entries[right].end < entries[smallest].end { smallest = right }
            if smallest == parent { return first }
            entries.swapAt(parent, smallest)
            parent = smallest
        }
    }

    public mutating func removeAll() { entries.removeAll(keepingCapacity: true) }

    /// Room for `count` entries in all.
    public mutating func reserve(_ count: Int) { entries.reserveCapacity(count) }
}
