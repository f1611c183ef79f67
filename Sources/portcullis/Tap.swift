// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import LogTransport
import PortcullisCommandLine
import PortcullisSystem

struct Tap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach as one more reader of the offence-line transport and print what passes.",
        discussion: """
            Watches the stream the daemon reads, without taking anything from it: every reader gets \
            every line. By default the tap is a lossy reader (--policy drop): writers never wait for it, \
            and what it misses is counted and reported when it stops (Ctrl-C, --count or --duration). \
            The file transport is tailed at the tap's own pace.
            """)

    @OptionGroup var transport: TransportOptions

    @Option(help: "drop (never slow the writers; count what is missed) or block (lossless, writers wait).")
    var policy: SlowReaderPolicy = .drop

    @Option(help: ArgumentHelp("Write the lines to this file instead of standard output.", valueName: "file"))
    var output: String?

    @Option(help: "Stop after this many lines.")
    var count: Int?

    @Option(help: ArgumentHelp("Stop after this many seconds.", valueName: "seconds"))
    var duration: Double?

    @Option(
        help: ArgumentHelp(
            "Once attached, write the transport and policy here as JSON (replaced atomically).",
            valueName: "path"))
    var readyFile: String?

    @Option(help: ArgumentHelp("At exit, write the lines written and lost here as JSON.", valueName: "path"))
    var summaryJson: String?

    @Flag(
        inversion: .prefixedNo,
        help: ArgumentHelp(
            "Show control bytes, backslashes and non-ASCII bytes as \\xNN (default: on a terminal only, so a "
                + "crafted line cannot send escape sequences to it)."))
    var escape: Bool?

    func run() throws {
        try reportingErrors {
            if let count, count < 1 { throw UsageError("--count must be at least 1") }
            if let duration, !(duration > 0) { throw UsageError("--duration must be more than 0 seconds") }
            let destination: Int32
            if let output {
                destination = try systemCall(
                    { open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o640) },
                    orThrow: { UsageError("cannot write \(output): \($0)") })
            } else {
                destination = STDOUT_FILENO
            }
            defer { if output != nil { close(destination) } }
            let reader: LogReader
            do {
                reader = try transport.configuration.makeReader(policy: policy)
            } catch {
                throw UsageError("cannot attach to the \(transport.transport.rawValue) transport: \(error)")
            }
            defer { reader.close() }

            // Ctrl-C and SIGTERM end the tap between batches: blocked, then checked after each.
            var signals = StopSignals()
            printError(
                "tap: attached to the \(transport.transport.rawValue) transport (\(policy.rawValue) policy)",
                prefix: false)
            if let readyFile {
                var ready = JSONObject()
                ready["transport"] = .text(transport.transport.rawValue)
                ready["policy"] = .text(policy.rawValue)
                ready["pid"] = .integer(Int64(getpid()))
                try writeJSON(ready, to: readyFile)
            }

            let escaping = escape ?? (output == nil && isatty(STDOUT_FILENO) == 1)
            let lines = LineBatch()
            var text: [UInt8] = []
            var written = 0
            let start = SystemClock.monotonicSeconds()
            while count.map({ written < $0 }) ?? true {
                if signals.arrived() { break }
                if let duration, SystemClock.monotonicSeconds() - start >= duration { break }
                lines.removeAll()
                let received: Int
                do {
                    received = try reader.wait(into: lines, timeoutMilliseconds: 100)
                } catch {
                    throw UsageError("reading the \(transport.transport.rawValue) transport: \(error)")
                }
                guard received > 0 else { continue }
                text.removeAll(keepingCapacity: true)
                let take = min(received, (count ?? Int.max) - written)
                for index in 0..<take {
                    lines.withUnsafeLine(index) { line in
                        if escaping { appendEscaped(line, to: &text) } else { text.append(contentsOf: line) }
                    }
                    text.append(0x0A)
                }
                written += take
                try writeAll(text, to: destination)
            }
            let statistics = reader.statistics
            printError("tap: \(written) lines, \(statistics.linesLost) lost", prefix: false)
            if let summaryJson {
                var summary = JSONObject()
                summary["lines"] = .integer(Int64(written))
                summary["lost"] = .unsigned(statistics.linesLost)
                try writeJSON(summary, to: summaryJson)
            }
        }
    }

    private func appendEscaped(_ line: UnsafeRawBufferPointer, to text: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        for byte in line {
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") || byte == 0x09 {
                text.append(byte)
            } else {
                text += [UInt8(ascii: "\\"), UInt8(ascii: "x"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            }
        }
    }

    private func writeAll(_ bytes: [UInt8], to fd: Int32) throws {
        var offset = 0
        while offset < bytes.count {
            offset += try bytes.withUnsafeBytes { raw in
                try systemCall({ write(fd, raw.baseAddress! + offset, raw.count - offset) }) { error in
                    UsageError("cannot write the lines: \(error)")
                }
            }
        }
    }

    private func writeJSON(_ object: JSONObject, to path: String) throws {
        do throws(Errno) {
            try JSONOutput.write(object, to: path)
        } catch {
            throw UsageError("cannot write \(path): \(error)")
        }
    }
}
