// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Journal files from journal export format, written by Debian's `systemd-journal-remote`: how the
/// journald source's tests and benchmark get journals (no journald runs in CI). Each `append` runs
/// it once and adds to the same file, so a reader following the directory sees the file grow.
public enum JournalExport {
    public static let writer = "/lib/systemd/systemd-journal-remote"

    /// Whether the writer is installed (`tools/install-deps` installs systemd-journal-remote).
    public static var available: Bool { FileManager.default.isExecutableFile(atPath: writer) }

    /// The writer failed, or is missing; the description says which, and what to do.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Appends `export` (entries in export format) to the journal file `path`.
    public static func append(_ export: Data, to path: String) throws(Failure) {
        guard available else {
            throw Failure(description: "\(writer) is missing: tools/install-deps installs systemd-journal-remote")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: writer)
        process.arguments = ["--output=\(path)", "--split-mode=none", "-"]
        let input = Pipe()
        process.standardInput = input
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw Failure(description: "\(writer) does not start: \(error)")
        }
        input.fileHandleForWriting.write(export)
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(writer) failed (exit \(process.terminationStatus)) writing \(path)")
        }
    }
}
