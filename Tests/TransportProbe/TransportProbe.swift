// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import LogTransport
import PortcullisCore
import PortcullisCommandLine

/// A writer or reader of test lines in a process of its own, so the transport tests cross real
/// process boundaries (and can kill either side).
///
/// Line format: `SOURCE:SEQ:FILLER` where FILLER is a function of SEQ, so a reader can check every
/// line byte for byte, and per source that sequence numbers arrive in order, exactly once.
@main
struct TransportProbe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transport-probe",
        abstract: "Write or read verifiable test lines through a LogTransport.",
        subcommands: [Write.self, Read.self])

    /// The line `seq` of `source`.
    static func line(source: String, sequence: Int) -> [UInt8] {
        var bytes = Array("\(source):\(sequence):".utf8)
        bytes += filler(sequence: sequence)
        return bytes
    }

    static func filler(sequence: Int) -> [UInt8] {
        let length = (sequence &* 13) % 61
        return (0..<length).map { UInt8(ascii: "a") + UInt8((sequence &* 7 &+ $0) % 26) }
    }
}

struct Write: ParsableCommand {
    @OptionGroup var transport: TransportOptions
    @Option(help: "Name of this writer; lines are tagged TAG.THREAD.") var tag = "w"
    @Option(help: "Writer threads, each with its own LogWriter.") var threads = 1
    @Option(help: "Lines per thread.") var lines = 1000
    @Option(help: "Lines per publish.") var batch = 64
    @Option(help: "Microseconds to sleep after each publish.") var paceMicroseconds = 0
    @Option(help: "Also publish a line one byte over the transport's limit every N lines (0: never).")
    var overlongEvery = 0
    @Option(help: "Number the first line of each thread with this.") var firstSequence = 0
    @Option(help: "Write offence lines instead: this many clients from 198.18.0.0/15, each --lines times.")
    var offenders = 0
    @Option(help: "Print \"published\" once thread 0 has published this many lines (0: never).")
    var sayAfter = 0

    func run() throws {
        let configuration = transport.configuration
        let written = AtomicTotals()
        if offenders > 0 {
            // Client i is 198.18.0.0 + 1 + i; all of its lines follow each other round by round.
            let writer = try configuration.makeWriter()
            defer { writer.close() }
            let batch = LineBatch()
            for _ in 0..<lines {
                for client in 0..<offenders {
                    let address = IPAddress(ipv4NetworkOrder: UInt32(0xC612_0001 + client).bigEndian)
                    let text = OffenceLine.text(time: UTCTime(secondsSinceEpoch: 1_795_718_566), address: address)
                    if !batch.append(text) || batch.isFull {
                        written.add(accepted: try writer.publish(batch).accepted, rejected: 0)
                        batch.removeAll()
                        batch.append(text)
                    }
                }
            }
            written.add(accepted: try writer.publish(batch).accepted, rejected: 0)
            print("{\"written\": \(written.accepted), \"rejected\": 0}")
            return
        }
        let (tag, lineCount, batch, pace, overlongEvery, firstSequence, sayAfter) =
            (tag, lines, batch, paceMicroseconds, overlongEvery, firstSequence, sayAfter)
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            do {
                let writer = try configuration.makeWriter()
                defer { writer.close() }
                let lines = LineBatch(byteCapacity: 1 << 20, lineCapacity: max(batch, 1) + 1)
                let source = "\(tag).\(thread)"
                var sequence = firstSequence
                var announced = false
                let overlong = [UInt8](repeating: UInt8(ascii: "x"), count: configuration.maxLineLength + 1)
                while sequence < firstSequence + lineCount {
                    lines.removeAll()
                    while lines.count < batch && sequence < firstSequence + lineCount {
                        lines.append(TransportProbe.line(source: source, sequence: sequence))
                        sequence += 1
                        if overlongEvery > 0 && sequence % overlongEvery == 0 { lines.append(overlong) }
                    }
                    let result = try writer.publish(lines)
                    written.add(accepted: result.accepted, rejected: result.rejected)
                    if thread == 0 && sayAfter > 0 && !announced && sequence - firstSequence >= sayAfter {
                        announced = true
                        print("published")
                        fflush(nil)
                    }
                    if pace > 0 { usleep(UInt32(pace)) }
                }
            } catch {
                FileHandle.standardError.write(Data("transport-probe write: \(error)\n".utf8))
                written.fail()
            }
        }
        print("{\"written\": \(written.accepted), \"rejected\": \(written.rejected)}")
        if written.failed { throw ExitCode.failure }
    }
}

