/// A reusable buffer of lines: the bytes of all lines back to back, and where each ends.
///
/// Writers fill one and publish it; readers receive into one. Allocated once with fixed capacities
/// and reused: `removeAll()` keeps the memory. Lines are opaque bytes (empty lines and any byte
/// values allowed); the transport frames them, so they carry no terminator.
public final class LineBatch {
    /// Most bytes (all lines together) the batch holds.
    public let byteCapacity: Int
    /// Most lines the batch holds.
    public let lineCapacity: Int

    private let bytes: UnsafeMutableRawPointer
    private let ends: UnsafeMutablePointer<Int>
    public private(set) var count = 0
    /// Bytes used by the lines held.
    public private(set) var byteCount = 0

    public init(byteCapacity: Int = 1 << 20, lineCapacity: Int = 16_384) {
        precondition(byteCapacity > 0 && lineCapacity > 0)
        self.byteCapacity = byteCapacity
        self.lineCapacity = lineCapacity
        bytes = .allocate(byteCount: byteCapacity, alignment: 64)
        ends = .allocate(capacity: lineCapacity)
    }

    deinit {
        bytes.deallocate()
        ends.deallocate()
    }

    public var isEmpty: Bool { count == 0 }
    public var isFull: Bool { count == lineCapacity }

    /// Forgets the lines; the memory stays for the next use.
    public func removeAll() {
        count = 0
        byteCount = 0
    }

    /// Whether a line of `length` bytes still fits.
    @inline(__always)
    public func canAppend(length: Int) -> Bool {
        count < lineCapacity && byteCount + length <= byteCapacity
    }

    /// Appends a copy of `line`. - Returns: false (and changes nothing) when it does not fit.
    @discardableResult
    @inline(__always)
    public func append(_ line: UnsafeRawBufferPointer) -> Bool {
        guard canAppend(length: line.count) else { return false }
        if let base = line.baseAddress, line.count > 0 {
            (bytes + byteCount).copyMemory(from: base, byteCount: line.count)
        }
        byteCount += line.count
        ends[count] = byteCount
        count += 1
        return true
    }

    /// Appends the UTF-8 bytes of `line`.
    @discardableResult
    public func append(_ line: String) -> Bool {
        var line = line
        return line.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    /// Appends `line`'s bytes.
    @discardableResult
    public func append(_ line: [UInt8]) -> Bool {
        line.withUnsafeBytes { append($0) }
    }

    /// Reserves `length` bytes for a line that the caller writes in place (a reader copying from a
    /// transport). - Returns: where to write, or nil when it does not fit. Valid until the next mutation.
    @inline(__always)
    func appendUninitialized(length: Int) -> UnsafeMutableRawPointer? {
        guard canAppend(length: length) else { return nil }
        let start = bytes + byteCount
        byteCount += length
        ends[count] = byteCount
        count += 1
        return start
    }

    /// Drops the last line (a reader that found it torn after copying).
    @inline(__always)
    func removeLast() {
        precondition(count > 0)
        count -= 1
        byteCount = count == 0 ? 0 : ends[count - 1]
    }

    /// The bytes of line `index`; valid until the batch changes.
    @inline(__always)
    public func withUnsafeLine<R>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(index >= 0 && index < count, "line index out of range")
        let start = index == 0 ? 0 : ends[index - 1]
        return try body(UnsafeRawBufferPointer(start: bytes + start, count: ends[index] - start))
    }

    /// A copy of line `index` (tests, tools; not for hot paths).
    public func line(_ index: Int) -> [UInt8] {
        withUnsafeLine(index) { Array($0) }
    }

    /// Calls `body` with every line in order.
    @inline(__always)
    public func forEachLine(_ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        var start = 0
        for index in 0..<count {
            let end = ends[index]
            try body(UnsafeRawBufferPointer(start: bytes + start, count: end - start))
            start = end
        }
    }
}
