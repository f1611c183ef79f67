// SPDX-License-Identifier: Apache-2.0
/// A reusable buffer of lines: the bytes of all lines back to back, and where each ends.
///
/// Writers fill one and publish it; readers receive into one. Allocated once with fixed capacities
/// and reused: `removeAll()` keeps the memory. Lines are opaque bytes (empty lines and any byte
/// values allowed); the transport frames them, so they carry no terminator.
///
/// The counts live behind a pointer rather than in stored `var`s: a class's stored properties get
/// a dynamic exclusivity check on every write, which cost more than the copy itself per line.
public final class LineBatch {
    /// Most bytes (all lines together) the batch holds.
    public let byteCapacity: Int
    /// Most lines the batch holds.
    public let lineCapacity: Int

    @usableFromInline let bytes: UnsafeMutableRawPointer
    @usableFromInline let ends: UnsafeMutablePointer<Int>
    /// [0]: lines held, [1]: bytes used.
    @usableFromInline let counts: UnsafeMutablePointer<Int>

    public init(byteCapacity: Int = 1 << 20, lineCapacity: Int = 16_384) {
        precondition(byteCapacity > 0 && lineCapacity > 0)
        self.byteCapacity = byteCapacity
        self.lineCapacity = lineCapacity
        bytes = .allocate(byteCount: byteCapacity, alignment: 64)
        ends = .allocate(capacity: lineCapacity)
        counts = .allocate(capacity: 2)
        counts.initialize(repeating: 0, count: 2)
    }

    deinit {
        bytes.deallocate()
        ends.deallocate()
        counts.deallocate()
    }

    /// Lines held.
    @inlinable public var count: Int { counts[0] }
    /// Bytes used by the lines held.
    @inlinable public var byteCount: Int { counts[1] }
    @inlinable public var isEmpty: Bool { counts[0] == 0 }
    @inlinable public var isFull: Bool { counts[0] == lineCapacity }

    /// Forgets the lines; the memory stays for the next use.
    @inlinable public func removeAll() {
        counts[0] = 0
        counts[1] = 0
    }

    /// Whether a line of `length` bytes still fits.
    @inlinable @inline(__always)
    public func canAppend(length: Int) -> Bool {
        counts[0] < lineCapacity && counts[1] + length <= byteCapacity
    }

    /// Appends a copy of `line`. - Returns: false (and changes nothing) when it does not fit.
    @inlinable @inline(__always) @discardableResult
    public func append(_ line: UnsafeRawBufferPointer) -> Bool {
        guard let destination = appendUninitialized(length: line.count) else { return false }
        if line.count > 0 { destination.copyMemory(from: line.baseAddress!, byteCount: line.count) }
        return true
    }

    /// Appends the UTF-8 bytes of `line`.
    @discardableResult
    public func append(_ line: String) -> Bool {
        var line = line
        return line.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Appends `line`'s bytes.
    @inlinable @discardableResult
    public func append(_ line: [UInt8]) -> Bool {
        line.withUnsafeBytes { append($0) }
    }

    /// Reserves `length` bytes for a line that the caller writes in place (a reader copying from a
    /// transport, a service formatting its line). - Returns: where to write, or nil when it does
    /// not fit. Valid until the next change of the batch.
    @inlinable @inline(__always)
    public func appendUninitialized(length: Int) -> UnsafeMutableRawPointer? {
        let count = counts[0]
        let used = counts[1]
        guard count < lineCapacity && used + length <= byteCapacity else { return nil }
        ends[count] = used + length
        counts[0] = count + 1
        counts[1] = used + length
        return bytes + used
    }

    /// Shortens the last line to `length` bytes (a writer that reserved room for the longest line
    /// with `appendUninitialized` and wrote fewer).
    @inlinable @inline(__always)
    public func shortenLast(to length: Int) {
        let count = counts[0]
        precondition(count > 0)
        let start = count == 1 ? 0 : ends[count - 2]
        precondition(length <= ends[count - 1] - start, "a line can only be shortened")
        ends[count - 1] = start + length
        counts[1] = start + length
    }

    /// Drops the last line (a reader that found it torn after copying).
    @inlinable @inline(__always)
    func removeLast() {
        precondition(counts[0] > 0)
        counts[0] -= 1
        counts[1] = counts[0] == 0 ? 0 : ends[counts[0] - 1]
    }

    /// The bytes of line `index`; valid until the batch changes.
    @inlinable @inline(__always)
    public func withUnsafeLine<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(index >= 0 && index < counts[0], "line index out of range")
        let start = index == 0 ? 0 : ends[index - 1]
        return try body(UnsafeRawBufferPointer(start: bytes + start, count: ends[index] - start))
    }

    /// A copy of line `index` (tests, tools; not for hot paths).
    public func line(_ index: Int) -> [UInt8] {
        withUnsafeLine(index) { Array($0) }
    }

    /// Calls `body` with every line in order.
    @inlinable @inline(__always)
    public func forEachLine(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var start = 0
        let count = counts[0]
        for index in 0..<count {
            let end = ends[index]
            try body(UnsafeRawBufferPointer(start: bytes + start, count: end - start))
            start = end
        }
    }
}
