// SPDX-License-Identifier: Apache-2.0
/// The ways offence lines travel from services to Portcullis: three transports that Portcullis
/// writes and reads, and the journal, which journald writes.
public enum TransportKind: String, Sendable, CaseIterable {
    /// Shared-memory rings: one per writer thread, every reader with its own cursor.
    case shm
    /// UNIX `SOCK_SEQPACKET` sockets: one per reader in a socket directory, lines packed per datagram.
    case socket
    /// A log file, appended in batches and tailed by each reader.
    case file
    /// The systemd journal, read through `sd_journal` (journald writes it: no `LogWriter`).
    case journal
    /// A syslog datagram socket (and optionally UDP on loopback) that rsyslog or `logger` send to.
    case syslog

    /// The kinds with a writer: the transports services (and `portcullis tap`) publish through.
    public static let writable: [TransportKind] = [.shm, .socket, .file]
}

/// What a reader does when it cannot keep up.
public enum SlowReaderPolicy: String, Sendable, CaseIterable {
    /// Lossless: writers wait for this reader (only while it lives).
    case block
    /// Writers never wait for this reader; every line it misses is counted as lost.
    case drop
}

/// Outcome of one `publish`.
public struct PublishResult: Sendable, Equatable {
    /// Lines handed to the transport.
    public var accepted = 0
    /// Lines refused: longer than the transport's limit (or, for files, containing a newline).
    public var rejected = 0
    public init(accepted: Int = 0, rejected: Int = 0) {
        self.accepted = accepted
        self.rejected = rejected
    }
}

/// Running totals of a writer.
public struct WriterStatistics: Sendable, Equatable {
    public var linesWritten: UInt64 = 0
    public var linesRejected: UInt64 = 0
    /// Lines that could not be delivered to `drop`-policy readers (sockets; shm readers count their own).
    public var linesDropped: UInt64 = 0
    /// Reader sockets not written to: their process runs as an untrusted user (`TrustedOwners`).
    public var readersRefused: UInt64 = 0
    /// Times a lossless reader that did not read held this writer for the block timeout, and was
    /// then passed over (shm) or had its lines counted lost (socket).
    public var blockTimeouts: UInt64 = 0
    public init() {}
}

/// Running totals of a reader.
public struct ReaderStatistics: Sendable, Equatable {
    public var linesReceived: UInt64 = 0
    /// Lines this reader missed and knows of (lapped in shm, dropped by socket writers).
    public var linesLost: UInt64 = 0
    /// Lines the reader refused or could not frame (file tail: a line longer than its buffer).
    public var linesRejected: UInt64 = 0
    /// Writers refused (socket peers whose uid/gid is not allowed).
    public var writersRefused: UInt64 = 0
    /// Times accepting writers paused for a second: out of file descriptors (socket readers).
    public var acceptFailures: UInt64 = 0
    /// Log files refused at the path (file transport: a symbolic link, not a regular file, or an
    /// untrusted owner), counted each time one is found there.
    public var filesRefused: UInt64 = 0
    public init() {}

    /// The totals of two readers.
    public static func + (left: ReaderStatistics, right: ReaderStatistics) -> ReaderStatistics {
        var sum = left
        sum.linesReceived += right.linesReceived
        sum.linesLost += right.linesLost
        sum.linesRejected += right.linesRejected
        sum.writersRefused += right.writersRefused
        sum.acceptFailures += right.acceptFailures
        sum.filesRefused += right.filesRefused
        return sum
    }
}

/// The writer side: publishes batches of lines. One instance per writer thread.
public protocol LogWriter: AnyObject {
    /// Publishes every line of `batch` that the transport can carry, in order.
    func publish(_ batch: LineBatch) throws(TransportError) -> PublishResult
    var statistics: WriterStatistics { get }
    /// Releases the writer's resources (ring, connections, file); further publishes fail.
    func close()
}

/// The reader side: receives lines into a reusable batch.
public protocol LogReader: AnyObject {
    /// Appends the lines available now (at most what fits) without waiting. - Returns: how many.
    func poll(into batch: LineBatch) throws(TransportError) -> Int
    /// Like `poll`, but waits up to `timeoutMilliseconds` for the first line. - Returns: how many.
    func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int
    var statistics: ReaderStatistics { get }
    /// Detaches: writers stop waiting for (or sending to) this reader.
    func close()
}
