// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Settings of the journald source.
public struct JournalOptions: Sendable, Equatable {
    /// fail2ban's `journalmatch`: `FIELD=VALUE` terms, all of which an entry must have, in groups
    /// separated by `+`, any of which it may match (`_SYSTEMD_UNIT=ssh.service + _COMM=sshd`).
    /// Empty: every entry.
    public var match = ""
    /// A directory of journal files (`journalctl --directory`: tests, journals copied from
    /// elsewhere); nil: the system journal.
    public var directory: String?
    /// A new reader starts at the journal's first entry (else after its last: only new entries).
    public var startAtBeginning = false
    /// Longest line; entries whose line is longer are skipped and counted as rejected.
    public var maxLineLength = 4096
    /// Where a reader keeps the cursor of the last entry it delivered (the daemon's: in its state
    /// directory), at close and every `cursorSaveInterval` seconds: the next reader with this path
    /// goes on after that entry, so a restart neither misses nor repeats entries. nil: start at the
    /// tail (or the head, `startAtBeginning`).
    public var cursorPath: String?
    /// Seconds between saves of the cursor while entries arrive (a crash repeats at most these).
    public var cursorSaveInterval = 1.0

    public init() {}

    func validate() throws(TransportError) {
        _ = try JournalMatch.parse(match)
        if let directory, directory.isEmpty {
            throw .invalidConfiguration("the journal directory must not be empty (nil: the system journal)")
        }
        guard (1...(1 << 20)).contains(maxLineLength) else {
            throw .invalidConfiguration("the journal's longest line must be 1...1048576 bytes")
        }
    }
}

/// fail2ban's `journalmatch` syntax, as `filtersystemd.py`'s `addJournalMatch` reads it: words
/// split as a shell does (`shlex.split`), `+` between groups of `FIELD=VALUE` terms. Within a group
/// the terms are a conjunction (libsystemd ORs the terms of one group that name the same field);
/// the groups are alternatives (`sd_journal_add_disjunction`).
public enum JournalMatch {
    /// The groups of terms. - Throws: `invalidConfiguration` naming the faulty word.
    public static func parse(_ text: String) throws(TransportError) -> [[String]] {
        var groups: [[String]] = [[]]
        for word in try words(text) {
            if word == "+" {
                guard !groups[groups.count - 1].isEmpty else {
                    throw .invalidConfiguration("journal match '\(text)': '+' must stand between FIELD=VALUE terms")
                }
                groups.append([])
                continue
            }
            guard let equals = word.firstIndex(of: "="), isFieldName(word[..<equals]) else {
                throw .invalidConfiguration(
                    "journal match '\(text)': '\(word)' is not FIELD=VALUE (upper-case field names, as in "
                        + "_SYSTEMD_UNIT=ssh.service + _COMM=sshd)")
            }
            groups[groups.count - 1].append(word)
        }
        if groups.count == 1 && groups[0].isEmpty { return [] }
        guard !groups[groups.count - 1].isEmpty else {
            throw .invalidConfiguration("journal match '\(text)': '+' must stand between FIELD=VALUE terms")
        }
        return groups
    }

    /// fail2ban's lines of `journalmatch` (each one `addJournalMatch` call, ORed with the others)
    /// as one expression.
    public static func joining(_ lines: [String]) -> String {
        lines.filter { !$0.allSatisfy(\.isWhitespace) }.joined(separator: " + ")
    }

