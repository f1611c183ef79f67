// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// What of a file at the path decides whether it is tried again after a refusal: which file it
/// is, and its status change time (a chown, chmod or write moves it).
struct FileIdentity: Equatable {
    let device: dev_t
    let inode: ino_t
    let mode: mode_t
    let owner: uid_t
    let changed: timespec

    init(_ info: stat) {
        device = info.st_dev
        inode = info.st_ino
        mode = info.st_mode
        owner = info.st_uid
        changed = info.st_ctim
    }

    static func == (left: FileIdentity, right: FileIdentity) -> Bool {
        left.device == right.device && left.inode == right.inode && left.mode == right.mode
            && left.owner == right.owner && left.changed.tv_sec == right.changed.tv_sec
            && left.changed.tv_nsec == right.changed.tv_nsec
    }
}

/// Tails the log file: emits whole lines only, follows truncation (starts over) and rotation
/// (drains the old file, then opens the new one from its start), and waits with inotify.
public final class FileReader: LogReader {
    let options: FileOptions
    private var fd: Int32 = -1
    private var inode: ino_t = 0
    private var device: dev_t = 0
    private var offset: off_t = 0
    private let inotify: Int32
    private var fileWatch: Int32 = -1
    /// Bytes read but not yet delivered: [pendingStart, pendingEnd) of `pending`.
    private let pending: UnsafeMutableRawPointer
    private let pendingCapacity: Int
    private var pendingStart = 0
    private var pendingEnd = 0
    /// Inside an overlong line: drop bytes up to the next newline.
    private var skipping = false
    private var ring = io_uring()
    private var usesUring: Bool
    /// Written by the thread that reads; read by any.
    private let stats = ReaderCounters()
    private var closed = false
    /// Times the file was found truncated (and read again from its start).
    public private(set) var truncations: UInt64 = 0
    /// The file last refused at the path, as `lstat` saw it: tried again once anything of it
    /// changes (another file, or this one's owner, mode or contents: its ctime), never kept blind.
    private var refused: FileIdentity?
    /// The last refusal said (on stderr, once): its file and reason.
    private var refusalSaid: (device: dev_t, inode: ino_t, reason: String)?
    /// Past the start (where a refusal is thrown, not said).
    private var running = false
    /// Why the file at the path was last refused (one line), if it was.
    public private(set) var refusal: String?
    /// Times the file was found replaced (rotation) and the new one opened.
    public private(set) var rotations: UInt64 = 0

    public var statistics: ReaderStatistics { stats.statistics }

