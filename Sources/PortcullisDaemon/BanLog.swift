// SPDX-License-Identifier: Apache-2.0
import Dispatch
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// The ban log (`portcullisd --ban-log`): one line per ban and per lift, like fail2ban's
/// "Ban"/"Unban" lines, for audits and for the testbed's checks:
///
///     2026-11-26T21:05:00.123Z ban 198.18.0.1 jail=sshd for=3600
///     2026-11-26T21:05:30.201Z unban 198.18.0.1
///
/// A ban names the jail that made it and how long it lasts in seconds (`for=forever`: for good).
/// The time is when the maps were written.
///
/// `publish` only queues the event (the ban path formats nothing); a thread of its own writes
/// what is queued, formatted without allocating per line, with one `write` per wake-up to a file
/// opened with `O_APPEND`, so the lines of concurrent workers never interleave inside a line,
/// and then lets the next events gather for 10 ms: a ban is in the file within about 10 ms.
///
/// `reopen` (SIGHUP, SIGUSR1, a reload that names another path) opens the path again and hands
/// the new file to the writer: what it took before goes to the old file, the rest to the new one,
/// so a logrotate rename loses no line. Without a path (no `--ban-log`) nothing is queued.
public final class BanLog: BanPublisher, @unchecked Sendable {
    /// The file's path ("": none).
    public var path: String { writer.queue.withLock { $0.path } }
    private let isOpen: Atomic<Bool>
    /// What the writer's thread holds (never the log itself: a log released before its thread
    /// ran, such as on a start refused right after opening it, must not be read by the thread).
    private let writer: Writer
    private var thread: SystemThread?
    /// How long the writer lets events gather after each write: a line is in the file at most
    /// about this long after its ban.
    static let gatherNanoseconds: UInt64 = 10_000_000

    /// - Parameters:
    ///   - path: the file, nil for none (until a `reopen` names one).
    ///   - say: where a write failure (and the end of one) is said, once per episode.
    public init(
        path: String?, say: @escaping @Sendable (String) -> Void = BanLog.sayOnStandardError
    )
        throws(DaemonError)
    {
        let fd = try path.map { (path) throws(DaemonError) in try Self.open(path) } ?? -1
        isOpen = Atomic(fd >= 0)
        writer = Writer(fd: fd, path: path ?? "", say: say)
        do throws(Errno) {
            thread = try SystemThread.spawn { [writer] in writer.run() }
        } catch {
            throw .invalidSetting("cannot start the ban log's thread: \(error)")
        }
    }

