// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import XDPTesting

/// Journal files written by `systemd-journal-remote` from export-format entries: no journald runs
/// in CI, and this is how journals from elsewhere are stored. Each `append` runs it once, adding to
/// the same file (readers following the directory see the file grow).
public final class JournalFiles {
    public static var writer: String { JournalExport.writer }
    /// Whether the tests can write journals here (outside CI a missing tool skips them).
    public static var available: Bool { JournalExport.available }
    /// Use as `.enabled(if: JournalFiles.runnable)`: with `CI` set a missing tool fails the test.
    public static var runnable: Bool { available || Privileges.inCI }

    /// A scratch directory holding one journal file.
    public let directory = NSTemporaryDirectory() + "pc-journal-\(getpid())-\(UUID().uuidString.prefix(8))"
    public var file: String { directory + "/remote.journal" }
    /// Entries written so far (for increasing timestamps).
    private var written = 0
    private let start = UInt64(Date().timeIntervalSince1970 * 1e6)

    public init() throws {
        try #require(Self.available, "\(Self.writer) is missing: tools/install-deps installs systemd-journal-remote")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }

    /// One entry: its fields in order (the writer adds the timestamps and boot id).
    public typealias Entry = [(String, String)]

    /// An sshd entry as the journal holds one from `sshd.service`.
    public static func sshd(_ message: String, pid: Int = 4242, unit: String = "sshd.service") -> Entry {
        [
            ("_HOSTNAME", "myhost"), ("SYSLOG_IDENTIFIER", "sshd"), ("_PID", String(pid)), ("_COMM", "sshd"),
            ("_SYSTEMD_UNIT", unit), ("MESSAGE", message),
        ]
    }

    /// Appends `entries` to the journal file (one run of the writer).
    public func append(_ entries: [Entry]) throws {
        var export = Data()
        for entry in entries {
            written += 1
            let time = start + UInt64(written)
            export += Data("__REALTIME_TIMESTAMP=\(time)\n__MONOTONIC_TIMESTAMP=\(written)\n".utf8)
            export += Data("_BOOT_ID=0123456789abcdef0123456789abcdef\n".utf8)
            for (name, value) in entry {
                if value.contains("\n") {
                    // The export format's binary field: name, newline, little-endian 64-bit length, bytes.
                    export += Data((name + "\n").utf8)
                    withUnsafeBytes(of: UInt64(value.utf8.count).littleEndian) { export += Data($0) }
                    export += Data(value.utf8) + Data("\n".utf8)
                } else {
                    export += Data("\(name)=\(value)\n".utf8)
                }
            }
            export += Data("\n".utf8)
        }
        try JournalExport.append(export, to: file)
    }
}
