import ArgumentParser
import CPortcullis
import Glibc
import LogTransport
import PortcullisCommandLine

/// The service under attack: UDP datagrams whose first byte is 'B' are offences, each reported as
/// one log line through the transport; 'A' is valid traffic.
struct UDPServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-server",
        abstract: "Receive UDP and log one offence line per datagram starting with 'B' (run it in the server namespace).",
        discussion: """
            Each thread has its own SO_REUSEPORT socket (IPv6, also receiving IPv4), receives with \
            recvmmsg and publishes its lines as one batch per receive through its own LogWriter. The \
            line format is portcullisd's built-in one. On SIGINT or SIGTERM it prints a JSON summary.
            """)

    @OptionGroup var transport: TransportOptions
    @Option(help: "UDP port (IPv4 and IPv6).") var port: UInt16 = 9000
    @Option(help: "Receiving threads, each with its own socket and LogWriter.") var threads = 2
    @Option(help: ArgumentHelp("CPUs to pin the threads to, in turn, e.g. 1 or 0-1.", valueName: "list"))
    var cpus: String?
    @Option(help: "Datagrams per recvmmsg call.") var batch = 64
    @Option(help: "SO_RCVBUF of each socket in bytes (set with SO_RCVBUFFORCE); the generator sends in bursts of tens of milliseconds.")
    var receiveBuffer = 64 << 20

    func validate() throws {
        if threads < 1 || batch < 1 || receiveBuffer < 4096 {
            throw ValidationError("--threads and --batch must be at least 1, --receive-buffer at least 4096")
        }
    }

    func run() throws {
        var stop = StopSignals()
        let cpuList = try cpus.map(parseCPUs) ?? []
        let configuration = transport.configuration
        let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        stopFlag.initialize(to: 0)
        var sockets: [Int32] = []
        for _ in 0..<threads { sockets.append(try openSocket()) }
        let receivers = try sockets.enumerated().map { index, fd in
            Receiver(fd: fd, writer: try configuration.makeWriter(), batch: batch,
                     cpu: cpuList.isEmpty ? nil : cpuList[index % cpuList.count], stop: stopFlag)
        }
        let threadsStarted = receivers.map { receiver in
            startThread { receiver.run() }
        }
        print("udp-server: listening on port \(port) with \(threads) thread(s), logging through \(transport.transport.rawValue)")
        fflush(nil)
        while !stop.arrived(waitingMilliseconds: 1000) {}
        cportcullis_store_release_u32(stopFlag, 1)
        for thread in threadsStarted { pthread_join(thread, nil) }
        var total = Receiver.Counts()
        for receiver in receivers {
            total.received += receiver.counts.received
            total.valid += receiver.counts.valid
            total.invalid += receiver.counts.invalid
            total.logged += receiver.counts.logged
            total.rejected += receiver.counts.rejected
            total.failed += receiver.counts.failed
            receiver.writer.close()
        }
        for fd in sockets { close(fd) }
        print("{\"received\": \(total.received), \"valid\": \(total.valid), \"invalid\": \(total.invalid), "
            + "\"logged\": \(total.logged), \"rejected\": \(total.rejected), \"publish_failures\": \(total.failed)}")
        if total.failed > 0 { throw ExitCode.failure }
    }

    private func openSocket() throws -> Int32 {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { fail("udp-server: cannot open a UDP socket: \(String(cString: strerror(errno)))") }
        var off: Int32 = 0, on: Int32 = 1, size = Int32(clamping: receiveBuffer)
        let intSize = socklen_t(MemoryLayout<Int32>.size)
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, intSize)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, intSize)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, intSize) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, intSize)
        }
        // Wake every 100 ms to notice a stop.
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = port.bigEndian
        address.sin6_addr = in6addr_any
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0 else {
            fail("udp-server: cannot bind UDP port \(port): \(String(cString: strerror(errno))) "
                + "(another udp-server running in this namespace?)")
        }
        return fd
    }

    private func parseCPUs(_ text: String) throws -> [Int] {
        var cpus: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            guard (1...2).contains(bounds.count), bounds.allSatisfy({ $0 >= 0 }), bounds[0] <= bounds[bounds.count - 1] else {
                throw ValidationError("--cpus \(text): expected a list like 0-1,3")
            }
            cpus += Array(bounds[0]...bounds[bounds.count - 1])
        }
        return cpus
    }
}

/// One receiving thread: recvmmsg, then one publish for the batch's offence lines.
final class Receiver: @unchecked Sendable {
    struct Counts {
        var received = 0, valid = 0, invalid = 0, logged = 0, rejected = 0, failed = 0
    }

    let fd: Int32
    let writer: LogWriter
    let batch: Int
    let cpu: Int?
    let stop: UnsafeMutablePointer<UInt32>
    private(set) var counts = Counts()
    private static let bufferSize = 64

