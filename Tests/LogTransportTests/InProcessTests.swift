// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import PortcullisSystem
import Testing
import TestSupport
@testable import LogTransport

@Suite("Transport edge cases")
struct InProcessTests {
    func configuration(_ kind: TransportKind, _ scratch: TransportScratch) -> TransportConfiguration {
        var configuration = TransportConfiguration(kind: kind)
        configuration.shm.name = scratch.shmName
        configuration.shm.slotsPerRing = 1024
        configuration.socket.directory = scratch.socketDirectory
        configuration.file.path = scratch.filePath
        return configuration
    }

    func receive(_ reader: LogReader, count: Int) throws -> [[UInt8]] {
        let batch = LineBatch(byteCapacity: 1 << 20, lineCapacity: 4096)
        var lines: [[UInt8]] = []
        let deadline = Date().addingTimeInterval(10)
        while lines.count < count && Date() < deadline {
            batch.removeAll()
            _ = try reader.wait(into: batch, timeoutMilliseconds: 50)
            for index in 0..<batch.count { lines.append(batch.line(index)) }
        }
        return lines
    }

    @Test(
        "an overlong line is rejected and counted, never cut; empty and binary lines pass unchanged",
        arguments: TransportKind.writable)
    func framing(kind: TransportKind) throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let configuration = configuration(kind, scratch)
        let reader = try configuration.makeReader()
        defer { reader.close() }
        let writer = try configuration.makeWriter()
        defer { writer.close() }
        // Every byte value (files cannot carry a newline inside a line), an empty line, the longest line.
        let bytes = (0...255).map(UInt8.init).filter { kind != .file || $0 != 0x0A }
        let binary = stride(from: 0, to: bytes.count, by: configuration.maxLineLength).map {
            Array(bytes[$0..<min($0 + configuration.maxLineLength, bytes.count)])
        }
        let longest = [UInt8](repeating: 0xFF, count: configuration.maxLineLength)
        let overlong = [UInt8](repeating: 0x41, count: configuration.maxLineLength + 1)
        let expected = binary + [[], longest, Array("after".utf8)]
        let batch = LineBatch()
        for line in binary + [[], longest, overlong, Array("after".utf8)] { batch.append(line) }
        if kind == .file { batch.append(Array("new\nline".utf8)) }  // cannot be framed in a file
        let result = try writer.publish(batch)
        #expect(result.accepted == expected.count)
        #expect(result.rejected == (kind == .file ? 2 : 1))
        #expect(writer.statistics.linesRejected == UInt64(result.rejected))
        #expect(try receive(reader, count: expected.count) == expected)
    }

    @Test("sockets and segments are not world-writable")
    func permissions() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let socketReader = try configuration(.socket, scratch).makeReader()
        defer { socketReader.close() }
        var info = stat()
        #expect(stat(scratch.socketDirectory, &info) == 0 && info.st_mode & 0o777 == 0o750)
        let socket = try #require(try FileManager.default.contentsOfDirectory(atPath: scratch.socketDirectory).first)
        #expect(stat(scratch.socketDirectory + "/" + socket, &info) == 0 && info.st_mode & 0o777 == 0o660)
        let shmReader = try configuration(.shm, scratch).makeReader()
        defer { shmReader.close() }
        #expect(stat("/dev/shm" + scratch.shmName, &info) == 0 && info.st_mode & 0o777 == 0o600)
        // A world-writable directory is refused outright.
        let open = NSTemporaryDirectory() + "pct-\(getpid())-open"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        defer { rmdir(open) }
        var options = SocketOptions()
        options.directory = open
        #expect(
            throws: TransportError.untrusted("socket directory \(open) is writable by everyone; chmod o-w \(open)")
        ) {
            _ = try SocketReader(options: options)
        }
    }

    @Test("a segment left by a crash with another layout is recreated; one in use is not")
    func staleSegment() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var small = ShmOptions()
        small.name = scratch.shmName
        small.slotsPerRing = 128
        // A dead process's segment: create it from a child that exits at once.
        let child = try Probe(["write", "--shm-name", scratch.shmName, "--shm-slots", "128", "--lines", "10"])
        #expect(try child.finish().status == 0)
        var larger = small
        larger.slotsPerRing = 256
        let writer = try ShmWriter(options: larger)
        #expect(writer.segment.layout.slotsPerRing == 256, "the leftover was replaced")
        // Now it is in use: another layout is refused with a message naming both.
        #expect(throws: TransportError.self) { _ = try ShmWriter(options: small) }
        // A reader adopts whatever layout is there.
        let reader = try ShmReader(options: small)
        #expect(reader.segment.layout.slotsPerRing == 256)
        reader.close()
        writer.close()
    }

    @Test(
        "file tail: pieces come out whole; truncation and rename+recreate are followed",
        arguments: FileOptions.ReadMethod.allCases)
    func fileTail(method: FileOptions.ReadMethod) throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = method
        options.bufferSize = 64  // small reads: lines straddle them
        let reader = try FileReader(options: options)  // the file does not exist yet
        defer { reader.close() }
        func append(_ text: String) {
            let fd = open(scratch.filePath, O_WRONLY | O_APPEND | O_CREAT, 0o640)
            _ = text.withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        func text(_ lines: [[UInt8]]) -> [String] { lines.map { String(decoding: $0, as: UTF8.self) } }

        append("first half of a line")
        let batch = LineBatch()
        #expect(try reader.poll(into: batch) == 0, "no line until its end arrives")
        append(" and its end\n" + String(repeating: "x", count: 150) + "\nthird")
        append("\n")
        #expect(
            text(try receive(reader, count: 3)) == [
                "first half of a line and its end", String(repeating: "x", count: 150), "third",
            ])

        // Truncation: read again from the start.
        truncate(scratch.filePath, 0)
        append("after truncation\n")
        #expect(text(try receive(reader, count: 1)) == ["after truncation"])
        #expect(reader.truncations == 1)

        // Rotation: the last lines of the old file, then the new file from its start.
        append("last of old\n")
        rename(scratch.filePath, scratch.filePath + ".1")
        append("first of new\n")
        #expect(text(try receive(reader, count: 2)) == ["last of old", "first of new"])
        #expect(reader.rotations == 1)
        #expect(reader.statistics.linesRejected == 0, "no line was cut or dropped")
    }
}

