// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import Testing
import TestSupport
@testable import LogTransport

@Suite("Journal match syntax")
struct JournalMatchTests {
    @Test("fail2ban's journalmatch: '+' separates alternatives, terms in a group are all required")
    func groups() throws {
        #expect(
            try JournalMatch.parse("_SYSTEMD_UNIT=ssh.service + _COMM=sshd")
                == [["_SYSTEMD_UNIT=ssh.service"], ["_COMM=sshd"]])
        #expect(
            try JournalMatch.parse("_SYSTEMD_UNIT=a.service _PID=1 + 'MESSAGE=two words'")
                == [["_SYSTEMD_UNIT=a.service", "_PID=1"], ["MESSAGE=two words"]])
        #expect(try JournalMatch.parse("  ") == [])
        #expect(
            JournalMatch.joining(["_SYSTEMD_UNIT=a.service", "", "_COMM=b"]) == "_SYSTEMD_UNIT=a.service + _COMM=b")
    }

    @Test("a bad term, a stray '+' or an open quote is refused on one line naming it")
    func refusals() {
        for (text, named) in [
            ("sshd", "'sshd' is not FIELD=VALUE"), ("_comm=sshd", "'_comm=sshd'"), ("+ _COMM=sshd", "'+'"),
            ("_COMM=sshd +", "'+'"), ("_COMM=a + + _COMM=b", "'+'"), ("'MESSAGE=x", "unbalanced quote"),
            ("1X=y", "'1X=y'"),
        ] {
            #expect(throws: TransportError.self) { try JournalMatch.parse(text) }
            do {
                _ = try JournalMatch.parse(text)
            } catch {
                #expect(error.description.contains(named) && !error.description.contains("\n"), "\(error)")
            }
        }
    }
}

@Suite("Journal source", .enabled(if: JournalFiles.runnable), .serialized)
struct JournalReaderTests {
    func options(_ journal: JournalFiles, match: String = "") -> JournalOptions {
        var options = JournalOptions()
        options.directory = journal.directory
        options.match = match
        return options
    }

    /// Lines from `reader` until `count` arrived or `seconds` passed.
    func receive(_ reader: LogReader, count: Int, within seconds: Double = 10) throws -> [String] {
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 4096)
        var lines: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        while lines.count < count && Date() < deadline {
            batch.removeAll()
            _ = try reader.wait(into: batch, timeoutMilliseconds: 50)
            for index in 0..<batch.count { lines.append(String(decoding: batch.line(index), as: UTF8.self)) }
        }
        return lines
    }

    @Test("entries become the lines fail2ban's systemd backend makes of them")
    func formatting() throws {
        let journal = try JournalFiles()
        defer { journal.remove() }
        try journal.append([
            JournalFiles.sshd("Failed password for root from 192.0.2.1 port 22 ssh2", pid: 17),
            [("_HOSTNAME", "h"), ("_COMM", "app"), ("_PID", "9"), ("SYSLOG_PID", "10"), ("MESSAGE", "comm and pid")],
            [("_HOSTNAME", "h"), ("MESSAGE", "no identifier")],
            [("SYSLOG_IDENTIFIER", "app"), ("MESSAGE", "two\nlines")],
            [("SYSLOG_IDENTIFIER", "kernel"), ("_SOURCE_MONOTONIC_TIMESTAMP", "12345678"), ("MESSAGE", "oops")],
            [("SYSLOG_IDENTIFIER", "app"), ("_PID", "3")],
        ])
        var options = options(journal)
        options.startAtBeginning = true
        let reader = try JournalReader(options: options)
        defer { reader.close() }
        #expect(
            try receive(reader, count: 6) == [
                "myhost sshd[17]: Failed password for root from 192.0.2.1 port 22 ssh2", "h app[10]: comm and pid",
                "h no identifier", "app: two\\nlines", "kernel: [   12.345678] oops", "app[3]: ",
            ])
        #expect(reader.statistics.linesReceived == 6)
    }

    @Test("a reader follows a journal file growing while it runs, from its tail, with its match applied")
    func followsGrowth() throws {
        let journal = try JournalFiles()
        defer { journal.remove() }
        try journal.append([JournalFiles.sshd("before the reader")])
        let reader = try JournalReader(options: options(journal, match: "_SYSTEMD_UNIT=sshd.service + _COMM=cron"))
        defer { reader.close() }
        let batch = LineBatch()
        #expect(try reader.wait(into: batch, timeoutMilliseconds: 100) == 0, "from the tail: only new entries")
        for round in 0..<3 {
            try journal.append([
                JournalFiles.sshd("sshd \(round)"),
                JournalFiles.sshd("other unit \(round)", unit: "other.service"),
                [("_COMM", "cron"), ("_PID", "5"), ("MESSAGE", "cron \(round)")],
            ])
            #expect(try receive(reader, count: 2) == ["myhost sshd[4242]: sshd \(round)", "cron[5]: cron \(round)"])
        }
        #expect(try reader.wait(into: batch, timeoutMilliseconds: 100) == 0, "the other unit's entries are not read")
        #expect(reader.statistics.linesReceived == 6)
    }

    @Test("a restarted reader resumes at its saved cursor: no entry lost or repeated, also those logged in between")
    func resumesAtCursor() throws {
        let journal = try JournalFiles()
        defer { journal.remove() }
        var options = options(journal)
        options.cursorPath = journal.directory + "/cursor.json"
        try journal.append((0..<5).map { JournalFiles.sshd("entry \($0)") })
        var received: [String] = []
        do {
            let reader = try JournalReader(options: options)
            #expect(try receive(reader, count: 1, within: 0.5).isEmpty, "no cursor yet: from the tail")
            try journal.append((5..<10).map { JournalFiles.sshd("entry \($0)") })
            received += try receive(reader, count: 5)
            reader.close()
        }
        // Logged while no reader runs.
        try journal.append((10..<15).map { JournalFiles.sshd("entry \($0)") })
        for restart in 0..<2 {
            let reader = try JournalReader(options: options)
            received += try receive(reader, count: 5)
            if restart == 0 { try journal.append((15..<20).map { JournalFiles.sshd("entry \($0)") }) }
            reader.close()
        }
        #expect(received == (5..<20).map { "myhost sshd[4242]: entry \($0)" })
        let last = try JournalReader(options: options)
        defer { last.close() }
        #expect(try receive(last, count: 1, within: 0.5).isEmpty, "nothing repeated after the last entry read")
    }

    @Test("no journal at the directory, or a bad match, is one line naming it")
    func errors() throws {
        var options = JournalOptions()
        options.directory = "/nonexistent/pc-journal"
        #expect {
            try JournalReader(options: options)
        } throws: { error in
            "\(error)".contains("/nonexistent/pc-journal") && !"\(error)".contains("\n")
        }
        options.match = "sshd"
        #expect {
            try JournalReader(options: options)
        } throws: { error in
            "\(error)".contains("'sshd' is not FIELD=VALUE")
        }
    }
}
