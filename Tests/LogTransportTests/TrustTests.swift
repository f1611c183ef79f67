// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
import PortcullisSystem
import Testing
import TestSupport

/// Who may feed a reader: a segment, socket directory or log file made by an untrusted user, or
/// one such a user could write or replace, is refused with one line that says what to do; output
/// paths follow no link; a full /dev/shm is an error, not SIGBUS; crafted headers are refused.
@Suite("Who may feed a reader", .enabled(if: Privileges.runnable), .serialized)
struct TrustTests {
    static let nobody = (uid: UInt32(65534), gid: UInt32(65534))

    /// A one-ring segment named for `scratch`.
    func oneRing(_ scratch: TransportScratch, slots: Int) -> ShmOptions {
        var options = ShmOptions()
        options.name = scratch.shmName
        options.rings = 1
        options.slotsPerRing = slots
        return options
    }

    func refusal(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test(
        "a segment an untrusted user made first is refused where it cannot be replaced, replaced by root (the daemon starts), and used as is once its user is trusted"
    )
    func squattedSegment() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let path = "/dev/shm" + scratch.shmName
        func squat() throws -> stat {
            // The squatter creates the name first (as a writer may).
            let squatter = try Probe(["write"] + scratch.arguments("shm") + ["--lines", "1"], asUser: Self.nobody)
            #expect(try squatter.finish().status == 0)
            var info = stat()
            #expect(lstat(path, &info) == 0 && info.st_uid == 65534)
            return info
        }
        let squatted = try squat()
        // Another unprivileged user cannot replace it (sticky /dev/shm): refused, and it stays.
        let other = try runProcess(
            "/usr/bin/setpriv",
            ["--reuid=65533", "--regid=65534", "--clear-groups", Products.directory + "/transport-probe", "write"]
                + scratch.arguments("shm") + ["--lines", "1"])
        #expect(other.status == 1 && other.stderr.split(separator: "\n").count == 1, "\(other.stderr)")
        var still = stat()
        #expect(lstat(path, &still) == 0 && still.st_ino == squatted.st_ino)
        // Root (the daemon) replaces it in one rename and starts; before, it was refused.
        var options = ShmOptions()
        options.name = scratch.shmName
        let message = refusal { try ShmReader(options: options).close() }
        #expect(message == nil, "\(message ?? "")")
        var info = stat()
        #expect(lstat(path, &info) == 0 && info.st_uid == 0 && info.st_ino != squatted.st_ino)
        // A trusted user's segment is used as it is.
        shm_unlink(scratch.shmName)
        let trusted = try squat()
        options.owners = TrustedOwners(uids: [65534])
        let reader = try ShmReader(options: options)
        reader.close()
        #expect(lstat(path, &info) == 0 && info.st_ino == trusted.st_ino)
    }

    @Test("a socket directory of an untrusted user, or under a directory others may write, is refused")
    func untrustedSocketDirectory() throws {
        try Privileges.require()
        let base = NSTemporaryDirectory() + "pct-\(getpid())-trust"
        mkdir(base, 0o755)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let theirs = base + "/theirs"
        mkdir(theirs, 0o750)
        chown(theirs, Self.nobody.uid, Self.nobody.gid)
        var options = SocketOptions()
        options.directory = theirs
        #expect(refusal { _ = try SocketReader(options: options) }?.contains("--trust-uid 65534") == true)
        let open = base + "/open"
        mkdir(open, 0o755)
        chmod(open, 0o777)  // others may write, no sticky bit: they could replace what is inside
        options.directory = open + "/sockets"
        #expect(refusal { _ = try SocketReader(options: options) }?.contains("could replace") == true)
        let link = base + "/link"
        symlink(base, link)
        options.directory = link
        #expect(refusal { _ = try SocketReader(options: options) }?.contains("symbolic link") == true)
    }

