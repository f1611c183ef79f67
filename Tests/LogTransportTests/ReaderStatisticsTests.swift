// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport
@testable import LogTransport

/// A reader handed to the thread that reads it, as the daemon hands one to its worker.
private final class WorkerReader: @unchecked Sendable {
    let reader: LogReader
    init(_ reader: LogReader) { self.reader = reader }
}

@Suite("Reader statistics across threads")
struct ReaderStatisticsTests {
    /// The daemon's shape: a worker thread receives, another thread (metrics, control, main) reads
    /// the statistics meanwhile. The counts must reach every line; under ThreadSanitizer (see
    /// BUILD.md, "Tests") the reads must not race the worker's counting.
    @Test(
        "statistics read from another thread while a worker receives reach every line",
        arguments: TransportKind.writable)
    func statisticsWhileReceiving(kind: TransportKind) throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var configuration = InProcessTests().configuration(kind, scratch)
        configuration.shm.slotsPerRing = 8192  // every line fits: the writer never waits for the worker
        let group = try configuration.makeReaders(workers: 1)
        defer { group.close() }
        let writer = try configuration.makeWriter()
        defer { writer.close() }
        let worker = WorkerReader(group.readers[0])
        let done = AtomicFlag()
        let received = DispatchGroup()
        let counted = Counted()
        DispatchQueue.global().async(group: received) {
            let batch = LineBatch(byteCapacity: 1 << 16, lineCapacity: 256)
            while !done.isSet {
                batch.removeAll()
                let count = (try? worker.reader.wait(into: batch, timeoutMilliseconds: 20)) ?? 0
                counted.add(count)
            }
        }
        let lines = 5_000
        let batch = LineBatch()
        for start in stride(from: 0, to: lines, by: 100) {
            batch.removeAll()
            for number in start..<(start + 100) { batch.append("line \(number)") }
            #expect(try writer.publish(batch).accepted == 100)
            _ = group.statistics  // read while the worker counts
        }
        let deadline = Date().addingTimeInterval(20)
        while group.statistics.linesReceived < UInt64(lines) && Date() < deadline { usleep(1_000) }
        done.set()
        received.wait()
        #expect(group.statistics.linesReceived == UInt64(lines))
        #expect(counted.total == lines, "the worker received every line once")
    }
}

/// Lines the worker received, read by the test's thread once the worker is done.
private final class Counted: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ count: Int) { lock.withLock { value += count } }
    var total: Int { lock.withLock { value } }
}
