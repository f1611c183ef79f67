// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
import PortcullisSystem
import XDPTesting

/// The journald source's row of the `transports` suite: one reader reading a journal of
/// `--journal-entries` entries from its head (journal files written once, before the rounds, by
/// systemd-journal-remote), against a file reader tailing a file of the very lines the journal
/// reader makes, from its start, in alternating rounds. Both are warm in the page cache: what is
/// measured is the reading, not the disk.
extension TransportsSuite {
    static var journalWriter: String { JournalExport.writer }

    func journalRow(
        _ row: (String, () throws -> Figure, String, () throws -> Figure) throws -> Void
    ) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.journalWriter) else {
            throw MeasurementError(
                description: "\(Self.journalWriter) is missing: tools/install-deps installs systemd-journal-remote "
                    + "(or leave journal out of --only)")
        }
        let directory = scratch + "/pcperf-journal-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try writeJournal(entries: journalEntries, to: directory + "/perf.journal")

        var journal = TransportConfiguration(kind: .journal)
        journal.journal.directory = directory
        journal.journal.startAtBeginning = true
        journal.journal.match = "_SYSTEMD_UNIT=sshd.service"
        // The reference file holds the lines the journal reader makes.
        var file = TransportConfiguration(kind: .file)
        file.file.path = directory + "/perf.log"
        file.file.startAtBeginning = true
        let (text, count) = try readAll(journal)
        guard count == journalEntries else {
            throw MeasurementError(description: "the journal gave \(count) of \(journalEntries) entries")
        }
        FileManager.default.createFile(atPath: file.file.path, contents: Data(text))
        let entries = journalEntries
        try row(
            "journal source 1→1 (\(entries) entries)",
            { try Self.timedRead(journal, lines: entries) },
            "file tail, same lines", { try Self.timedRead(file, lines: entries) })
    }

    /// Every line of the source, newline-terminated, and how many.
    private func readAll(_ configuration: TransportConfiguration) throws -> (text: [UInt8], lines: Int) {
        let reader = try configuration.makeReader()
        defer { reader.close() }
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        var bytes: [UInt8] = []
        var lines = 0
        while try reader.poll(into: batch) > 0 {
            lines += batch.count
            batch.forEachLine { bytes += $0 + [0x0A] }
            batch.removeAll()
        }
        return (bytes, lines)
    }

    /// One round: a new reader reads `lines` lines from the start. - Returns: its lines/s.
    static func timedRead(_ configuration: TransportConfiguration, lines: Int) throws -> Figure {
        let start = SystemClock.monotonicNanoseconds()
        let reader = try configuration.makeReader()
        defer { reader.close() }
        let count = try readLines(reader, expected: lines)
        return figure(count: count, expected: lines, since: start)
    }

    /// Reads until `expected` lines came, or none for a second. - Returns: how many came.
    static func readLines(_ reader: LogReader, expected: Int) throws -> Int {
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 8192)
        var count = 0
        var idle = 0
        while count < expected && idle < 10 {
            batch.removeAll()
            let read = try reader.wait(into: batch, timeoutMilliseconds: 100)
            idle = read == 0 ? idle + 1 : 0
            count += read
        }
        return count
    }

    /// The rate of `count` lines since `start`, with those missing or extra.
    static func figure(count: Int, expected: Int, since start: UInt64) -> Figure {
        let seconds = Double(SystemClock.monotonicNanoseconds() - start) / 1e9
        return Figure(
            rate: Double(count) / seconds, lost: UInt64(max(expected - count, 0)),
            duplicated: UInt64(max(count - expected, 0)))
    }

    /// `entries` sshd entries in journal export format through systemd-journal-remote, each
    /// message an offence line numbered as the other rows' (plus one other unit's entry per ten,
    /// which the match leaves out).
    private func writeJournal(entries: Int, to path: String) throws {
        var export = Data()
        let start = UInt64(Date().timeIntervalSince1970 * 1e6)
        var number = 0
        var written = 0
        let digits = [UInt8]("0123456789abcdef".utf8)
        while number < entries {
            written += 1
            let other = written % 11 == 0
            var hex = [UInt8](repeating: 0x30, count: 16)
            var value = number
            for index in stride(from: 15, through: 0, by: -1) {
                hex[index] = digits[value & 15]
                value >>= 4
            }
            export += Data(
                """
                __REALTIME_TIMESTAMP=\(start + UInt64(written))
                __MONOTONIC_TIMESTAMP=\(written)
                _BOOT_ID=0123456789abcdef0123456789abcdef
                _HOSTNAME=perfhost
                SYSLOG_IDENTIFIER=sshd
                _PID=\(1000 + written % 30000)
                _COMM=sshd
                _SYSTEMD_UNIT=\(other ? "cron.service" : "sshd.service")
                MESSAGE=\(String(decoding: hex, as: UTF8.self))\(Self.suffix)


                """.utf8)
            if !other { number += 1 }
        }
        do throws(JournalExport.Failure) {
            try JournalExport.append(export, to: path)
        } catch {
            throw MeasurementError(description: error.description)
        }
    }
}
