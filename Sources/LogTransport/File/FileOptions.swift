// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Settings of the file transport.
public struct FileOptions: Sendable, Equatable {
    public enum ReadMethod: String, Sendable, CaseIterable {
        /// io_uring reads, `uringDepth` buffers queued ahead at consecutive offsets.
        case uring
        /// Plain `pread`.
        case read
    }

    /// The log file.
    public var path = "/var/log/portcullis/offences.log"
    /// Bytes per read (the prototype's read-ahead buffer was 2048).
    public var bufferSize = 2048
    public var readMethod = ReadMethod.uring
    /// io_uring reads queued at once.
    public var uringDepth = 4
    /// A new reader starts at the beginning of the file (else at its end: only new lines).
    public var startAtBeginning = false
    /// Longest line; longer ones are skipped and counted as rejected.
    public var maxLineLength = 4096
    /// Mode of a file the writer creates.
    public var mode: mode_t = 0o640
    /// Whose files (and, for sockets, reader processes) are used besides root's and our own.
    public var owners = TrustedOwners()
    /// Where a reader keeps its place when it closes (the daemon's: in its state directory): the
    /// next reader with this path goes on from there in the same file, so the lines logged while
    /// none ran are read. nil: start at the end (or the beginning, `startAtBeginning`).
    public var positionPath: String?

    public init() {}

    func validate() throws(TransportError) {
        guard !path.isEmpty else { throw .invalidConfiguration("--file-path must not be empty") }
        guard (64...(1 << 24)).contains(bufferSize) else {
            throw .invalidConfiguration("--file-buffer must be 64...16777216 bytes, got \(bufferSize)")
        }
        guard (1...64).contains(uringDepth) else { throw .invalidConfiguration("--file-uring-depth must be 1...64") }
        guard (1...(1 << 20)).contains(maxLineLength) else {
            throw .invalidConfiguration("--file-max-line must be 1...1048576 bytes")
        }
        if mode & 0o002 != 0 { throw .invalidConfiguration("a world-writable log file mode is refused") }
    }
}