    public init(options: FileOptions) throws(TransportError) {
        try options.validate()
        self.options = options
        inotify = try transportCall("inotify_init1") { inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC)) }
        pendingCapacity = options.maxLineLength + options.bufferSize * options.uringDepth + 1
        pending = .allocate(byteCount: pendingCapacity, alignment: 64)
        usesUring = options.readMethod == .uring
        if usesUring {
            let result = io_uring_queue_init(UInt32(options.uringDepth), &ring, 0)
            if result < 0 {
                // deinit runs after a throwing init and frees `pending`; close() must skip the rest.
                Glibc.close(inotify)
                usesUring = false
                closed = true
                throw .system(
                    operation: "io_uring_queue_init (use --file-read read where io_uring is disabled)",
                    errno: -result)
            }
        }
        // Watch the directory for the file appearing again (rotation, a writer starting later).
        let directory = options.path.contains("/") ? String(options.path[..<options.path.lastIndex(of: "/")!]) : "."
        // IN_ATTRIB: a refused file fixed in place (chown, chmod) is tried again at once.
        _ = inotify_add_watch(
            inotify, directory.isEmpty ? "/" : directory, UInt32(IN_CREATE | IN_MOVED_TO | IN_ATTRIB))
        do throws(TransportError) {
            // Whoever can replace the file's directory can swap the log under us.
            try options.owners.checkParents(of: options.path, "log file")
        } catch {
            close()
            throw error
        }
        if case .refused(let error) = openFile(atEnd: !options.startAtBeginning) {
            close()
            throw error
        }
        resumePosition()
        running = true
    }

    /// Where a reader closed, in which file (`positionPath`).
    struct Position: Codable {
        let device: UInt64
        let inode: UInt64
        let offset: Int64
    }

    /// Goes on from the place a reader with this position path closed at, if it is in this file
    /// and still within it. A file replaced or truncated since holds only lines written after that
    /// place (the last reader was refused the new file, say): it is read from its start.
    private func resumePosition() {
        guard fd >= 0, let path = options.positionPath else { return }
        let (kept, note) = JSONOutput.readState(Position.self, from: path, what: "the place in \(options.path) kept as")
        if let note { sayProblem("note: \(note)") }
        guard let saved = kept else { return }
        // Used once: a reader that dies later (no clean close) must not send its successor back here.
        unlink(path)
        var info = stat()
        guard fstat(fd, &info) == 0 else { return }
        if saved.device == UInt64(device), saved.inode == UInt64(inode), saved.offset >= 0,
            saved.offset <= Int64(info.st_size)
        {
            offset = off_t(saved.offset)
        } else {
            offset = 0
        }
    }

    /// Keeps the place for the next reader (`positionPath`): the end of the last whole line read.
    private func savePosition() {
        // Inside a line longer than the limit the place would be mid-line: keep none.
        guard fd >= 0, let path = options.positionPath, !skipping else { return }
        let position = Position(
            device: UInt64(device), inode: UInt64(inode), offset: Int64(offset) - Int64(pendingEnd - pendingStart))
        try? JSONOutput.write(position, to: path)
    }

    deinit {
        close()
        pending.deallocate()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        savePosition()
        if fd >= 0 { Glibc.close(fd) }
        if usesUring { io_uring_queue_exit(&ring) }
        Glibc.close(inotify)
    }

    enum Opened {
        case opened
        case absent
        case refused(TransportError)
    }

    /// Opens the file at the path: a regular file of a trusted owner, not through a symbolic link
    /// (a link to /dev/zero or a FIFO there would blind or hang the reader). A refusal is counted.
    @discardableResult
    private func openFile(atEnd: Bool) -> Opened {
        let opened: Int32
        do throws(TransportError) {
            guard let fd = try Self.openForReading(options.path) else { return .absent }
            opened = fd
        } catch {
            return refuse(error)
        }
        var info = stat()
        do throws(TransportError) {
            info = try Self.checkLogFile(fd: opened, options: options)
        } catch {
            Glibc.close(opened)
            return refuse(error)
        }
        refusal = nil
        refusalSaid = nil
        if fd >= 0 { Glibc.close(fd) }
        fd = opened
        inode = info.st_ino
        device = info.st_dev
        offset = atEnd ? info.st_size : 0
        if fileWatch >= 0 { inotify_rm_watch(inotify, fileWatch) }
        fileWatch = inotify_add_watch(inotify, options.path, UInt32(IN_MODIFY))
        return .opened
    }

    /// Counts a refusal and, while the reader runs (not at its start, which throws it), says it on
    /// stderr: once per file and reason, however often the file is tried again.
    private func refuse(_ error: TransportError) -> Opened {
        var named = stat()
        let found = lstat(options.path, &named) == 0
        let reason = error.description
        refusal = reason
        if let said = refusalSaid, found, said.device == named.st_dev, said.inode == named.st_ino,
            said.reason == reason
        {
            return .refused(error)
        }
        refusalSaid = (named.st_dev, named.st_ino, reason)
        stats.filesRefused.add(1)
        if running {
            sayProblem(
                "not reading the new log file: \(reason) (tried again when it changes; lines written there "
                    + "meanwhile are read then)")
        }
        return .refused(error)
    }

    /// Checks the log file at `path` as a reader opens it (and `--check-config` can): no symbolic
    /// link, a regular file on a real file system, a trusted owner and mode, under directories only
    /// trusted users can replace. A missing file passes (a reader waits for it).
    public static func check(path: String, owners: TrustedOwners = TrustedOwners()) throws(TransportError) {
        var options = FileOptions()
        options.path = path
        options.owners = owners
        try owners.checkParents(of: path, "log file")
        guard let fd = try openForReading(path) else { return }
        defer { Glibc.close(fd) }
        try checkLogFile(fd: fd, options: options)
    }

    /// Checks an open log file: regular, on a real file system, and its owner and mode trusted.
    /// - Returns: its `stat`.
    @discardableResult
    static func checkLogFile(fd: Int32, options: FileOptions) throws(TransportError) -> stat {
        var info = stat()
        try transportCall("stat \(options.path)") { fstat(fd, &info) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .untrusted(
                "log file \(options.path) is not a regular file (a FIFO, device or directory); give a file")
        }
        if let pseudo = PseudoFileSystem.name(of: fd) {
            throw .untrusted(
                "log file \(options.path) is on \(pseudo), not a log (its size is 0 while it reads data); give "
                    + "the file a service logs to")
        }
        try options.owners.check(info, "log file", path: options.path)
        return info
    }

    public func poll(into batch: LineBatch) throws(TransportError) -> Int {
        precondition(!closed, "poll on a closed FileReader")
        var total = deliver(into: batch)
        // A file cut shorter than where we are was truncated (copytruncate), even if new lines
        // have already made it grow again: start over before reading on, not only at its end.
        var current = stat()
        if fd >= 0 && fstat(fd, &current) == 0 && current.st_size < offset {
            truncations += 1
            offset = 0
            discardPartialLine()
        }
        while !batch.isFull {
            // A file created after we started: read it all.
            if fd < 0 {
                var named = stat()
                guard lstat(options.path, &named) == 0, FileIdentity(named) != refused else { break }
                guard case .opened = openFile(atEnd: false) else {
                    refused = FileIdentity(named)
                    break
                }
                refused = nil
            }
            let read = try readMore()
            if read > 0 {
                total += deliver(into: batch)
                if pendingEnd - pendingStart > 0 && batch.count > 0
                    && !batch.canAppend(length: pendingEnd - pendingStart)
                {
                    break  // batch nearly full; the rest waits in `pending`
                }
                continue
            }
            // End of file: truncated? replaced? else nothing more for now.
            var current = stat()
            if fstat(fd, &current) == 0 && current.st_size < offset {
                truncations += 1
                offset = 0
                discardPartialLine()
                continue
            }
            var named = stat()
            if lstat(options.path, &named) == 0 && (named.st_ino != inode || named.st_dev != device)
                && FileIdentity(named) != refused
            {
                if case .opened = openFile(atEnd: false) {
                    rotations += 1
                    discardPartialLine()  // the old file's cut-off line is never completed
                    refused = nil
                    continue
                }
                // Refused: the old file is still read; the new one is tried again when it changes.
                refused = FileIdentity(named)
            }
            break
        }
        if total > 0 { stats.linesReceived.add(UInt64(total)) }
        return total
    }

    public func wait(into batch: LineBatch, timeoutMilliseconds: Int) throws(TransportError) -> Int {
        let count = try poll(into: batch)
        if count > 0 || timeoutMilliseconds <= 0 { return count }
        var descriptor = pollfd(fd: inotify, events: Int16(POLLIN), revents: 0)
        _ = Glibc.poll(&descriptor, 1, Int32(clamping: timeoutMilliseconds))
        var scratch = [UInt8](repeating: 0, count: 4096)
        while read(inotify, &scratch, scratch.count) > 0 {}
        return try poll(into: batch)
    }

    /// A line cut off by truncation or rotation is never completed: count it and drop it.
    private func discardPartialLine() {
        if pendingEnd > pendingStart || skipping { stats.linesRejected.add(1) }
        pendingStart = 0
        pendingEnd = 0
        skipping = false
    }

    /// Reads more of the file into `pending`. - Returns: bytes read (0 at end of file).
    private func readMore() throws(TransportError) -> Int {
        // Make room: move the undelivered rest to the front.
        if pendingStart > 0 {
            let rest = pendingEnd - pendingStart
            if rest > 0 { pending.copyMemory(from: pending + pendingStart, byteCount: rest) }
            pendingStart = 0
            pendingEnd = rest
        }
        if usesUring { return try readWithUring() }
        let room = min(options.bufferSize, pendingCapacity - pendingEnd)
        let count = try transportCallCount("read \(options.path)") { pread(fd, pending + pendingEnd, room, offset) }
        guard count > 0 else { return 0 }
        pendingEnd += count
        offset += off_t(count)
        return count
    }

    /// Queues `uringDepth` reads at consecutive offsets straight into `pending` and takes their
    /// completions in order; a short read ends the run (later buffers may hold bytes from after a
    /// gap, so they are ignored and read again next time).
    private func readWithUring() throws(TransportError) -> Int {
        let depth = min(options.uringDepth, (pendingCapacity - pendingEnd) / options.bufferSize)
        guard depth > 0 else { return 0 }
        for index in 0..<depth {
            let result = cportcullis_uring_queue_read(
                &ring, fd, pending + pendingEnd + index * options.bufferSize,
                UInt32(options.bufferSize),
                UInt64(offset) + UInt64(index * options.bufferSize), UInt64(index))
            if result < 0 { throw .system(operation: "queue io_uring read", errno: -result) }
        }
        try systemCall(
            convention: .negativeErrno, { io_uring_submit_and_wait(&ring, UInt32(depth)) },
            orThrow: { TransportError.system(operation: "io_uring_submit_and_wait", errno: $0.code) })
        var lengths = [Int32](repeating: 0, count: depth)
        for _ in 0..<depth {
            var completion: UnsafeMutablePointer<io_uring_cqe>?
            try systemCall(
                convention: .negativeErrno, { io_uring_wait_cqe(&ring, &completion) },
                orThrow: { TransportError.system(operation: "io_uring_wait_cqe", errno: $0.code) })
            guard let completion else { throw .system(operation: "io_uring_wait_cqe", errno: EIO) }
            lengths[Int(completion.pointee.user_data)] = completion.pointee.res
            io_uring_cqe_seen(&ring, completion)
        }
        var total = 0
        for length in lengths {
            if length < 0 { throw .system(operation: "read \(options.path) with io_uring", errno: -length) }
            // Consecutive buffers are contiguous in `pending` while every read before was full.
            total += Int(length)
            if Int(length) < options.bufferSize { break }
        }
        pendingEnd += total
        offset += off_t(total)
        return total
    }

    /// Moves whole lines from `pending` into `batch`. - Returns: lines delivered.
    private func deliver(into batch: LineBatch) -> Int {
        var count = 0
        while pendingStart < pendingEnd {
            let start = pending + pendingStart
            let available = pendingEnd - pendingStart
            guard let newline = memchr(start, 0x0A, available) else {
                if available > options.maxLineLength {  // no end in sight: drop what we have
                    if !skipping { stats.linesRejected.add(1) }
                    skipping = true
                    pendingStart = pendingEnd
                }
                break
            }
            let length = UnsafeMutableRawPointer(newline) - start
            if skipping || length > options.maxLineLength {
                if !skipping { stats.linesRejected.add(1) }
                skipping = false
                pendingStart += length + 1
                continue
            }
            guard batch.append(UnsafeRawBufferPointer(start: start, count: length)) else { break }
            pendingStart += length + 1
            count += 1
        }
        return count
    }
}