    /// journald's field names: upper-case letters, digits and `_`, not starting with a digit.
    static func isFieldName(_ name: Substring) -> Bool {
        guard let first = name.utf8.first, !(0x30...0x39).contains(first) else { return false }
        return name.utf8.allSatisfy { (0x41...0x5A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }

    /// Words as `shlex.split` makes them: blanks separate, quotes group, a backslash escapes.
    static func words(_ text: String) throws(TransportError) -> [String] {
        var words: [String] = []
        var word: [Character] = []
        var inWord = false
        var quote: Character?
        var escaped = false
        for character in text {
            if escaped {
                word.append(character)
                escaped = false
            } else if let open = quote {
                if character == open {
                    quote = nil
                } else if character == "\\" && open == "\"" {
                    escaped = true
                } else {
                    word.append(character)
                }
            } else if character == "\\" {
                (escaped, inWord) = (true, true)
            } else if character == "'" || character == "\"" {
                (quote, inWord) = (character, true)
            } else if character == " " || character == "\t" || character == "\n" {
                if inWord { words.append(String(word)) }
                (word, inWord) = ([], false)
            } else {
                word.append(character)
                inWord = true
            }
        }
        if quote != nil || escaped { throw .invalidConfiguration("journal match '\(text)': unbalanced quote") }
        if inWord { words.append(String(word)) }
        return words
    }
}

/// Reads the journal through libsystemd's `sd_journal`, one entry a line, each formatted as
/// fail2ban's systemd backend does (`formatJournalEntry`):
/// `[_HOSTNAME ]IDENTIFIER[PID]: MESSAGE`, where IDENTIFIER is `SYSLOG_IDENTIFIER` (else `_COMM`),
/// PID is `SYSLOG_PID` (else `_PID`), a kernel entry carries `[%12.6f]` monotonic seconds before
/// its message, and the message's newlines are written `\n`. Journal lines carry no date (the
/// entry's time is the journal's, not the line's). One thread reads it (`sd_journal` is not
/// thread-safe); the group's note says so when more were asked for.
public final class JournalReader: LogReader {
    let options: JournalOptions
    /// The `sd_journal` handle (nil once closed).
    private var journal: OpaquePointer?
    /// The entry the journal is positioned at is not yet delivered (a saved cursor whose entry is
    /// gone: `sd_journal_next` landed on the one after it).
    private var deliverCurrent = false
    /// An entry has been delivered since the last save of the cursor.
    private var unsaved = false
    /// The journal is positioned at an entry delivered (its cursor is the one to save).
    private var positioned = false
    private var lastSave = SystemClock.monotonicSeconds()
    /// Written by the thread that reads; read by any.
    private let stats = ReaderCounters()
    /// The kernel timestamp's text, made per kernel entry (rare).
    private var kernelStamp: [UInt8] = []

    public var statistics: ReaderStatistics { stats.statistics }

    public init(options: JournalOptions) throws(TransportError) {
        try options.validate()
        self.options = options
        let groups = try JournalMatch.parse(options.match)
        var handle: OpaquePointer?
        let what = options.directory.map { "the journal in \($0)" } ?? "the system journal"
        if let directory = options.directory {
            try journalCall("open \(what) (sd_journal_open_directory)") {
                sd_journal_open_directory(&handle, directory, 0)
            }
        } else {
            try journalCall("open \(what) (sd_journal_open; is systemd-journald's storage readable by this user?)") {
                sd_journal_open(&handle, Int32(SD_JOURNAL_LOCAL_ONLY))
            }
        }
        journal = handle
        do throws(TransportError) {
            for group in groups {
                for term in group {
                    try journalCall("add the journal match '\(term)'") {
                        sd_journal_add_match(handle, term, 0)
                    }
                }
                try journalCall("add a journal disjunction") { sd_journal_add_disjunction(handle) }
            }
            // Long messages are kept whole up to the line limit (the default threshold is 64 KiB).
            try journalCall("set the journal's data threshold") {
                sd_journal_set_data_threshold(handle, max(options.maxLineLength, 1 << 16))
            }
            try position()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Where the saved cursor was (`cursorPath`).
    struct SavedCursor: Codable {
        let cursor: String
    }

    /// Seeks to after the saved cursor's entry, or to the tail (new entries only), or to the head.
    private func position() throws(TransportError) {
        let journal = self.journal
        let (kept, note) =
            options.cursorPath.map { JSONOutput.readState(SavedCursor.self, from: $0, what: "the journal cursor") }
            ?? (nil, nil)
        if let note { sayProblem("note: \(note)") }
        if let path = options.cursorPath, let saved = kept {
            try journalCall("seek to the saved journal cursor in \(path)") {
                sd_journal_seek_cursor(journal, saved.cursor)
            }
            // sd_journal_next lands on the cursor's entry (delivered before the restart), or, when
            // that entry is gone (rotated away, or matches changed), on the first after it.
            let moved = try journalCall("read the journal") { sd_journal_next(journal) }
            if moved > 0 {
                positioned = true
                deliverCurrent = sd_journal_test_cursor(journal, saved.cursor) <= 0
            }
            return
        }
        if options.startAtBeginning {
            try journalCall("seek to the journal's head") { sd_journal_seek_head(journal) }
            return
        }
        // The tail, then back onto the last entry: sd_journal_next goes on with the first new one
        // (fail2ban does the same; a bare seek_tail can skip entries appended next).
        try journalCall("seek to the journal's tail") { sd_journal_seek_tail(journal) }
        let moved = try journalCall("read the journal") { sd_journal_previous(journal) }
        if moved > 0 {
            positioned = true
        } else {
            // An empty journal: every entry that comes is new.
            try journalCall("seek to the journal's head") { sd_journal_seek_head(journal) }
        }
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        guard let journal else { return 0 }
        var count = 0
        // Room for the longest line before each entry is taken, so that no entry is taken and
        // then left out.
        while batch.canAppend(length: options.maxLineLength) {
            if deliverCurrent {
                deliverCurrent = false
            } else {
                let moved = try journalCall("read the journal") { sd_journal_next(journal) }
                if moved == 0 { break }
            }
            positioned = true
            unsaved = true
            if append(journal, to: batch) {
                count += 1
            } else {
                stats.linesRejected.add(1)
            }
        }
        if count > 0 { stats.linesReceived.add(UInt64(count)) }
        if unsaved && options.cursorPath != nil {
            let now = SystemClock.monotonicSeconds()
            if now - lastSave >= options.cursorSaveInterval {
                saveCursor()
                lastSave = now
            }
        }
        return count
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        let ready = try poll(into: batch)
        guard ready == 0, let journal, timeoutMilliseconds > 0 else { return ready }
        // SD_JOURNAL_APPEND, _INVALIDATE (files added or removed) or _NOP (timed out): read on.
        try journalCall("wait for the journal") {
            sd_journal_wait(journal, UInt64(timeoutMilliseconds) * 1000)
        }
        return try poll(into: batch)
    }

    public func close() {
        guard let journal else { return }
        saveCursor()
        sd_journal_close(journal)
        self.journal = nil
    }

    /// Keeps the cursor of the last entry delivered for the next reader (`cursorPath`).
    private func saveCursor() {
        guard let path = options.cursorPath, positioned, !deliverCurrent, let journal else { return }
        var text: UnsafeMutablePointer<CChar>?
        guard sd_journal_get_cursor(journal, &text) >= 0, let text else { return }
        defer { free(text) }
        try? JSONOutput.write(SavedCursor(cursor: String(cString: text)), to: path)
        unsaved = false
    }

    /// A field's value in the current entry (nil when the entry has none); valid until the next
    /// read of the journal.
    @inline(__always)
    private func field(_ journal: OpaquePointer, _ name: StaticString) -> UnsafeRawBufferPointer? {
        var data: UnsafeRawPointer?
        var length = 0
        let found = name.withUTF8Buffer { name in
            sd_journal_get_data(
                journal, UnsafeRawPointer(name.baseAddress!).assumingMemoryBound(to: CChar.self),
                &data, &length)
        }
        // The data is "NAME=value".
        let skip = name.utf8CodeUnitCount + 1
        guard found >= 0, let data, length >= skip else { return nil }
        return UnsafeRawBufferPointer(start: data + skip, count: length - skip)
    }

    /// Appends the current entry's line. - Returns: false when it is longer than the limit.
    private func append(_ journal: OpaquePointer, to batch: LineBatch) -> Bool {
        let host = field(journal, "_HOSTNAME").flatMap { $0.isEmpty ? nil : $0 }
        let identifier =
            field(journal, "SYSLOG_IDENTIFIER").flatMap { $0.isEmpty ? nil : $0 }
            ?? field(journal, "_COMM").flatMap { $0.isEmpty ? nil : $0 }
        let pid =
            identifier == nil
            ? nil
            : field(journal, "SYSLOG_PID").flatMap { $0.isEmpty ? nil : $0 }
                ?? field(journal, "_PID").flatMap { $0.isEmpty ? nil : $0 }
        let isKernel = pid == nil && identifier.map { $0.elementsEqual("kernel".utf8) } ?? false
        if isKernel { makeKernelStamp(journal) }
        let message = field(journal, "MESSAGE") ?? UnsafeRawBufferPointer(start: nil, count: 0)
        var newlines = 0
        for byte in message where byte == 0x0A { newlines += 1 }

        var length = message.count + newlines
        if let host { length += host.count + 1 }
        if let identifier { length += identifier.count + 2 + (pid.map { $0.count + 2 } ?? 0) }
        if isKernel { length += kernelStamp.count + 1 }
        guard length <= options.maxLineLength, let line = batch.appendUninitialized(length: length) else {
            return false
        }
        var at = 0
        func put(_ bytes: UnsafeRawBufferPointer) {
            if bytes.count > 0 { (line + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            at += bytes.count
        }
        func put(_ byte: UInt8) {
            line.storeBytes(of: byte, toByteOffset: at, as: UInt8.self)
            at += 1
        }
        if let host {
            put(host)
            put(0x20)
        }
        if let identifier {
            put(identifier)
            if let pid {
                put(0x5B)  // [
                put(pid)
                put(0x5D)  // ]
            }
            put(0x3A)  // :
            put(0x20)
        }
        if isKernel {
            kernelStamp.withUnsafeBytes { put($0) }
            put(0x20)
        }
        if newlines == 0 {
            put(message)
        } else {
            for byte in message {
                if byte == 0x0A {
                    put(0x5C)  // backslash
                    put(0x6E)  // n
                } else {
                    put(byte)
                }
            }
        }
        assert(at == length)
        return true
    }

    /// `[%12.6f]` of the kernel entry's monotonic seconds (`_SOURCE_MONOTONIC_TIMESTAMP`, else the
    /// journal's), as fail2ban writes it.
    private func makeKernelStamp(_ journal: OpaquePointer) {
        var microseconds: UInt64 = 0
        if let source = field(journal, "_SOURCE_MONOTONIC_TIMESTAMP"),
            let value = UInt64(String(decoding: source, as: UTF8.self))
        {
            microseconds = value
        } else {
            var boot = sd_id128_t()
            _ = sd_journal_get_monotonic_usec(journal, &microseconds, &boot)
        }
        let fraction = String(microseconds % 1_000_000)
        var text = "\(microseconds / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
        if text.count < 12 { text = String(repeating: " ", count: 12 - text.count) + text }
        kernelStamp = Array("[\(text)]".utf8)
    }
}

/// An `sd_journal_*` call through the funnel: libsystemd returns a negative error number.
@inline(__always)
@discardableResult
func journalCall(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws(TransportError) -> Int32 {
    try systemCall(
        convention: .negativeErrno, call, orThrow: { TransportError.system(operation: operation(), errno: $0.code) })
}