    /// Opens `path` for appending, refusing what is not a regular file on a disk.
    private static func open(_ path: String) throws(DaemonError) -> Int32 {
        // O_NOFOLLOW: a link planted at the path does not redirect a root write elsewhere.
        let fd = try systemCall({ Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640) }) {
            error in
            DaemonError.invalidSetting(
                "cannot open the ban log \(path): \(error); check that its directory exists and is writable")
        }
        // A log is a regular file on a disk: not a device, a FIFO or a file of /proc or /sys,
        // which take writes and keep nothing (or block).
        var info = stat()
        let regular = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        let pseudo = PseudoFileSystem.name(of: fd)
        guard regular && pseudo == nil else {
            close(fd)
            throw .invalidSetting(
                "the ban log \(path) is not a regular file on a disk (\(pseudo.map { "on \($0)" } ?? "a device, FIFO or socket")): "
                    + "name a file for --ban-log")
        }
        return fd
    }

    /// Opens the path in use again (SIGHUP, SIGUSR1): after logrotate renamed the file, a new one
    /// at the path. - Throws: when it cannot be opened (the file in use stays).
    public func reopen() throws(DaemonError) {
        let path = self.path
        try reopen(at: path.isEmpty ? nil : path)
    }

    /// Writes from now on to `path` (nil: nowhere). The lines the writer took before go to the old
    /// file. - Throws: when `path` cannot be opened (the file in use stays).
    public func reopen(at target: String?) throws(DaemonError) {
        let fd = try target.map { (path) throws(DaemonError) in try Self.open(path) } ?? -1
        writer.queue.withLock { queue in
            if queue.fd >= 0 { queue.retired.append(queue.fd) }
            queue.fd = fd
            queue.path = target ?? ""
        }
        isOpen.store(fd >= 0, ordering: .releasing)
        writer.wakeup.signal()
    }

    deinit {
        writer.queue.withLock { $0.stopping = true }
        writer.wakeup.signal()
        thread?.join()
    }

    /// Writes that failed (a full disk, an I/O error): their lines are lost, the bans are not.
    public var writeErrors: UInt64 { writer.queue.withLock { $0.errors } }

    @Sendable public static func sayOnStandardError(_ line: String) {
        let text = "portcullisd: " + line + "\n"
        _ = text.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }

    /// Queues the event's lines: `TIME EVENT ADDRESS [jail=NAME for=SECONDS]`.
    public func publish(_ event: BanEvent) {
        guard !event.addresses.isEmpty, isOpen.load(ordering: .acquiring) else { return }
        // The writer takes what is queued before it waits again: a signal for each time the
        // queue stops being empty is enough.
        let wasEmpty = writer.queue.withLock { queue in
            queue.events.append(event)
            return queue.events.count == 1
        }
        if wasEmpty { writer.wakeup.signal() }
    }

    /// Returns once every event queued before the call is written.
    public func flush() {
        while writer.queue.withLock({ !$0.events.isEmpty || $0.writing > 0 }) {
            writer.wakeup.signal()
            _ = writer.written.wait(timeout: .now() + .milliseconds(10))
        }
    }

    /// The writer's thread and what it shares with the log.
    final class Writer: @unchecked Sendable {
        struct Queue {
            var events: [BanEvent] = []
            /// Events taken by the writer and not yet written (`flush` waits for them too).
            var writing = 0
            var stopping = false
            var errors: UInt64 = 0
            /// The file written (-1: none) and its path; `reopen` replaces them.
            var fd: Int32
            var path: String
            /// Files replaced by `reopen`, closed by the writer (which may be writing to one).
            var retired: [Int32] = []
        }

        let queue: Mutex<Queue>
        let wakeup = DispatchSemaphore(value: 0)
        let written = DispatchSemaphore(value: 0)
        private let say: @Sendable (String) -> Void
        /// The error of the failing episode, said once.
        private var failing: String?

        init(fd: Int32, path: String, say: @escaping @Sendable (String) -> Void) {
            queue = Mutex(Queue(fd: fd, path: path))
            self.say = say
        }

        deinit {
            queue.withLock { queue in
                for fd in queue.retired + [queue.fd] where fd >= 0 { close(fd) }
            }
        }

        func run() {
            var text = LogText()
            defer { text.deallocate() }
            while true {
                let (events, stopping, fd, path, retired) = queue.withLock { queue in
                    defer {
                        queue.writing = queue.events.count
                        queue.events.removeAll(keepingCapacity: true)
                        queue.retired.removeAll()
                    }
                    return (queue.events, queue.stopping, queue.fd, queue.path, queue.retired)
                }
                // Replaced since the last write, which has ended: no write uses them any more.
                for old in retired { close(old) }
                if events.isEmpty {
                    if stopping { return }
                    wakeup.wait()
                    continue
                }
                text.count = 0
                // Each event's time: its monotonic stamp moved onto the wall clock.
                let wall = SystemClock.wallMilliseconds()
                let monotonic = SystemClock.monotonicNanoseconds() / 1_000_000
                for event in events {
                    let at = wall - min(wall, monotonic &- min(monotonic, event.monotonicNanoseconds / 1_000_000))
                    BanLog.append(event, at: at, to: &text)
                }
                if fd >= 0 { write(UnsafeRawBufferPointer(start: text.bytes, count: text.count), to: fd, path: path) }
                queue.withLock { $0.writing = 0 }
                written.signal()
                // Let the next events gather: a wake-up of this thread per batch of bans cost more
                // than their lines (measured: about 50 µs each on a Firecracker VM, some 230 ns per
                // ban in the workload suite).
                if !stopping { SystemClock.sleep(nanoseconds: BanLog.gatherNanoseconds) }
            }
        }

        /// Writes the lines; a failure (a full disk) must not stop the bans: it is counted, and
        /// said once until a write succeeds again.
        private func write(_ text: UnsafeRawBufferPointer, to fd: Int32, path: String) {
            var done = 0
            while done < text.count {
                let result = systemCallResult { Glibc.write(fd, text.baseAddress! + done, text.count - done) }
                switch result {
                case .success(let count) where count > 0:
                    done += count
                case .success:
                    failed("the file takes no more bytes", path: path)
                    return
                case .failure(let error):
                    failed("\(error)", path: path)
                    return
                }
            }
            if failing != nil {
                failing = nil
                say("the ban log \(path) is written again")
            }
        }

        private func failed(_ reason: String, path: String) {
            queue.withLock { $0.errors += 1 }
            guard failing != reason else { return }
            failing = reason
            say(
                "cannot write the ban log \(path): \(reason); bans go on, their lines are lost until it can "
                    + "(portcullis_ban_log_errors_total)")
        }
    }

    /// The lines being made: bytes appended without a check per byte (room is made per line).
    struct LogText {
        var bytes = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 8)
        var capacity = 1 << 16
        var count = 0

        mutating func reserve(_ more: Int) {
            guard count + more > capacity else { return }
            let grown = max(capacity * 2, count + more)
            let bigger = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 8)
            bigger.copyMemory(from: bytes, byteCount: count)
            bytes.deallocate()
            bytes = bigger
            capacity = grown
        }

        mutating func append(_ source: UnsafeRawBufferPointer) {
            (bytes + count).copyMemory(from: source.baseAddress!, byteCount: source.count)
            count += source.count
        }

        mutating func append(byte: UInt8) {
            bytes.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
            count += 1
        }

        /// `value` in decimal.
        mutating func append(decimal value: UInt64) {
            count += RawText.writeDecimal(value, into: bytes + count)
        }

        func deallocate() { bytes.deallocate() }
    }

    /// The lines of `event`, made at wall-clock millisecond `at`.
    static func append(_ event: BanEvent, at milliseconds: UInt64, to text: inout LogText) {
        let time = UTCTime(secondsSinceEpoch: Int(milliseconds / 1000), millisecond: Int(milliseconds % 1000))
        let prefix = Array((time.iso8601 + " \(event.kind.rawValue) ").utf8)
        let jail = Array((event.jail.map { " jail=\($0)" } ?? "").utf8)
        let forever = " for=forever".utf8
        let length = " for=".utf8
        prefix.withUnsafeBytes { prefix in
            jail.withUnsafeBytes { jail in
                for index in event.addresses.indices {
                    // The longest line: prefix, an address with its length, jail, " for=" and 20 digits.
                    text.reserve(prefix.count + IPAddress.maximumTextLength + 4 + jail.count + 26)
                    text.append(prefix)
                    var address = event.addresses[index]
                    var prefixLength: Int?
                    if index < event.prefixLengths.count,
                        event.prefixLengths[index] != IPNetwork.fullLength(address.family)
                    {
                        address = IPNetwork(containing: address, length: event.prefixLengths[index]).address
                        prefixLength = event.prefixLengths[index]
                    }
                    text.count += address.write(into: text.bytes + text.count)
                    if let prefixLength {
                        text.append(byte: UInt8(ascii: "/"))
                        text.append(decimal: UInt64(prefixLength))
                    }
                    text.append(jail)
                    if index < event.seconds.count {
                        if event.seconds[index] == 0 {
                            forever.withContiguousStorageIfAvailable { text.append(UnsafeRawBufferPointer($0)) }
                        } else {
                            length.withContiguousStorageIfAvailable { text.append(UnsafeRawBufferPointer($0)) }
                            text.append(decimal: event.seconds[index])
                        }
                    }
                    text.append(byte: UInt8(ascii: "\n"))
                }
            }
        }
    }

}
