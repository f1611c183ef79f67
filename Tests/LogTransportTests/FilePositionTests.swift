// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
@testable import LogTransport
import PortcullisSystem
import Testing
import TestSupport

@Suite("File position across readers")
struct FilePositionTests {
    @Test("a reader with a position path goes on where the last one closed: the lines logged meanwhile are read")
    func resumesWhereTheLastReaderClosed() throws {
        let scratch = TransportScratch()
        let position = scratch.filePath + ".position"
        defer {
            scratch.remove()
            unlink(position)
        }
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("one\ntwo\n".utf8))
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = .read
        options.positionPath = position
        options.startAtBeginning = true
        let first = try FileReader(options: options)
        let batch = LineBatch()
        #expect(try first.poll(into: batch) == 2)
        first.close()
        let handle = try #require(FileHandle(forWritingAtPath: scratch.filePath))
        handle.seekToEndOfFile()
        handle.write(Data("three\nfour\nfive\n".utf8))
        try handle.close()
        options.startAtBeginning = false  // as the daemon: only new lines, where nothing was kept
        let second = try FileReader(options: options)
        batch.removeAll()
        #expect(try second.poll(into: batch) == 3, "the three lines logged while no reader ran")
        #expect(access(position, F_OK) != 0, "used once: a crash of this reader starts the next at the end")
        second.close()
        // The file replaced (rotation while nobody read): the place kept is not in it, and all of
        // the new file came after that place.
        rename(scratch.filePath, scratch.filePath + ".1")
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("new one\n".utf8))
        let third = try FileReader(options: options)
        batch.removeAll()
        #expect(try third.poll(into: batch) == 1, "another file: from its start")
        third.close()
        // Without a position kept: from the end.
        unlink(position)
        let fourth = try FileReader(options: options)
        batch.removeAll()
        #expect(try fourth.poll(into: batch) == 0, "no position: only new lines")
        fourth.close()
    }

    // The limit only ends a hang (a FIFO opened for reading waits for a writer): Swift Testing
    // counts it from the test's start, and on 2 CPUs with a CPU hog beside CI the other tests'
    // blocking waits held its threads for over a minute (the test failed at 60 s while its own
    // work takes milliseconds). Ten minutes is CI's whole run.
    @Test(
        "a position file that is a FIFO, a link or no JSON is moved aside with one note; the reader starts at once",
        .timeLimit(.minutes(10)))
    func badPositionFileSetAside() throws {
        let scratch = TransportScratch()
        let position = scratch.filePath + ".position"
        defer {
            scratch.remove()
            unlink(position)
            unlink(position + ".bad")
        }
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("one\n".utf8))
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = .read
        options.positionPath = position
        let batch = LineBatch()
        let plants: [(String, () -> Void)] = [
            ("FIFO", { mkfifo(position, 0o600) }),
            ("link", { symlink("/dev/zero", position) }),
            ("not JSON", { FileManager.default.createFile(atPath: position, contents: Data("{\"dev".utf8)) }),
        ]
        for (what, plant) in plants {
            unlink(position + ".bad")
            plant()
            // Before the fix, opening the FIFO waited for a writer: the reader never started.
            let reader = try FileReader(options: options)
            batch.removeAll()
            #expect(try reader.poll(into: batch) == 0, "\(what): from the end, as without a position")
            var info = stat()
            #expect(lstat(position + ".bad", &info) == 0, "\(what): moved aside")
            reader.close()
            #expect(
                JSONOutput.read(FileReader.Position.self, from: position) != nil, "\(what): a new place kept")
            unlink(position)
        }
    }
}
