// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Output for operators: whole lines, unbuffered (status lines must appear as they happen, also
/// when piped), and the one-line error exit of the programs.
///
/// Under systemd, when stdout or stderr is the journal (`$JOURNAL_STREAM` names that very file),
/// each line starts with its syslog level, `<6>` for information, `<5>` for a notice (a ban, an
/// unban), `<4>` for a warning, `<3>` for an error (sd-daemon(3)'s prefixes, which journald strips
/// and records as the priority). Anywhere else the output is unchanged.
public enum Console {
    /// A line's syslog priority, as journald records it.
    public enum Level: Int32, Sendable {
        case error = 3
        case warning = 4
        /// What an operator filters for (`journalctl -p notice`): bans and unbans.
        case notice = 5
        case info = 6
    }

    /// Writes `line` and a newline to `fd` in one `write`.
    /// - Parameter level: the line's priority in the journal; by default information on stdout and
    ///   a warning on stderr.
    public static func say(_ line: String, to fd: Int32 = STDOUT_FILENO, level: Level? = nil) {
        var text = line + "\n"
        if JournalStream.isJournal(fd) {
            let level = level ?? (fd == STDERR_FILENO ? .warning : .info)
            text = "<\(level.rawValue)>" + text
        }
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { return }
                offset += written
            }
        }
    }

    /// Prints `message` on stderr (an error in the journal) and exits with status 1.
    public static func fail(_ message: String) -> Never {
        say(message, to: STDERR_FILENO, level: .error)
        exit(1)
    }
}

/// `$JOURNAL_STREAM` ("DEVICE:INODE", systemd.exec(5)): set when systemd connects stdout or
/// stderr to the journal. A descriptor is the journal only if it is that very file: a child whose
/// output was redirected inherits the variable but not the stream.
enum JournalStream {
    /// Whether stdout and stderr are the journal, looked at once.
    private static let standardStreams: (output: Bool, error: Bool) = (matches(STDOUT_FILENO), matches(STDERR_FILENO))

    static func isJournal(_ fd: Int32) -> Bool {
        switch fd {
        case STDOUT_FILENO: standardStreams.output
        case STDERR_FILENO: standardStreams.error
        default: false
        }
    }

    private static func matches(_ fd: Int32) -> Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(fd, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }
}

extension Double {
    /// The value with `decimals` digits after the point, rounded as printf's `%.Nf` rounds
    /// (`12.3456.fixed(3)` is `12.346`): the CLI's seconds and rates, without Foundation's
    /// `String(format:)`.
    public func fixed(_ decimals: Int) -> String {
        let arguments: [CVarArg] = [Int32(max(0, min(decimals, 30))), self]
        var buffer = [CChar](repeating: 0, count: 64)
        var length = Int(withVaList(arguments) { vsnprintf(&buffer, buffer.count, "%.*f", $0) })
        if length >= buffer.count {  // up to 309 digits before the point
            buffer = [CChar](repeating: 0, count: length + 1)
            length = Int(withVaList(arguments) { vsnprintf(&buffer, buffer.count, "%.*f", $0) })
        }
        return String(decoding: buffer.prefix(max(length, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
