// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

/// `portcullis tap`: an operator's extra reader, in its own process, beside a lossless reader.
@Suite("portcullis tap")
struct TapTests {
    /// Starts `portcullis tap ARGUMENTS` and waits until it says it is attached.
    func startTap(_ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Products.cli)
        process.arguments = ["tap"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("attached") {
            let chunk = errors.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        return (process, errors)
    }

    func waitForExit(_ process: Process, seconds: Double = 20) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    @Test("tap prints every line of every transport, next to a lossless reader", arguments: ["shm", "socket", "file"])
    func tapSeesTheStream(kind: String) throws {
        let scratch = TransportScratch()
        let output = scratch.filePath + ".tap"
        defer {
            scratch.remove()
            unlink(output)
        }
        let reader = try Probe(["read"] + scratch.arguments(kind) + ["--expect", "300"])
        let (tap, errors) = try startTap(scratch.arguments(kind) + ["--count", "300", "--output", output])
        let writer = try Probe(["write"] + scratch.arguments(kind) + ["--lines", "300", "--batch", "7"])
        #expect(try writer.finish().status == 0)
        waitForExit(tap)
        #expect(tap.terminationStatus == 0)
        let lines = try String(contentsOfFile: output, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 300)
        #expect(lines.first?.hasPrefix("w.0:0:") == true)
        #expect(lines.last?.hasPrefix("w.0:299:") == true)
        #expect(
            String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .contains("tap: 300 lines, 0 lost"))
        #expect((try reader.finish().summary["received"] as? Int) == 300, "the daemon's reader lost nothing")
    }

    @Test("tap stops on SIGINT and reports")
    func tapStopsOnSignal() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let (tap, errors) = try startTap(scratch.arguments("shm"))
        kill(tap.processIdentifier, SIGINT)
        waitForExit(tap, seconds: 10)
        #expect(tap.terminationReason == .exit && tap.terminationStatus == 0)
        #expect(
            String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                .contains("tap: 0 lines"))
    }

    @Test("on a terminal tap escapes control bytes by default; --no-escape writes them as they are")
    func escapesOnATerminal() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("bad \u{1b}[2J line\n".utf8))
        let tap = "\(Products.cli) tap --transport file --file-path \(scratch.filePath) --file-from-start --count 1"
        // script(1) gives tap a terminal for its standard output and copies what it shows.
        let shown = try runProcess("/usr/bin/script", ["-q", "-e", "-c", tap, "/dev/null"])
        #expect(shown.stdout.contains("bad \\x1b[2J line"), "\(shown.stdout)")
        #expect(!shown.stdout.contains("\u{1b}[2J"))
        let raw = try runProcess("/usr/bin/script", ["-q", "-e", "-c", tap + " --no-escape", "/dev/null"])
        #expect(raw.stdout.contains("\u{1b}[2J"))
    }
}
