// SPDX-License-Identifier: Apache-2.0
/// Readers for the threads that share one stream of lines: each line reaches exactly one of them.
/// What a consumer with several worker threads (the daemon) asks a transport for, so that it never
/// needs to know which transport it reads.
public final class ReaderGroup {
    /// One reader per thread, in thread order.
    public let readers: [LogReader]
    /// The readers that own the transport's resources (shm: the one reader whose rings the
    /// threads divide; socket: every reader), for statistics and closing.
    private let owners: [LogReader]
    /// Why the group has fewer readers than threads asked for, if it has.
    public let note: String?

    init(readers: [LogReader], owners: [LogReader], note: String? = nil) {
        self.readers = readers
        self.owners = owners
        self.note = note
    }

    /// The group's totals.
    public var statistics: ReaderStatistics {
        owners.reduce(ReaderStatistics()) { $0 + $1.statistics }
    }

    /// Detaches every reader from the transport.
    public func close() {
        for owner in owners { owner.close() }
    }
}

/// One thread's share of a shared-memory reader: the rings it takes are `worker` of `workers`
/// (with work stealing, any ring another thread is not draining).
final class ShmReaderShare: LogReader {
    private let reader: ShmReader
    private let worker: Int
    private let workers: Int

    init(_ reader: ShmReader, worker: Int, workers: Int) {
        self.reader = reader
        self.worker = worker
        self.workers = workers
    }

    func poll(into batch: LineBatch) throws(TransportError) -> Int {
        reader.poll(into: batch, worker: worker, workers: workers)
    }

    func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        reader.wait(into: batch, timeoutMilliseconds: timeoutMilliseconds, worker: worker, workers: workers)
    }

    var statistics: ReaderStatistics { reader.statistics }

    func close() { reader.close() }
}

extension TransportConfiguration {
    /// Readers for `workers` threads sharing the stream. shm: shares of one reader; socket: readers
    /// sharing the writers' connections; file and journal: one reader (a file is tailed, and the
    /// journal read, by one thread; the group's `note` says so when more were asked for).
    public func makeReaders(policy: SlowReaderPolicy = .block, workers: Int) throws(TransportError) -> ReaderGroup {
        let count = max(workers, 1)
        switch kind {
        case .shm:
            let reader = try ShmReader(options: shm, policy: policy, workloadStealing: workloadStealing)
            let shares = (0..<count).map { ShmReaderShare(reader, worker: $0, workers: count) }
            return ReaderGroup(readers: shares, owners: [reader])
        case .socket:
            let primary = try SocketReader(options: socket, policy: policy)
            var readers: [LogReader] = [primary]
            do throws(TransportError) {
                for _ in 1..<count { readers.append(try SocketReader(sharing: primary)) }
            } catch {
                for reader in readers { reader.close() }
                throw error
            }
            return ReaderGroup(readers: readers, owners: readers)
        case .file:
            let reader = try FileReader(options: file)
            let note =
                count > 1
                ? "file transport: one worker tails the file (--workers \(count) applies to shm and socket)" : nil
            return ReaderGroup(readers: [reader], owners: [reader], note: note)
        case .journal:
            // sd_journal is not thread-safe: one thread reads it.
            let reader = try JournalReader(options: journal)
            let note =
                count > 1
                ? "journal source: one worker reads the journal (--workers \(count) applies to shm and socket)" : nil
            return ReaderGroup(readers: [reader], owners: [reader], note: note)
        case .syslog:
            // One socket, one reader: datagrams come in one queue.
            let reader = try SyslogReader(options: syslog)
            let note =
                count > 1
                ? "syslog source: one worker reads the socket (--workers \(count) applies to shm and socket)" : nil
            return ReaderGroup(readers: [reader], owners: [reader], note: note)
        }
    }
}
