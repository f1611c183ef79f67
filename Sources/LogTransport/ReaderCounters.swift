// SPDX-License-Identifier: Apache-2.0
import Synchronization

/// A counter shared by the threads of one process (Synchronization's `Atomic`, in a class so that
/// readers and their shares can hold it).
final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    @inline(__always) func add(_ amount: UInt64) { value.wrappingAdd(amount, ordering: .relaxed) }
    @inline(__always) func load() -> UInt64 { value.load(ordering: .relaxed) }
}

/// A reader's running totals: the thread that reads adds to them, any thread (the metrics server,
/// the control socket, the main loop, through `ReaderGroup.statistics`) reads them. One relaxed
/// atomic per field: the readers add once per batch, or per rare event (a refused writer, a
/// rejected line), never a lock per line. The fields are read one by one, so a snapshot taken
/// while a batch is counted may hold one field's new value and another's old.
final class ReaderCounters: Sendable {
    let linesReceived = AtomicCounter()
    let linesLost = AtomicCounter()
    let linesRejected = AtomicCounter()
    let writersRefused = AtomicCounter()
    let acceptFailures = AtomicCounter()
    let filesRefused = AtomicCounter()

    /// The totals now.
    var statistics: ReaderStatistics {
        var statistics = ReaderStatistics()
        statistics.linesReceived = linesReceived.load()
        statistics.linesLost = linesLost.load()
        statistics.linesRejected = linesRejected.load()
        statistics.writersRefused = writersRefused.load()
        statistics.acceptFailures = acceptFailures.load()
        statistics.filesRefused = filesRefused.load()
        return statistics
    }
}
