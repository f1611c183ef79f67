// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import LogTransport
import PerfReference
import PortcullisCommandLine
import PortcullisCore
import PortcullisSystem

/// Suite `transports`: lines per second per reader through each transport, one writer thread to
/// one or two reader threads in this process, every line checked for loss and duplication; and the
/// journald and syslog sources against the file tail reading the same lines.
struct TransportsSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transports",
        abstract:
            "Lines/s per reader: shm vs a C ring, sockets one-line-per-write vs sendmmsg vs packed, file tails, "
            + "the journal and the syslog socket vs a file.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "Lines per round for the fast cases (shm, C ring, packed sockets, batched files).")
    var lines = 5_000_000

    @Option(help: "Lines per round for the one-line-per-message cases.")
    var slowLines = 300_000

    @Option(help: "Directory for the socket directories and log files of the rounds.")
    var scratch = "/tmp"

    @Option(help: "SO_SNDBUF (and SO_RCVBUF) of the enlarged-buffer socket cases, in bytes.")
    var bigBuffer = 4 << 20

    @Option(help: "Entries of the journal the journal source reads (against a file of the same lines).")
    var journalEntries = 100_000

    @Option(help: "Messages the syslog source receives (against a file of the lines it makes of them).")
    var syslogMessages = 100_000

    @Option(help: "Measure only these transports (repeatable: shm, socket, file, journal, syslog); default all.")
    var only: [TransportKind] = []

    func validate() throws {
        if lines < 1000 || slowLines < 1000 { throw ValidationError("--lines and --slow-lines must be at least 1000") }
        if journalEntries < 1000 { throw ValidationError("--journal-entries must be at least 1000") }
        if syslogMessages < 1000 { throw ValidationError("--syslog-messages must be at least 1000") }
    }

    /// The text after each line's 16-digit number: a realistic offence line.
    static let suffix =
        " " + OffenceLine.text(time: UTCTime(secondsSinceEpoch: 1_795_718_566), address: IPAddress("198.18.7.13")!)

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    struct Figure {
        var rate: Double
        var lost: UInt64
        var duplicated: UInt64
    }

    func measure() throws -> [Measurement] {
        var results: [Measurement] = []
        /// Measures a figure and its reference in alternating rounds, so both see the same
        /// stretch of this machine's weather.
        func row(
            _ name: String, _ round: () throws -> Figure, _ reference: String,
            _ referenceRound: () throws -> Figure
        ) throws {
            var figures: [Figure] = []
            var references: [Figure] = []
            for _ in 0..<options.rounds {
                figures.append(try round())
                references.append(try referenceRound())
            }
            let figure = combine(figures)
            let referenceFigure = combine(references)
            // Each round and its reference ran back to back: the median of their ratios is steadier
            // than the ratio of the medians when the machine changes pace between rounds.
            let ratio = median(zip(figures, references).map { $0.rate / $1.rate })
            var measurement = Measurement(
                suite: "transports", name: name, unit: "lines/s", value: figure.rate,
                reference: reference, referenceValue: referenceFigure.rate,
                rounds: options.rounds, ratio: ratio)
            measurement.lost = figure.lost
            measurement.duplicated = figure.duplicated
            measurement.referenceLost = referenceFigure.lost
            measurement.referenceDuplicated = referenceFigure.duplicated
            results.append(measurement)
        }

        let kinds = only.isEmpty ? TransportKind.allCases : only
        let big: (inout TransportConfiguration) -> Void = {
            $0.socket.sendBuffer = bigBuffer
            $0.socket.receiveBuffer = bigBuffer
        }
        let unpacked: (inout TransportConfiguration) -> Void = {
            $0.socket.linesPerDatagram = 1
            $0.socket.datagramsPerCall = 1
        }
        let mebibytes = "\(bigBuffer >> 20) MiB buffers"
        for readers in [1, 2] {
            let arrow = "1→\(readers)"
            let shm = { try runSwift(.shm, readers: readers, lines: lines, batch: 256) }
            let packed = { try runSwift(.socket, readers: readers, lines: lines, batch: 256) }
            let thesis = { try runSwift(.socket, readers: readers, lines: slowLines, batch: 256, unpacked) }
            if kinds.contains(.shm) {
                try row("shm \(arrow)", shm, "C reference ring \(arrow)") { try runReferenceRing(readers: readers) }
            }
            if kinds.contains(.shm) && kinds.contains(.socket) {
                try row("shm \(arrow)", shm, "socket packed \(arrow)", packed)
            }
            guard kinds.contains(.socket) else { continue }
            try row(
                "socket sendmmsg \(arrow)",
                {
                    try runSwift(.socket, readers: readers, lines: slowLines, batch: 256) {
                        $0.socket.linesPerDatagram = 1
                    }
                }, "socket line per write \(arrow)", thesis)
            try row("socket packed \(arrow)", packed, "socket line per write \(arrow)", thesis)
            try row(
                "socket line per write \(arrow) \(mebibytes)",
                {
                    try runSwift(.socket, readers: readers, lines: slowLines, batch: 256) {
                        big(&$0)
                        unpacked(&$0)
                    }
                }, "same, default buffers", thesis)
            try row(
                "socket packed \(arrow) \(mebibytes)",
                {
                    try runSwift(.socket, readers: readers, lines: lines, batch: 256, big)
                }, "same, default buffers", packed)
        }
        if kinds.contains(.journal) { try journalRow(row) }
        if kinds.contains(.syslog) { try syslogRow(row) }
        guard kinds.contains(.file) else { return results }
        let batched = { try runSwift(.file, readers: 1, lines: lines, batch: 256) }
        try row("file batched appends, io_uring tail 1→1", batched, "file write per line 1→1") {
            try runSwift(.file, readers: 1, lines: slowLines, batch: 1)
        }
        try row(
            "file batched appends, io_uring tail 1→2",
            {
                try runSwift(.file, readers: 2, lines: lines, batch: 256)
            }, "same 1→1", batched)
        try row(
            "file batched appends, read() tail 1→1",
            {
                try runSwift(.file, readers: 1, lines: lines, batch: 256) { $0.file.readMethod = .read }
            }, "io_uring tail 1→1", batched)
        return results
    }

    private func combine(_ figures: [Figure]) -> Figure {
        Figure(
            rate: median(figures.map(\.rate)), lost: figures.reduce(0) { $0 + $1.lost },
            duplicated: figures.reduce(0) { $0 + $1.duplicated })
    }

    private var cpus: (writer: Int32, reader: Int32) {
        sysconf(Int32(_SC_NPROCESSORS_ONLN)) >= 2 ? (0, 1) : (-1, -1)
    }

    private func runReferenceRing(readers: Int) throws -> Figure {
        var result = pc_reference_ring_result()
        let status = Self.suffix.withCString {
            pc_reference_ring_run(
                UInt64(lines), UInt32(ShmOptions().slotsPerRing), UInt32(ShmOptions().slotSize),
                Int32(readers), 256, $0, strlen($0), cpus.writer, cpus.reader, &result)
        }
        guard status == 0 else { throw MeasurementError(description: "the C reference ring failed: errno \(errno)") }
        return Figure(rate: Double(lines) / result.seconds, lost: result.lost, duplicated: result.duplicates)
    }

    nonisolated(unsafe) private static var roundNumber = 0

    /// One round: `readers` reader threads attach, one writer thread sends `lines` lines in
    /// publishes of `batch`, each reader checks every line's number. - Returns: the slowest
    /// reader's lines/s (from the writer's start to that reader's last line).
    private func runSwift(
        _ kind: TransportKind, readers: Int, lines: Int, batch: Int,
        _ adjust: (inout TransportConfiguration) -> Void = { _ in }
    ) throws -> Figure {
        Self.roundNumber += 1
        let tag = "pcperf-\(getpid())-\(Self.roundNumber)"
        var configuration = TransportConfiguration(kind: kind)
        configuration.shm.name = "/" + tag
        configuration.socket.directory = scratch + "/" + tag
        configuration.file.path = scratch + "/" + tag + ".log"
        configuration.file.startAtBeginning = true
        configuration.shm.rings = 1  // one ring per writer thread, and there is one writer
        adjust(&configuration)
        defer {
            shm_unlink(configuration.shm.name)
            try? FileManager.default.removeItem(atPath: configuration.socket.directory)
            unlink(configuration.file.path)
        }
        let board = Board()
        let ready = DispatchSemaphore(value: 0)
        let cpus = self.cpus
        for _ in 0..<readers {
            let thread = Thread { [configuration] in
                if cpus.reader >= 0 { try? SystemThread.pinCurrent(to: Int(cpus.reader)) }
                do {
                    let reader = try configuration.makeReader()
                    defer { reader.close() }
                    ready.signal()
                    board.record(try Self.read(reader, lines: lines, board: board))
                } catch {
                    board.fail("reader: \(error)")
                    ready.signal()
                }
            }
            thread.start()
        }
        for _ in 0..<readers { ready.wait() }
        if let failure = board.failure { throw MeasurementError(description: failure) }
        let go = DispatchSemaphore(value: 0)
        let writer = Thread { [configuration] in
            if cpus.writer >= 0 { try? SystemThread.pinCurrent(to: Int(cpus.writer)) }
            do {
                // Attached (segment mapped, sockets connected, file opened) before the clock starts.
                let writer = try configuration.makeWriter()
                defer { writer.close() }
                ready.signal()
                go.wait()
                let lineBatch = LineBatch(byteCapacity: 1 << 20, lineCapacity: batch)
                var number = 0
                let suffix = Array(Self.suffix.utf8)
                // Lines are formatted in place in the batch, as a service would (one copy less).
                while number < lines {
                    lineBatch.removeAll()
                    while lineBatch.count < batch && number < lines {
                        let line = lineBatch.appendUninitialized(length: 16 + suffix.count)!
                        formatHex(number, into: line)
                        suffix.withUnsafeBytes { (line + 16).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                        number += 1
                    }
                    let result = try writer.publish(lineBatch)
                    if result.accepted != lineBatch.count { board.fail("writer: \(result.rejected) lines rejected") }
                }
            } catch {
                board.fail("writer: \(error)")
                ready.signal()
            }
            board.writerDone()
        }
        writer.start()
        ready.wait()
        if let failure = board.failure { throw MeasurementError(description: failure) }
        board.start = SystemClock.monotonicNanoseconds()
        go.signal()
        guard board.waitForReaders(readers, timeout: 300) else {
            throw MeasurementError(description: "\(kind) round timed out: \(board.failure ?? "readers incomplete")")
        }
        if let failure = board.failure { throw MeasurementError(description: failure) }
        board.waitForWriter()
        let slowest = board.readerEnds.max()! - board.start
        return Figure(rate: Double(lines) / (Double(slowest) / 1e9), lost: board.lost, duplicated: board.duplicated)
    }

    /// Reads until every line arrived (or 10 s pass without one); returns (end time, lost, duplicated).
    private static func read(_ reader: LogReader, lines: Int, board: Board) throws -> (UInt64, UInt64, UInt64) {
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        var expected = 0
        var lost: UInt64 = 0
        var duplicated: UInt64 = 0
        var idle = 0
        while expected < lines && idle < 100 && board.failure == nil {
            batch.removeAll()
            if try reader.wait(into: batch, timeoutMilliseconds: 100) == 0 {
                idle += 1
                continue
            }
            idle = 0
            batch.forEachLine { line in
                var number = 0
                for digit in 0..<16 {
                    let character = Int(line[digit])
                    number = number << 4 | (character <= 57 ? character - 48 : character - 87)
                }
                if number < expected {
                    duplicated += 1
                } else {
                    lost += UInt64(number - expected)
                    expected = number + 1
                }
            }
        }
        lost += UInt64(lines - expected)
        return (SystemClock.monotonicNanoseconds(), lost, duplicated)
    }
}