@Suite("Shared readers and start positions")
struct SharedReaderTests {
    @Test("worker threads sharing one shm reader get every line exactly once", arguments: [true, false])
    func workersShareAReader(stealing: Bool) throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = ShmOptions()
        options.name = scratch.shmName
        options.rings = 4
        options.slotsPerRing = 256
        // Lossless however long a starved worker takes (the writer waits up to a minute; the 1 s
        // default dropped lines while other suites held both CPUs).
        options.blockTimeoutMilliseconds = 60_000
        let reader = try ShmReader(options: options, workloadStealing: stealing)
        defer { reader.close() }
        let lines = 20_000
        let writers = try (0..<4).map { _ in try ShmWriter(options: options) }
        let seen = SeenLines()
        let done = AtomicFlag()
        // Threads of their own, as the daemon's workers are (the global queue's may all be busy
        // with other suites' blocking work).
        let workers = try (0..<2).map { worker in
            try SystemThread.spawn {
                let batch = LineBatch(byteCapacity: 1 << 16, lineCapacity: 64)
                var mine: [String] = []
                while !done.isSet || batch.count > 0 {
                    batch.removeAll()
                    _ = reader.wait(into: batch, timeoutMilliseconds: 20, worker: worker, workers: 2)
                    for index in 0..<batch.count { mine.append(String(decoding: batch.line(index), as: UTF8.self)) }
                }
                seen.add(mine)
            }
        }
        // Four writer threads' worth of rings, filled from here in turns.
        let batch = LineBatch()
        for start in stride(from: 0, to: lines, by: 100) {
            batch.removeAll()
            for number in start..<(start + 100) { batch.append("\(number % 4):\(number)") }
            _ = try writers[(start / 100) % 4].publish(batch)
        }
        #expect(writers.allSatisfy { $0.statistics.blockTimeouts == 0 }, "no writer gave up on the reader")
        for writer in writers { writer.close() }
        let deadline = Date().addingTimeInterval(60)
        while reader.statistics.linesReceived < UInt64(lines) && Date() < deadline { usleep(10_000) }
        done.set()
        for worker in workers { worker.join() }
        let all = seen.lines
        #expect(all.count == lines, "every line once")
        #expect(Set(all).count == lines, "no line twice")
    }

    @Test("a file reader starts at the end unless told to start at the beginning")
    func fileStartPosition() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = FileOptions()
        options.path = scratch.filePath
        let writer = try FileWriter(options: options)
        let batch = LineBatch()
        batch.append("old line")
        _ = try writer.publish(batch)
        let fromEnd = try FileReader(options: options)
        options.startAtBeginning = true
        let fromStart = try FileReader(options: options)
        batch.removeAll()
        batch.append("new line")
        _ = try writer.publish(batch)
        let received = LineBatch()
        #expect(try fromEnd.poll(into: received) == 1)
        #expect(received.line(0) == Array("new line".utf8))
        received.removeAll()
        #expect(try fromStart.poll(into: received) == 2)
        #expect(received.line(0) == Array("old line".utf8))
    }
}

final class SeenLines: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var lines: [String] = []
    func add(_ more: [String]) { lock.withLock { lines += more } }
}

final class AtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

@Suite("Slot ownership")
struct SlotOwnershipTests {
    @Test("a slot left half-claimed by a killed process is reclaimed; one held by a live process is not")
    func halfClaimedSlot() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = ShmOptions()
        options.name = scratch.shmName
        options.readerSlots = 1
        options.slotsPerRing = 64
        let first = try ShmReader(options: options)
        let segment = first.segment
        first.close()
        // A process that exits at once: its pid is then nobody's.
        let child = try runProcess("/bin/sh", ["-c", "echo $$"])
        let deadPID = try #require(UInt32(child.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        let entry = segment.readerEntry(0)
        let current = OwnerWord(entry.load(as: UInt64.self))
        entry.storeBytes(of: current.next(state: OwnerWord.claiming, pid: deadPID).raw, as: UInt64.self)
        let second = try ShmReader(options: options)  // takes the dead claimer's slot
        #expect(second.slotIndex == 0)
        // Held (even half-claimed) by a live process, whatever its pid says: refused, not stolen.
        // A live holder is one that holds the slot's lock byte, here through another open of the
        // segment (the first reader's); its pid is one no process has.
        second.close()
        let now = OwnerWord(entry.load(as: UInt64.self))
        entry.storeBytes(of: now.next(state: OwnerWord.claiming, pid: deadPID).raw, as: UInt64.self)
        #expect(segment.lock(segment.readerLock(0)))
        #expect(throws: TransportError.segmentFull(name: scratch.shmName, what: "reader slot")) {
            _ = try ShmReader(options: options)
        }
        segment.unlock(segment.readerLock(0))
        let third = try ShmReader(options: options)  // the holder let go: the slot is free to take
        #expect(third.slotIndex == 0)
        third.close()
    }
}
