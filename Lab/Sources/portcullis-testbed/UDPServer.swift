// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Glibc
import LogTransport
import PortcullisCommandLine
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The service under attack: UDP datagrams whose first byte is 'B' are offences, each reported as
/// one log line through the transport; 'A' is valid traffic.
struct UDPServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "udp-server",
        abstract:
            "Receive UDP and log one offence line per datagram starting with 'B' (run it in the server namespace).",
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
    @Option(
        help:
            "SO_RCVBUF of each socket in bytes (set with SO_RCVBUFFORCE); the generator sends in bursts of tens of milliseconds."
    )
    var receiveBuffer = 64 << 20
    @Option(
        help: ArgumentHelp(
            "Once every thread receives, write the port, threads and transport here as JSON.",
            valueName: "path"))
    var readyFile: String?

    func validate() throws {
        if threads < 1 || batch < 1 || receiveBuffer < 4096 {
            throw ValidationError("--threads and --batch must be at least 1, --receive-buffer at least 4096")
        }
    }

    func run() throws {
        var stop = StopSignals()
        let cpuList = try cpus.map { (list) throws(SettingError) in try CPUList.parse(list) } ?? []
        let configuration = transport.configuration
        let stopping = StopFlag()
        var sockets: [Int32] = []
        for _ in 0..<threads { sockets.append(try openSocket()) }
        let receivers = try sockets.enumerated().map { index, fd in
            Receiver(
                fd: fd, writer: try configuration.makeWriter(), batch: batch,
                cpu: cpuList.isEmpty ? nil : cpuList[index % cpuList.count], stop: stopping)
        }
        let running = try receivers.map { receiver in try SystemThread.spawn { receiver.run() } }
        print(
            "udp-server: listening on port \(port) with \(threads) thread(s), logging through \(transport.transport.rawValue)"
        )
        fflush(nil)
        if let readyFile {
            var ready = JSONObject()
            ready["port"] = .integer(Int64(port))
            ready["threads"] = .integer(Int64(threads))
            ready["transport"] = .text(transport.transport.rawValue)
            ready["pid"] = .integer(Int64(getpid()))
            do throws(Errno) {
                try JSONOutput.write(ready, to: readyFile)
            } catch {
                Console.fail("udp-server: cannot write the ready file \(readyFile): \(error)")
            }
        }
        while !stop.arrived(waitingMilliseconds: 1000) {}
        stopping.set()
        for thread in running { thread.join() }
        var total = Receiver.Counts()
        for receiver in receivers {
            total = total + receiver.counts
            receiver.writer.close()
        }
        for fd in sockets { close(fd) }
        var summary = JSONObject()
        for (name, value) in [
            ("received", total.received), ("valid", total.valid), ("invalid", total.invalid),
            ("logged", total.logged), ("rejected", total.rejected), ("publish_failures", total.failed),
        ] {
            summary[name] = .integer(Int64(value))
        }
        print(JSONOutput.line(summary))
        if total.failed > 0 { throw ExitCode.failure }
    }

    private func openSocket() throws -> Int32 {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { Console.fail("udp-server: cannot open a UDP socket: \(String(cString: strerror(errno)))") }
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
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        guard bound == 0 else {
            Console.fail(
                "udp-server: cannot bind UDP port \(port): \(String(cString: strerror(errno))) "
                    + "(another udp-server running in this namespace?)")
        }
        return fd
    }
}

/// One receiving thread: recvmmsg, then one publish for the batch's offence lines.
final class Receiver: @unchecked Sendable {
    struct Counts {
        var received = 0, valid = 0, invalid = 0, logged = 0, rejected = 0, failed = 0

        static func + (left: Counts, right: Counts) -> Counts {
            Counts(
                received: left.received + right.received, valid: left.valid + right.valid,
                invalid: left.invalid + right.invalid, logged: left.logged + right.logged,
                rejected: left.rejected + right.rejected, failed: left.failed + right.failed)
        }
    }

    let fd: Int32
    let writer: LogWriter
    let batch: Int
    let cpu: Int?
    let stop: StopFlag
    private(set) var counts = Counts()
    private static let bufferSize = 64

    init(fd: Int32, writer: LogWriter, batch: Int, cpu: Int?, stop: StopFlag) {
        self.fd = fd
        self.writer = writer
        self.batch = batch
        self.cpu = cpu
        self.stop = stop
    }

    func run() {
        if let cpu {
            do throws(Errno) {
                try SystemThread.pinCurrent(to: cpu)
            } catch {
                Console.fail("udp-server: cannot pin a thread to CPU \(cpu): \(error)")
            }
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
        while !stop.isSet {
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
            let now = SystemClock.utcNow()
            for index in 0..<received {
                guard messages[index].msg_len > 0,
                    (buffers + index * Self.bufferSize).load(as: UInt8.self) == UInt8(ascii: "B")
                else {
                    counts.valid += 1
                    continue
                }
                counts.invalid += 1
                appendLine(time: now, source: names[index], to: lines)
            }
            guard !lines.isEmpty else { continue }
            do {
                let result = try writer.publish(lines)
                counts.logged += result.accepted
                counts.rejected += result.rejected
            } catch {
                counts.failed += 1
                Console.say("udp-server: publishing \(lines.count) lines failed: \(error)", to: STDERR_FILENO)
            }
        }
    }

    /// The offence line of `source` (IPv4-mapped sources as IPv4), written in place.
    private func appendLine(time: UTCTime, source: sockaddr_in6, to lines: LineBatch) {
        guard let destination = lines.appendUninitialized(length: OffenceLine.maximumLength) else { return }
        let length = OffenceLine.write(time: time, address: IPAddress(ipv6Bytes: source.sin6_addr), into: destination)
        lines.shortenLast(to: length)
    }
}