/// What the threads of one round report.
final class Board: @unchecked Sendable {
    private let condition = NSCondition()
    var start: UInt64 = 0
    private(set) var readerEnds: [UInt64] = []
    private(set) var lost: UInt64 = 0
    private(set) var duplicated: UInt64 = 0
    private(set) var failure: String?
    private var writerFinished = false

    func record(_ outcome: (UInt64, UInt64, UInt64)) {
        condition.withLock {
            readerEnds.append(outcome.0)
            lost += outcome.1
            duplicated += outcome.2
            condition.broadcast()
        }
    }

    func fail(_ message: String) {
        condition.withLock {
            failure = failure ?? message
            condition.broadcast()
        }
    }

    func writerDone() {
        condition.withLock {
            writerFinished = true
            condition.broadcast()
        }
    }

    func waitForReaders(_ count: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        return condition.withLock {
            while readerEnds.count < count && failure == nil {
                if !condition.wait(until: deadline) { return false }
            }
            return true
        }
    }

    func waitForWriter() {
        condition.withLock {
            while !writerFinished { condition.wait() }
        }
    }
}

/// Writes `value` as 16 lower-case hex digits.
@inline(__always)
func formatHex(_ value: Int, into destination: UnsafeMutableRawPointer) {
    for digit in 0..<16 {
        let nibble = UInt8((value >> (60 - 4 * digit)) & 0xF)
        destination.storeBytes(of: nibble < 10 ? 48 + nibble : 87 + nibble, toByteOffset: digit, as: UInt8.self)
    }
}
