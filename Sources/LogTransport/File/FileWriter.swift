// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// Appends each batch to the log file with one `write` (lines joined by newlines). Lines holding
/// a newline cannot be framed in a file and are rejected, as are lines over `maxLineLength`.
public final class FileWriter: LogWriter {
    let options: FileOptions
    private let fd: Int32
    private var buffer: UnsafeMutableRawPointer
    private var capacity: Int
    private var closed = false
    public private(set) var statistics = WriterStatistics()

    public init(options: FileOptions) throws(TransportError) {
        try options.validate()
        self.options = options
        // No symbolic link, no FIFO, nobody else's file: whoever made the log file reads every line.
        let opened = systemCallResult {
            open(options.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, options.mode)
        }
        switch opened {
        case .success(let descriptor): fd = descriptor
        case .failure(let error):
            fd = -1
            closed = true
            throw .system(
                operation: "open \(options.path) for appending"
                    + (error.code == ELOOP ? " (it is a symbolic link; give the real path)" : ""), errno: error.code)
        }
        do throws(TransportError) {
            try FileReader.checkLogFile(fd: fd, options: options)
            try options.owners.checkParents(of: options.path, "log file")
        } catch {
            Glibc.close(fd)
            closed = true
            throw error
        }
        capacity = 1 << 16
        buffer = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit {
        close()
        buffer.deallocate()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    public func publish(_ batch: LineBatch) throws(TransportError) -> PublishResult {
        precondition(!closed, "publish on a closed FileWriter")
        let needed = batch.byteCount + batch.count
        if needed > capacity {
            buffer.deallocate()
            capacity = max(needed, capacity * 2)
            buffer = .allocate(byteCount: capacity, alignment: 64)
        }
        var result = PublishResult()
        var length = 0
        batch.forEachLine { line in
            if line.count > options.maxLineLength
                || (line.count > 0 && memchr(line.baseAddress!, 0x0A, line.count) != nil)
            {
                result.rejected += 1
                return
            }
            if line.count > 0 { (buffer + length).copyMemory(from: line.baseAddress!, byteCount: line.count) }
            length += line.count
            (buffer + length).storeBytes(of: 0x0A, as: UInt8.self)
            length += 1
            result.accepted += 1
        }
        var written = 0
        while written < length {
            let count = try transportCallCount("append to \(options.path)") {
                write(fd, buffer + written, length - written)
            }
            if count < 0 { throw .system(operation: "append to \(options.path)", errno: EAGAIN) }
            written += count
        }
        statistics.linesWritten += UInt64(result.accepted)
        statistics.linesRejected += UInt64(result.rejected)
        return result
    }
}