    @Test("a log file that is a link, a FIFO, a directory or an untrusted user's is refused, also after a rotation")
    func untrustedLogFile() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = .read
        symlink("/dev/zero", scratch.filePath)
        #expect(refusal { _ = try FileReader(options: options) }?.contains("symbolic link") == true)
        unlink(scratch.filePath)
        mkfifo(scratch.filePath, 0o600)
        #expect(refusal { _ = try FileReader(options: options) }?.contains("not a regular file") == true)
        unlink(scratch.filePath)
        mkdir(scratch.filePath, 0o700)
        #expect(refusal { _ = try FileReader(options: options) }?.contains("not a regular file") == true)
        rmdir(scratch.filePath)
        FileManager.default.createFile(atPath: scratch.filePath, contents: nil)
        chown(scratch.filePath, Self.nobody.uid, Self.nobody.gid)
        #expect(refusal { _ = try FileReader(options: options) }?.contains("--trust-uid 65534") == true)
        // A trusted file, then rotated to a link: the link is refused (once) and counted.
        unlink(scratch.filePath)
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("one\n".utf8))
        options.startAtBeginning = true
        let reader = try FileReader(options: options)
        defer { reader.close() }
        let batch = LineBatch()
        #expect(try reader.poll(into: batch) == 1)
        rename(scratch.filePath, scratch.filePath + ".1")
        symlink("/dev/zero", scratch.filePath)
        for _ in 0..<3 {
            batch.removeAll()
            #expect(try reader.poll(into: batch) == 0)
        }
        #expect(reader.statistics.filesRefused == 1)
        unlink(scratch.filePath)
    }

    @Test("a full /dev/shm gives an error naming the remedy, not SIGBUS, and publishes nothing")
    func fullSharedMemory() throws {
        try Privileges.require()
        let probe = Products.directory + "/transport-probe"
        // A private mount namespace with a 1 MiB /dev/shm: the segment (64 MiB) cannot fit.
        let result = try runProcess(
            "/usr/bin/unshare",
            [
                "--mount", "--propagation", "private", "/bin/sh", "-c",
                "mount -t tmpfs -o size=1m tmpfs /dev/shm && \(probe) write --shm-name /pct-full --shm-segments 1 "
                    + "--shm-slots 524288 --lines 1; echo \"status $?\"; ls /dev/shm",
            ])
        #expect(result.stdout.contains("status 1"), "exit 1, not a signal: \(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("No space left on device") && result.stderr.contains("df /dev/shm"))
        #expect(!result.stdout.contains("pct-full"), "nothing published under the name")
    }

    @Test("a segment header with impossible sizes is refused as foreign, not a trap")
    func craftedHeader() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let options = oneRing(scratch, slots: 1024)
        let writer = try ShmWriter(options: options)
        writer.close()
        // slotsPerRing (offset 16) = 0, as a hostile or broken writer could leave it.
        let fd = open("/dev/shm" + scratch.shmName, O_RDWR)
        var zero: UInt32 = 0
        #expect(pwrite(fd, &zero, 4, 16) == 4)
        close(fd)
        let message = refusal { _ = try ShmReader(options: options) }
        #expect(message?.contains("impossible sizes") == true, "\(message ?? "accepted")")
    }

    @Test("a reader socket left by a dead reader is removed by the next reader")
    func staleSocketsRemoved() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        var options = SocketOptions()
        options.directory = scratch.socketDirectory
        let first = try SocketReader(options: options)
        first.close()
        // A socket file nobody listens on, as a SIGKILLed reader leaves.
        let stale = scratch.socketDirectory + "/reader-999999-0.block.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(stale.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        close(fd)
        #expect(bound == 0 && access(stale, F_OK) == 0)
        let reader = try SocketReader(options: options)
        defer { reader.close() }
        #expect(access(stale, F_OK) != 0, "the stale socket is gone")
    }

    @Test("a segment held locked exclusively is refused after a second instead of hanging its users")
    func exclusivelyLockedSegment() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        let options = oneRing(scratch, slots: 64)
        do {
            let writer = try ShmWriter(options: options)  // creates the segment; its lock goes with it
            writer.close()
        }
        let fd = open("/dev/shm" + scratch.shmName, O_RDWR)
        defer { close(fd) }
        try #require(flock(fd, LOCK_EX | LOCK_NB) == 0, "nobody else uses the segment")
        let message = refusal { _ = try ShmReader(options: options) }
        #expect(message?.contains("locked exclusively") == true, "\(message ?? "opened")")
    }

    /// Appends `lines` to `path` (as a service's logger would).
    func append(_ lines: [String], to path: String) throws {
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        try handle.close()
    }

    /// Polls until `count` lines came or a poll brings none (the lines are on disk before it).
    func lines(_ reader: FileReader) throws -> [String] {
        let batch = LineBatch()
        var lines: [String] = []
        while true {
            batch.removeAll()
            guard try reader.poll(into: batch) > 0 else { return lines }
            batch.forEachLine { lines.append(String(decoding: $0, as: UTF8.self)) }
        }
    }

    @Test("a rotation to a refused file is read once the file is fixed in place, or replaced by one at the same inode")
    func refusedRotationRecovers() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { scratch.remove() }
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("one\n".utf8))
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = .read
        options.startAtBeginning = true
        let reader = try FileReader(options: options)
        defer { reader.close() }
        #expect(try lines(reader) == ["one"])

        // Rotated to another user's file: refused, said once, however often that file changes.
        rename(scratch.filePath, scratch.filePath + ".1")
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("two\n".utf8))
        chown(scratch.filePath, Self.nobody.uid, Self.nobody.gid)
        #expect(try lines(reader).isEmpty)
        try append(["three"], to: scratch.filePath)
        #expect(try lines(reader).isEmpty)
        #expect(reader.statistics.filesRefused == 1)
        #expect(reader.refusal?.contains("uid 65534") == true, "\(reader.refusal ?? "no refusal")")
        // Fixed in place: read from its start, the lines written while refused too.
        chown(scratch.filePath, 0, 0)
        try append(["four"], to: scratch.filePath)
        #expect(try lines(reader) == ["two", "three", "four"])
        #expect(reader.refusal == nil)

        // A link refused, then a regular file in its place (ext4 hands the same inode number back).
        rename(scratch.filePath, scratch.filePath + ".1")
        symlink("/dev/zero", scratch.filePath)
        #expect(try lines(reader).isEmpty)
        #expect(reader.statistics.filesRefused == 2)
        unlink(scratch.filePath)
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("five\n".utf8))
        #expect(try lines(reader) == ["five"])
        #expect(reader.statistics.filesRefused == 2)

        // Group-writable, then chmod g-w.
        rename(scratch.filePath, scratch.filePath + ".1")
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("six\n".utf8))
        chmod(scratch.filePath, 0o664)
        #expect(try lines(reader).isEmpty)
        chmod(scratch.filePath, 0o644)
        #expect(try lines(reader) == ["six"])
        #expect(reader.statistics.filesRefused == 3)
    }

    @Test("a reader that starts after one refused the rotated file reads that file from its start")
    func refusedRotationAcrossReaders() throws {
        try Privileges.require()
        let scratch = TransportScratch()
        let position = scratch.filePath + ".position"
        defer {
            scratch.remove()
            unlink(position)
        }
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("one\n".utf8))
        var options = FileOptions()
        options.path = scratch.filePath
        options.readMethod = .read
        options.positionPath = position
        let first = try FileReader(options: options)
        try append(["two"], to: scratch.filePath)
        #expect(try lines(first) == ["two"])
        rename(scratch.filePath, scratch.filePath + ".1")
        FileManager.default.createFile(atPath: scratch.filePath, contents: Data("three\n".utf8))
        chown(scratch.filePath, Self.nobody.uid, Self.nobody.gid)
        #expect(try lines(first).isEmpty)
        first.close()  // a reload: the place kept is in the old file
        chown(scratch.filePath, 0, 0)
        try append(["four"], to: scratch.filePath)
        let second = try FileReader(options: options)  // as the daemon: from the end where nothing was kept
        defer { second.close() }
        #expect(try lines(second) == ["three", "four"])
    }

    @Test("a log file on procfs or sysfs is refused with one line, by a reader and by the check")
    func pseudoFileSystemRefused() throws {
        try Privileges.require()
        for (path, system) in [("/proc/version", "procfs"), ("/sys/kernel/uevent_seqnum", "sysfs")] {
            var options = FileOptions()
            options.path = path
            options.readMethod = .read
            options.startAtBeginning = true
            let message = refusal { _ = try FileReader(options: options) }
            #expect(message?.contains("\(path) is on \(system)") == true, "\(message ?? "accepted")")
            #expect(message?.contains("\n") == false)
            #expect(refusal { try FileReader.check(path: path) } == message)
        }
        let scratch = TransportScratch()
        defer { scratch.remove() }
        FileManager.default.createFile(atPath: scratch.filePath, contents: nil)
        #expect(refusal { try FileReader.check(path: scratch.filePath) } == nil)
        #expect(refusal { try FileReader.check(path: scratch.filePath + ".none") } == nil, "a reader waits for it")
    }
}