    init(fd: Int32, writer: LogWriter, batch: Int, cpu: Int?, stop: UnsafeMutablePointer<UInt32>) {
        self.fd = fd
        self.writer = writer
        self.batch = batch
        self.cpu = cpu
        self.stop = stop
    }

    func run() {
        if let cpu, cportcullis_pin_thread(Int32(cpu)) != 0 {
            fail("udp-server: cannot pin a thread to CPU \(cpu): \(String(cString: strerror(errno)))")
        }
        let buffers = UnsafeMutableRawPointer.allocate(byteCount: batch * Self.bufferSize, alignment: 64)
        let names = UnsafeMutablePointer<sockaddr_in6>.allocate(capacity: batch)
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        let messages = UnsafeMutablePointer<cportcullis_mmsghdr>.allocate(capacity: batch)
        defer {
            buffers.deallocate()
            names.deallocate()
            iovecs.deallocate()
            messages.deallocate()
        }
        let lines = LineBatch(byteCapacity: batch * 128, lineCapacity: batch)
        var stamp = TimeStamp()
        while cportcullis_load_acquire_u32(stop) == 0 {
            for index in 0..<batch {
                iovecs[index] = iovec(iov_base: buffers + index * Self.bufferSize, iov_len: Self.bufferSize)
                var message = cportcullis_mmsghdr()
                message.msg_hdr.msg_name = UnsafeMutableRawPointer(names + index)
                message.msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
                message.msg_hdr.msg_iov = iovecs + index
                message.msg_hdr.msg_iovlen = 1
                messages[index] = message
            }
            // MSG_WAITFORONE: return what has come once one datagram is there; without it the call
            // waits for all `batch` of them, holding offence lines back at low rates.
            let received = Int(cportcullis_recvmmsg(fd, messages, UInt32(batch), Int32(MSG_WAITFORONE), nil))
            if received <= 0 { continue }  // timeout (EAGAIN) or EINTR: look at the stop flag
            counts.received += received
            lines.removeAll()
            let prefix = stamp.now()
            for index in 0..<received {
                guard messages[index].msg_len > 0,
                      (buffers + index * Self.bufferSize).load(as: UInt8.self) == UInt8(ascii: "B")
                else {
                    counts.valid += 1
                    continue
                }
                counts.invalid += 1
                appendLine(prefix: prefix, source: names[index], to: lines)
            }
            guard !lines.isEmpty else { continue }
            do {
                let result = try writer.publish(lines)
                counts.logged += result.accepted
                counts.rejected += result.rejected
            } catch {
                counts.failed += 1
                say("udp-server: publishing \(lines.count) lines failed: \(error)")
            }
        }
    }

    /// `YYYY-MM-DD HH:MM:SS client ADDRESS exceeded request rate limit` (IPv4-mapped sources as IPv4).
    private func appendLine(prefix: [UInt8], source: sockaddr_in6, to lines: LineBatch) {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        var address = source.sin6_addr
        let isMapped = withUnsafeBytes(of: &address) { bytes in
            bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
        }
        withUnsafeBytes(of: &address) { bytes in
            if isMapped {
                _ = inet_ntop(AF_INET, bytes.baseAddress! + 12, &text, socklen_t(text.count))
            } else {
                _ = inet_ntop(AF_INET6, bytes.baseAddress!, &text, socklen_t(text.count))
            }
        }
        let length = strlen(text)
        let suffix = Self.suffix
        guard let destination = lines.appendUninitialized(length: prefix.count + length + suffix.count) else { return }
        prefix.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
        text.withUnsafeBytes { (destination + prefix.count).copyMemory(from: $0.baseAddress!, byteCount: length) }
        suffix.withUnsafeBytes { (destination + prefix.count + length).copyMemory(from: $0.baseAddress!, byteCount: suffix.count) }
    }

    private static let suffix = Array(" exceeded request rate limit".utf8)
}

/// `YYYY-MM-DD HH:MM:SS client ` for the current second, formatted once per second.
struct TimeStamp {
    private var second = -1
    private var prefix: [UInt8] = []

    mutating func now() -> [UInt8] {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME, &clock)
        if clock.tv_sec != second {
            second = clock.tv_sec
            var seconds = clock.tv_sec
            var parts = tm()
            gmtime_r(&seconds, &parts)
            var text = [CChar](repeating: 0, count: 32)
            strftime(&text, text.count, "%Y-%m-%d %H:%M:%S client ", &parts)
            prefix = Array(text[0..<strlen(text)].map { UInt8(bitPattern: $0) })
        }
        return prefix
    }
}

/// Starts a joinable thread running `body`.
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let result = pthread_create(&thread, nil, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    if result != 0 { fail("portcullis-testbed: cannot start a thread: \(String(cString: strerror(result)))") }
    return thread
}

func say(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}
