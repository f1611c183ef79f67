// SPDX-License-Identifier: Apache-2.0
import Foundation
@testable import LogTransport
import Testing
import TestSupport

@Suite("Corrupt slots")
struct CorruptSlotTests {
    @Test("a slot with an impossible length is counted and skipped; the lines after it arrive and the ring goes on")
    func impossibleLengthDoesNotWedgeTheRing() throws {
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = ShmOptions()
        options.name = scratch.shmName
        options.rings = 1
        options.slotsPerRing = 16
        options.readerSlots = 2
        let reader = try ShmReader(options: options)
        defer { reader.close() }
        let writer = try ShmWriter(options: options)
        defer { writer.close() }
        let batch = LineBatch()
        for index in 0..<3 { batch.append("line \(index)") }
        _ = try writer.publish(batch)
        // The first slot's length set to 65,535, as a hostile or broken writer could.
        let layout = ShmLayout(options)
        let slot = layout.ringsOffset + layout.ringHeaderAndCursors
        let fd = open("/dev/shm" + scratch.shmName, O_RDWR)
        var length: UInt32 = 0xFFFF
        #expect(pwrite(fd, &length, 4, off_t(slot + ShmField.Slot.length)) == 4)
        close(fd)
        let received = LineBatch()
        #expect(try reader.poll(into: received) == 2)
        #expect(reader.statistics.linesRejected == 1)
        // The ring is not stuck: a lossless writer fills it past its size again and again.
        received.removeAll()
        var read = 0
        for round in 0..<5 {
            batch.removeAll()
            for index in 0..<16 { batch.append("round \(round) line \(index)") }
            _ = try writer.publish(batch)
            received.removeAll()
            read += try reader.poll(into: received)
        }
        #expect(read == 80)
    }

    @Test("a socket reader out of file descriptors pauses accepting (counted) and still gets every line")
    func outOfDescriptors() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        // The reader runs with 9 descriptors: a few of six writers at once exhaust it.
        let reader = try Probe(
            ["read"] + scratch.arguments("socket") + ["--idle-timeout", "3000", "--expect", "600"],
            prefix: ["/usr/bin/prlimit", "--nofile=9:9", "--"])
        let writers = try (0..<6).map { index in
            try Probe(
                ["write"] + scratch.arguments("socket") + [
                    "--tag", "w\(index)", "--lines", "100", "--pace-microseconds", "20000", "--batch", "10",
                ])
        }
        for writer in writers { #expect(try writer.finish().status == 0) }
        let summary = try reader.finish().summary
        #expect((summary["received"] as? Int) == 600, "\(summary)")
        #expect(((summary["accept_failures"] as? Int) ?? 0) >= 1, "\(summary)")
    }
}

@Suite("Liveness", .enabled(if: Privileges.runnable), .serialized)
struct LivenessTests {
    @Test("a writer of another user in its own pid namespace (its /proc hiding the reader) loses no line")
    func writerInAnotherPidNamespace() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let layout = [
            "--shm-segments", "1", "--shm-slots", "256", "--shm-reader-slots", "1", "--block-timeout", "600000",
        ]
        // The segment belongs to the service user (it was first), as on a real host.
        let creator = try Probe(
            ["write"] + scratch.arguments("shm") + layout + ["--lines", "1"], asUser: (65534, 65534))
        #expect(try creator.finish().status == 0)
        let reader = try Probe(
            ["read"] + scratch.arguments("shm") + layout + [
                "--trust-uid", "65534", "--expect", "20000", "--slow-microseconds", "15000", "--batch", "64",
            ])
        // A pid namespace of its own with its own /proc: the reader's pid means nothing in there,
        // and the writer waits for it (the ring is full) over and over.
        let writer = try Probe(
            ["write"] + scratch.arguments("shm") + layout + ["--lines", "20000", "--batch", "50"],
            prefix: [
                "/usr/bin/unshare", "--pid", "--fork", "--mount-proc", "/usr/bin/setpriv", "--reuid=65534",
                "--regid=65534", "--clear-groups",
            ])
        #expect(try writer.finish().status == 0)
        let summary = try reader.finish().summary
        #expect((summary["received"] as? Int) == 20000, "\(summary)")
        #expect((summary["gaps"] as? Int) == 0 && (summary["lost"] as? Int) == 0)
    }
}
