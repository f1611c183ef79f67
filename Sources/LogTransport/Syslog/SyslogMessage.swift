// SPDX-License-Identifier: Apache-2.0
/// One syslog message (RFC 3164 or RFC 5424) rewritten as the line the jails read:
/// `TAG[PID]: MESSAGE` (`TAG: MESSAGE` without a PID, `-: MESSAGE` without a tag), the shape of
/// fail2ban's systemd backend's lines, which its filters' `__prefix_line` takes. The priority,
/// the time stamp, the host name and (RFC 5424) the message id and the structured data are left
/// out: a line's time is when it arrived.
public enum SyslogMessage {
    /// Writes the line of `datagram` at `destination` (room for `capacity` bytes).
    /// - Returns: its length, or nil when it does not fit.
    public static func format(
        _ datagram: UnsafeRawBufferPointer, into destination: UnsafeMutableRawPointer, capacity: Int
    )
        -> Int?
    {
        let parts = parse(datagram)
        let tag = parts.tag.isEmpty ? UnsafeRawBufferPointer(start: dash.utf8Start, count: 1) : parts.tag
        let length = tag.count + (parts.pid.isEmpty ? 0 : parts.pid.count + 2) + 2 + parts.message.count
        guard length <= capacity else { return nil }
        var at = 0
        func put(_ bytes: UnsafeRawBufferPointer) {
            if !bytes.isEmpty { (destination + at).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
            at += bytes.count
        }
        func put(_ byte: UInt8) {
            destination.storeBytes(of: byte, toByteOffset: at, as: UInt8.self)
            at += 1
        }
        put(tag)
        if !parts.pid.isEmpty {
            put(UInt8(ascii: "["))
            put(parts.pid)
            put(UInt8(ascii: "]"))
        }
        put(UInt8(ascii: ":"))
        put(UInt8(ascii: " "))
        put(parts.message)
        return at
    }

    private static let dash: StaticString = "-"

    /// The parts of a message that make its line.
    public struct Parts {
        public var tag: UnsafeRawBufferPointer
        public var pid: UnsafeRawBufferPointer
        public var message: UnsafeRawBufferPointer
    }

    /// Splits a datagram. Never fails: what cannot be read as a header is message.
    public static func parse(_ whole: UnsafeRawBufferPointer) -> Parts {
        var end = whole.count
        // Senders end messages with a newline (rsyslog's templates) or a NUL (old syslog(3)).
        while end > 0, whole[end - 1] == 0x0A || whole[end - 1] == 0x0D || whole[end - 1] == 0 { end -= 1 }
        let empty = UnsafeRawBufferPointer(start: whole.baseAddress, count: 0)
        func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: whole[from..<max(from, to)])
        }
        var at = 0
        // <PRI>: 1 to 3 digits.
        if end > 2, whole[0] == UInt8(ascii: "<") {
            var digits = 1
            while digits < end, digits <= 4, (0x30...0x39).contains(whole[digits]) { digits += 1 }
            if digits > 1, digits < end, whole[digits] == UInt8(ascii: ">") { at = digits + 1 }
        }
        // RFC 5424: VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
        if at > 0, at + 1 < end, whole[at] == UInt8(ascii: "1"), whole[at + 1] == UInt8(ascii: " ") {
            var fields: [Range<Int>] = []
            var cursor = at + 2
            while fields.count < 5 {
                let start = cursor
                while cursor < end, whole[cursor] != UInt8(ascii: " ") { cursor += 1 }
                fields.append(start..<cursor)
                if cursor >= end { break }
                cursor += 1
            }
            if fields.count == 5 {
                cursor = skipStructuredData(whole, from: cursor, end: end)
                if cursor < end, whole[cursor] == UInt8(ascii: " ") { cursor += 1 }
                // A UTF-8 message may start with its byte-order mark.
                if cursor + 3 <= end, whole[cursor] == 0xEF, whole[cursor + 1] == 0xBB, whole[cursor + 2] == 0xBF {
                    cursor += 3
                }
                func field(_ index: Int) -> UnsafeRawBufferPointer {
                    let range = fields[index]
                    return range.count == 1 && whole[range.lowerBound] == UInt8(ascii: "-")
                        ? empty : slice(range.lowerBound, range.upperBound)
                }
                return Parts(tag: field(2), pid: field(3), message: slice(min(cursor, end), end))
            }
        }
        // RFC 3164: [TIMESTAMP SP] [HOSTNAME SP] TAG[PID]: MSG
        at = skipTimestamp(whole, from: at, end: end)
        func word(from start: Int) -> Int {
            var cursor = start
            while cursor < end, whole[cursor] != UInt8(ascii: " ") { cursor += 1 }
            return cursor
        }
        /// Whether the word at `start..<stop` is a tag: `NAME[PID]:`, `NAME:` or `NAME[PID]`.
        func tagEnd(_ start: Int, _ stop: Int) -> Int? {
            var cursor = start
            while cursor < stop, whole[cursor] != UInt8(ascii: "["), whole[cursor] != UInt8(ascii: ":") {
                cursor += 1
            }
            guard cursor > start, cursor - start <= SyslogRoute.longestTag, cursor < stop else { return nil }
            return cursor
        }
        let first = word(from: at)
        var tagStart = at
        var nameEnd = tagEnd(at, first)
        if nameEnd == nil, first < end {
            let second = word(from: first + 1)
            if let end = tagEnd(first + 1, second) {
                tagStart = first + 1
                nameEnd = end
            }
        }
        guard let nameEnd else { return Parts(tag: empty, pid: empty, message: slice(at, end)) }
        var cursor = nameEnd
        var pid = empty
        if whole[cursor] == UInt8(ascii: "[") {
            let pidStart = cursor + 1
            while cursor < end, whole[cursor] != UInt8(ascii: "]") { cursor += 1 }
            guard cursor < end else { return Parts(tag: empty, pid: empty, message: slice(at, end)) }
            pid = slice(pidStart, cursor)
            cursor += 1
        }
        if cursor < end, whole[cursor] == UInt8(ascii: ":") { cursor += 1 }
        if cursor < end, whole[cursor] == UInt8(ascii: " ") { cursor += 1 }
        return Parts(tag: slice(tagStart, nameEnd), pid: pid, message: slice(cursor, end))
    }

    /// `Mmm dd hh:mm:ss ` (RFC 3164) or an RFC 3339 stamp (`2026-12-01T10:00:00.5+00:00 `, as
    /// rsyslog's forwarding formats send), if one starts at `at`.
    private static func skipTimestamp(_ bytes: UnsafeRawBufferPointer, from at: Int, end: Int) -> Int {
        func digit(_ index: Int) -> Bool { index < end && (0x30...0x39).contains(bytes[index]) }
        func letter(_ index: Int) -> Bool {
            index < end && (bytes[index] | 0x20) >= 0x61 && (bytes[index] | 0x20) <= 0x7A
        }
        func byte(_ index: Int, _ value: Character) -> Bool { index < end && bytes[index] == value.asciiValue! }
        if letter(at), letter(at + 1), letter(at + 2), byte(at + 3, " "), byte(at + 4, " ") || digit(at + 4),
            digit(at + 5), byte(at + 6, " "), digit(at + 7), digit(at + 8), byte(at + 9, ":"), digit(at + 10),
            digit(at + 11), byte(at + 12, ":"), digit(at + 13), digit(at + 14), byte(at + 15, " ")
        {
            return at + 16
        }
        if digit(at), digit(at + 1), digit(at + 2), digit(at + 3), byte(at + 4, "-"), byte(at + 10, "T") {
            var cursor = at
            while cursor < end, bytes[cursor] != UInt8(ascii: " ") { cursor += 1 }
            return min(cursor + 1, end)
        }
        return at
    }

    /// RFC 5424's STRUCTURED-DATA: `-`, or `[ID PARAM="VALUE"...]...` where a value escapes `"`,
    /// `\` and `]` with a backslash. - Returns: where it ends.
    private static func skipStructuredData(_ bytes: UnsafeRawBufferPointer, from at: Int, end: Int) -> Int {
        guard at < end else { return end }
        if bytes[at] == UInt8(ascii: "-") { return at + 1 }
        var cursor = at
        while cursor < end, bytes[cursor] == UInt8(ascii: "[") {
            var quoted = false
            cursor += 1
            while cursor < end {
                let byte = bytes[cursor]
                if quoted && byte == UInt8(ascii: "\\") {
                    cursor += 2
                    continue
                }
                if byte == UInt8(ascii: "\"") { quoted.toggle() }
                cursor += 1
                if !quoted && byte == UInt8(ascii: "]") { break }
            }
        }
        return min(cursor, end)
    }
}