/// Totals shared by the writer threads.
final class AtomicTotals: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var accepted = 0
    private(set) var rejected = 0
    private(set) var failed = false
    func add(accepted: Int, rejected: Int) {
        lock.withLock {
            self.accepted += accepted
            self.rejected += rejected
        }
    }
    func fail() { lock.withLock { failed = true } }
}

struct Read: ParsableCommand {
    @OptionGroup var transport: TransportOptions
    @Option(help: "block (lossless) or drop (never stalls writers).") var policy: SlowReaderPolicy = .block
    @Option(help: "Stop once received + lost reaches this.") var expect = Int.max
    @Option(help: "Stop after this many milliseconds without a line.") var idleTimeout = 5000
    @Option(help: "Stop (detach) after receiving this many lines.") var stopAfter = Int.max
    @Option(help: "Microseconds to sleep after each receive (a slow reader).") var slowMicroseconds = 0
    @Option(help: "Lines per receive.") var batch = 4096

    func run() throws {
        let reader = try transport.configuration.makeReader(policy: policy)
        defer { reader.close() }
        print("ready")
        fflush(nil)
        let lines = LineBatch(byteCapacity: 1 << 20, lineCapacity: batch)
        var check = SequenceCheck()
        var idleSince = Date()
        while true {
            let statistics = reader.statistics
            if Int(statistics.linesReceived + statistics.linesLost) >= expect || check.received >= stopAfter { break }
            lines.removeAll()
            let count = try reader.wait(into: lines, timeoutMilliseconds: 50)
            if count == 0 {
                if Date().timeIntervalSince(idleSince) * 1000 > Double(idleTimeout) { break }
                continue
            }
            idleSince = Date()
            lines.forEachLine { check.verify(Array($0)) }
            if slowMicroseconds > 0 { usleep(UInt32(slowMicroseconds)) }
        }
        let statistics = reader.statistics
        let summary: [String: Any] = [
            "received": check.received, "transport_received": statistics.linesReceived,
            "lost": statistics.linesLost, "duplicates": check.duplicates, "gaps": check.gaps,
            "corrupt": check.corrupt, "refused": statistics.writersRefused, "rejected": statistics.linesRejected,
            "accept_failures": statistics.acceptFailures,
            "sources": check.sources.mapValues { ["first": $0.first, "last": $0.last, "count": $0.count] },
        ]
        let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// Per-source order and content checks of received lines.
struct SequenceCheck {
    struct Source {
        var first: Int
        var last: Int
        var count: Int
    }
    var sources: [String: Source] = [:]
    var received = 0
    var duplicates = 0
    /// Lines missing between the first and last seen of a source.
    var gaps = 0
    var corrupt = 0

    mutating func verify(_ line: [UInt8]) {
        received += 1
        let parts = line.split(separator: UInt8(ascii: ":"), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, let sequence = Int(String(decoding: parts[1], as: UTF8.self)) else {
            corrupt += 1
            return
        }
        let source = String(decoding: parts[0], as: UTF8.self)
        guard line == TransportProbe.line(source: source, sequence: sequence) else {
            corrupt += 1
            return
        }
        guard var known = sources[source] else {
            sources[source] = Source(first: sequence, last: sequence, count: 1)
            return
        }
        if sequence <= known.last {
            duplicates += 1
            return
        }
        gaps += sequence - known.last - 1
        known.last = sequence
        known.count += 1
        sources[source] = known
    }
}
