import ArgumentParser
import CPortcullis
import Glibc
import XDPFirewall

/// Spoofed-source UDP at a target rate from valid clients (payload 'A') and attackers ('B').
struct Flood: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send spoofed-source UDP from valid clients and attackers (run it in the client namespace).",
        discussion: """
            The live engine runs bpf/flood.bpf.o with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES: \
            the kernel sends each frame the program returns XDP_TX for out of --interface, without a \
            socket or a copy. The packet engine builds the same frames in user space and sends them \
            with sendmmsg on an AF_PACKET socket. Both print a JSON summary of what they sent. \
            Live frames reach the server only while its veth has an XDP program (the filter): \
            without one, veth drops them and this count is not what arrived.
            """)

    enum Engine: String, ExpressibleByArgument, CaseIterable { case live, packet }

    @Option(help: "live (XDP live frames) or packet (AF_PACKET + sendmmsg).") var engine: Engine = .live
    @Option(help: "Interface to send from (in this network namespace).") var interface = "pctb-client"
    @Option(help: "Its MAC address (the frames' source).") var sourceMac = "02:00:c6:12:00:01"
    @Option(help: "The server's MAC address.") var serverMac = "02:00:c6:13:ff:fe"
    @Option(help: "The server's UDP port.") var port: UInt16 = 9000
    @Option(help: "IPv4 attackers (198.18.0.1 onwards).") var attackersV4 = 0
    @Option(help: "IPv6 attackers (2001:2:0:a::1 onwards).") var attackersV6 = 0
    @Option(help: "IPv4 valid clients (198.19.0.1 onwards).") var validV4 = 0
    @Option(help: "IPv6 valid clients (2001:2:0:c::1 onwards).") var validV6 = 0
    @Option(help: "Attack frames per second, over all attackers (0: as fast as the engine goes).") var rate = 0.0
    @Option(help: "Valid frames per second, over all valid clients (with --rate 0: one frame in --valid-every).")
    var validRate = 50_000.0
    @Option(help: "With --rate 0: one frame in this many is from a valid client.") var validEvery = 100
    @Option(help: ArgumentHelp("How long to send.", valueName: "seconds")) var duration = 10.0
    @Option(help: "Sending threads, each pinned to its own CPU (0, 1, ...) with its share of the rate; give the veth as many queues (tools/testbed does) so that the receiving side runs on as many CPUs.")
    var threads = 1
    @Option(help: "Runs of the first BPF_PROG_TEST_RUN call (later calls adapt to about 200 ms each).") var chunk = 65_536
    @Option(help: ArgumentHelp("The generator object (flood.bpf.o; default: next to this program).", valueName: "path"))
    var bpfObject: String?

    func validate() throws {
        if attackersV4 < 0 || attackersV6 < 0 || validV4 < 0 || validV6 < 0 {
            throw ValidationError("client counts must not be negative")
        }
        if attackersV4 + attackersV6 + validV4 + validV6 == 0 { throw ValidationError("no clients: set --attackers-v4 etc.") }
        if attackersV4 > AddressPlan.maxAttackers4 {
            throw ValidationError("at most \(AddressPlan.maxAttackers4) IPv4 attackers fit in 198.18.0.0/15 beside the server")
        }
        if validV4 > AddressPlan.maxValid4 { throw ValidationError("at most \(AddressPlan.maxValid4) IPv4 valid clients") }
        if validV4 > 0 && attackersV4 > AddressPlan.attackersBeforeValid4 {
            throw ValidationError("IPv4 attackers beyond \(AddressPlan.attackersBeforeValid4) take 198.19.0.0/24, the valid "
                + "clients' addresses: send the valid clients over IPv6 (--valid-v6) or split the attackers (--attackers-v6)")
        }
        if max(attackersV6, validV6) > AddressPlan.maxPerGroup6 { throw ValidationError("at most \(AddressPlan.maxPerGroup6) IPv6 clients per group") }
        if threads < 1 || threads > Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) {
            throw ValidationError("--threads must be between 1 and the number of CPUs online")
        }
        if rate < 0 || validRate < 0 || duration <= 0 || chunk < 64 || validEvery < 1 {
            throw ValidationError("--rate and --valid-rate must not be negative, --duration positive, --chunk at least 64, --valid-every at least 1")
        }
    }

    func run() throws {
        var stop = StopSignals()
        let plan = TrafficPlan(flood: self)
        guard (0..<TrafficPlan.streams).contains(where: { plan.weight[$0] > 0 && plan.clients[$0] > 0 }) else {
            fail("flood: nothing to send: give attackers a --rate (or 0 for as fast as possible) or valid clients a --valid-rate")
        }
        let server = try parseMAC(serverMac, option: "--server-mac")
        let source = try parseMAC(sourceMac, option: "--source-mac")
        let templates = [FrameTemplate(family: 0, sourceMAC: source, serverMAC: server, port: port),
                         FrameTemplate(family: 1, sourceMAC: source, serverMAC: server, port: port)]
        let sender: FrameSender
        switch engine {
        case .live: sender = try LiveFrameSender(plan: plan, templates: templates, interface: interface, objectPath: bpfObject)
        case .packet: sender = try PacketSender(plan: plan, templates: templates, interface: interface, threads: threads)
        }
        try sender.configure(duration: duration, threads: threads)
        let stopFlag = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        stopFlag.initialize(to: 0)
        let failure = FailureBox()
        let start = monotonicSeconds()
        let (chunk, threadCount) = (chunk, threads)
        let workers = (0..<threadCount).map { thread in
            startThread {
                // Pinned even alone: the live engine's counters and client cursors are per CPU.
                if cportcullis_pin_thread(Int32(thread)) != 0 {
                    failure.set("cannot pin sending thread \(thread) to CPU \(thread): \(String(cString: strerror(errno)))")
                    return
                }
                do {
                    try sender.send(thread: thread, until: start + duration, chunk: chunk, stop: stopFlag)
                } catch {
                    failure.set("\(error)")
                    cportcullis_store_release_u32(stopFlag, 1)
                }
            }
        }
        while monotonicSeconds() < start + duration && cportcullis_load_acquire_u32(stopFlag) == 0 {
            if stop.arrived(waitingMilliseconds: 100) { break }
        }
        cportcullis_store_release_u32(stopFlag, 1)
        for worker in workers { pthread_join(worker, nil) }
        if let message = failure.message { fail("flood: \(message)") }
        let seconds = min(monotonicSeconds() - start, duration)
        let counts = try sender.counts()
        let frames = counts.sent.reduce(0, +)
        print("{\"engine\": \"\(engine.rawValue)\", \"seconds\": \(seconds), \"frames\": \(frames), "
            + "\"invalid_v4\": \(counts.sent[0]), \"invalid_v6\": \(counts.sent[1]), "
            + "\"valid_v4\": \(counts.sent[2]), \"valid_v6\": \(counts.sent[3]), "
            + "\"send_failures\": \(counts.failures), \"frames_per_second\": \(Double(frames) / seconds)}")
    }
}

/// Who sends how much. Streams, in bpf/flood.bpf.c's order: attackers over IPv4 and IPv6, valid
/// clients over IPv4 and IPv6. Each frame goes to the stream furthest behind its weight.
struct TrafficPlan {
    static let streams = 4
    /// Clients per stream.
    let clients: [Int]
    /// Share of the frames per stream: frames per second when paced.
    let weight: [UInt64]
    /// Frames per second over all streams; 0: as fast as the engine goes.
    let rate: UInt64
    /// First address per stream.
    static let bases = [AddressPlan.attackerBase4, AddressPlan.attackerBase6, AddressPlan.validBase4, AddressPlan.validBase6]

    init(flood: Flood) {
        clients = [flood.attackersV4, flood.attackersV6, flood.validV4, flood.validV6]
        // Unpaced, the weights only set the mix: one valid frame in --valid-every. Valid clients
        // alone are always paced by --valid-rate.
        let paced = flood.rate > 0 || clients[0] + clients[1] == 0
        let attackRate = paced ? flood.rate : 1e6 * Double(flood.validEvery - 1)
        let validRate = paced ? flood.validRate : 1e6
        let attackers = Double(max(clients[0] + clients[1], 1)), valid = Double(max(clients[2] + clients[3], 1))
        weight = [attackRate * Double(clients[0]) / attackers, attackRate * Double(clients[1]) / attackers,
                  validRate * Double(clients[2]) / valid, validRate * Double(clients[3]) / valid].map { UInt64($0.rounded()) }
        rate = paced ? weight.reduce(0, +) : 0
    }

    /// Where thread `thread` of `threads` starts going round `clients` clients: evenly apart, so
    /// that together they still send to each client at even intervals.
    static func startingClient(thread: Int, of threads: Int, clients: Int) -> Int { clients * thread / max(threads, 1) }

    static func isIPv6(stream: Int) -> Bool { stream % 2 == 1 }
    static func isValid(stream: Int) -> Bool { stream >= 2 }
}

/// Frames sent so far, per stream.
struct FloodCounts {
    var sent = [0, 0, 0, 0]
    var failures = 0
}

protocol FrameSender: Sendable {
    /// Prepares a run of `duration` seconds by `threads` threads.
    func configure(duration: Double, threads: Int) throws
    /// Sends as thread `thread` until the monotonic time `end` or until `stop` is set.
    func send(thread: Int, until end: Double, chunk: Int, stop: UnsafeMutablePointer<UInt32>) throws
    func counts() throws -> FloodCounts
}

/// The first error of any sending thread.
final class FailureBox: @unchecked Sendable {
    private let lock = PthreadLock()
    private(set) var message: String?
    func set(_ text: String) { lock.locked { if message == nil { message = text } } }
}

/// A pthread mutex (Foundation is not linked here).
final class PthreadLock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func locked(_ body: () -> Void) {
        pthread_mutex_lock(&mutex)
        body()
        pthread_mutex_unlock(&mutex)
    }
}

/// The fast engine: the kernel runs bpf/flood.bpf.o on live frames and transmits them. Each
/// test-run call costs two XDP dispatcher updates (about 24 ms here, measured with strace -T),
/// so calls are few: unpaced about 200 ms each, paced one per batch of frames due.
final class LiveFrameSender: FrameSender, @unchecked Sendable {
    let program: LoadedProgram
    let plan: TrafficPlan
    let templates: [FrameTemplate]
    let interfaceIndex: Int32
    /// Set by `configure`: the program's time window starts here; frames per second per thread.
    private var startSeconds = 0.0
    private var threadRate = 0.0

    init(plan: TrafficPlan, templates: [FrameTemplate], interface: String, objectPath: String?) throws {
        let index = if_nametoindex(interface)
        guard index > 0 else {
            throw ValidationError("no interface \(interface) in this network namespace: run flood through tools/testbed flood")
        }
        interfaceIndex = Int32(index)
        let path = try BPFObjectLocator().locate("flood.bpf.o", explicit: objectPath)
        program = try LoadedProgram(objectAt: path, programName: "pc_flood")
        self.plan = plan
        self.templates = templates
    }

    func configure(duration: Double, threads: Int) throws {
        // struct flood_config: rate (per CPU), start_ns, end_ns, weight[4] (u64), clients[4] (u32),
        // base[4][16], frame_v4[80], frame_v6[80].
        let start = UInt64(monotonicSeconds() * 1e9)
        let end = start + UInt64(duration * 1e9)
        startSeconds = Double(start) / 1e9
        // Paced at least one frame per second per thread: 0 would mean unpaced.
        let perThread = plan.rate > 0 ? max(1, plan.rate / UInt64(threads)) : 0
        threadRate = Double(perThread)
        var config: [UInt8] = []
        for value in [perThread, start, end] + plan.weight {
            withUnsafeBytes(of: value.littleEndian) { config += $0 }
        }
        for value in plan.clients { withUnsafeBytes(of: UInt32(value).littleEndian) { config += $0 } }
        for base in TrafficPlan.bases { config += base + [UInt8](repeating: 0, count: 16 - base.count) }
        config += templates[0].bytes + templates[1].bytes
        try program.setArrayElement(map: "flood_config", to: config)
        // struct flood_counters (per CPU): frames, sent[4], idle, next[4], due (u64). Thread k
        // (on CPU k) starts each stream at client k/threads of the way round: with aligned
        // cursors each attacker's frames would come in pairs, one per thread, the second just
        // behind the one that crossed the threshold.
        let counters = (0..<threads).map { thread in
            var words = [UInt64](repeating: 0, count: 11)
            for stream in 0..<TrafficPlan.streams {
                words[6 + stream] = UInt64(TrafficPlan.startingClient(thread: thread, of: threads, clients: plan.clients[stream]))
            }
            return words.flatMap { word in withUnsafeBytes(of: word.littleEndian) { Array($0) } }
        }
        try program.setPerCPUArrayElement(map: "flood_counters", to: counters)
    }

    /// Paced: each call asks for the frames due by now (the program sends them at once) and the
    /// thread sleeps between calls, rather than the program spinning through runs that are not
    /// due, which would take the CPUs the defended side needs.
    func send(thread: Int, until end: Double, chunk: Int, stop: UnsafeMutablePointer<UInt32>) throws {
        if threadRate > 0 {
            var requested = 0.0
            while monotonicSeconds() < end && cportcullis_load_acquire_u32(stop) == 0 {
                let due = threadRate * (monotonicSeconds() - startSeconds) - requested
                if due < 64 {
                    var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
                    nanosleep(&pause, nil)
                    continue
                }
                let count = UInt32(min(due, Double(1 << 24)))
                try program.transmitLiveFrames(templates[1].bytes, count: count, interfaceIndex: interfaceIndex)
                requested += Double(count)
            }
            return
        }
        var repeatCount = UInt32(chunk)
        while monotonicSeconds() < end && cportcullis_load_acquire_u32(stop) == 0 {
            let before = monotonicSeconds()
            try program.transmitLiveFrames(templates[1].bytes, count: repeatCount, interfaceIndex: interfaceIndex)
            let took = max(monotonicSeconds() - before, 1e-4)
            repeatCount = UInt32(min(max(Double(repeatCount) * 0.2 / took, 4096), Double(1 << 26)))
        }
    }

    func counts() throws -> FloodCounts {
        // struct flood_counters (per CPU): frames, sent[4], idle, next[4], due (u64).
        var counts = FloodCounts()
        for bytes in try program.perCPUArrayElement(map: "flood_counters") {
            for stream in 0..<TrafficPlan.streams {
                counts.sent[stream] += bytes.withUnsafeBytes {
                    Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: (1 + stream) * 8, as: UInt64.self)))
                }
            }
        }
        return counts
    }
}

/// The fallback engine: frames built in user space, sent with sendmmsg on an AF_PACKET socket
/// (PACKET_QDISC_BYPASS), in batches of 256, paced by sleeping.
final class PacketSender: FrameSender, @unchecked Sendable {
    let lanes: [PacketLane]

    init(plan: TrafficPlan, templates: [FrameTemplate], interface: String, threads: Int) throws {
        lanes = try (0..<threads).map { _ in
            try PacketLane(plan: plan, rate: Double(plan.rate) / Double(threads), templates: templates, interface: interface)
        }
        for (thread, lane) in lanes.enumerated() {
            lane.firstClient = (0..<TrafficPlan.streams).map {
                TrafficPlan.startingClient(thread: thread, of: threads, clients: plan.clients[$0])
            }
        }
    }

    func configure(duration: Double, threads: Int) throws {}

    func send(thread: Int, until end: Double, chunk: Int, stop: UnsafeMutablePointer<UInt32>) throws {
        lanes[thread].run(until: end, stop: stop)
    }

    func counts() throws -> FloodCounts {
        var total = FloodCounts()
        for lane in lanes {
            for stream in 0..<TrafficPlan.streams { total.sent[stream] += lane.tally.sent[stream] }
            total.failures += lane.tally.failures
        }
        return total
    }
}

/// One thread's share of the fallback engine: its own socket, buffers and counts.
final class PacketLane {
    let fd: Int32
    let plan: TrafficPlan
    /// Frames per second of this lane; 0: as fast as it goes.
    let rate: Double
    var templates: [FrameTemplate]
    private(set) var tally = FloodCounts()
    private var frames = 0
    /// Per stream, the client this lane starts with (see TrafficPlan.startingClient).
    var firstClient = [0, 0, 0, 0]
    static let batch = 256
    private let buffers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cportcullis_mmsghdr>

    init(plan: TrafficPlan, rate: Double, templates: [FrameTemplate], interface: String) throws {
        let index = if_nametoindex(interface)
        guard index > 0 else {
            throw ValidationError("no interface \(interface) in this network namespace: run flood through tools/testbed flood")
        }
        self.rate = rate
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        guard fd >= 0 else { fail("flood: cannot open an AF_PACKET socket: \(String(cString: strerror(errno))) (run as root)") }
        var bypass: Int32 = 1
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &bypass, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_ifindex = Int32(index)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size)) }
        }
        guard bound == 0 else { fail("flood: cannot bind the AF_PACKET socket to \(interface): \(String(cString: strerror(errno)))") }
        self.fd = fd
        self.plan = plan
        self.templates = templates
        let size = 128
        buffers = UnsafeMutableRawPointer.allocate(byteCount: Self.batch * size, alignment: 64)
        iovecs = .allocate(capacity: Self.batch)
        messages = .allocate(capacity: Self.batch)
        for slot in 0..<Self.batch {
            iovecs[slot] = iovec(iov_base: buffers + slot * size, iov_len: 0)
            var message = cportcullis_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            messages[slot] = message
        }
    }

    deinit {
        close(fd)
        buffers.deallocate()
        iovecs.deallocate()
        messages.deallocate()
    }

    func run(until end: Double, stop: UnsafeMutablePointer<UInt32>) {
        let start = monotonicSeconds()
        while true {
            let now = monotonicSeconds()
            if now >= end || cportcullis_load_acquire_u32(stop) != 0 { break }
            var count = Self.batch
            if rate > 0 {
                let due = Int(rate * (now - start)) - frames
                if due <= 0 {
                    var pause = timespec(tv_sec: 0, tv_nsec: 100_000)
                    nanosleep(&pause, nil)
                    continue
                }
                count = min(count, due)
            }
            send(count)
        }
    }

    private func send(_ count: Int) {
        for slot in 0..<count {
            let stream = pickStream()
            let family = TrafficPlan.isIPv6(stream: stream) ? 1 : 0
            let template = templates[family]
            let frame = iovecs[slot].iov_base!
            frame.copyMemory(from: template.bytes, byteCount: template.bytes.count)
            iovecs[slot].iov_len = template.bytes.count
            let address = AddressPlan.address(base: TrafficPlan.bases[stream], index: (firstClient[stream] + tally.sent[stream]) % plan.clients[stream])
            template.rewrite(frame, source: address, payload: UInt8(ascii: TrafficPlan.isValid(stream: stream) ? "A" : "B"))
            frames += 1
            tally.sent[stream] += 1
        }
        var offset = 0
        while offset < count {
            let result = cportcullis_sendmmsg(fd, messages + offset, UInt32(count - offset), 0)
            if result < 0 {
                if errno == EINTR { continue }
                if errno == ENOBUFS || errno == EAGAIN {
                    tally.failures += 1
                    sched_yield()
                    continue
                }
                fail("flood: sendmmsg on the AF_PACKET socket failed: \(String(cString: strerror(errno)))")
            }
            offset += Int(result)
        }
    }

    /// bpf/flood.bpf.c's pick_stream.
    private func pickStream() -> Int {
        let total = plan.weight.reduce(0, +)
        var best = -1
        var bestDeficit = Int64.min
        for stream in 0..<TrafficPlan.streams where plan.weight[stream] > 0 && plan.clients[stream] > 0 {
            // Wrapping, as the BPF program's u64 arithmetic does.
            let deficit = Int64(bitPattern: UInt64(frames + 1) &* plan.weight[stream]) &- Int64(bitPattern: UInt64(tally.sent[stream]) &* total)
            if deficit > bestDeficit {
                best = stream
                bestDeficit = deficit
            }
        }
        return best
    }

}

/// A UDP frame from the client side to the server, with correct checksums (the IPv4 UDP checksum
/// is 0, "none"); `rewrite` changes its source address and payload byte in place.
struct FrameTemplate {
    let family: Int
    let bytes: [UInt8]
    /// Both families' frames are 80 bytes, so live frames never change length.
    static let frameLength = 80
    private var headerLength: Int { family == 0 ? 34 : 54 }

    init(family: Int, sourceMAC: [UInt8], serverMAC: [UInt8], port: UInt16) {
        var frame = serverMAC + sourceMAC + (family == 0 ? [0x08, 0x00] : [0x86, 0xdd])
        let headerLength = family == 0 ? 34 : 54
        let udpLength = Self.frameLength - headerLength
        let filler = Array("portcullis testbed flood, payload B: attack, A: valid".utf8)
        let payload: [UInt8] = [UInt8(ascii: "B")] + filler[0..<(udpLength - 9)]
        let source = family == 0 ? AddressPlan.attackerBase4 : AddressPlan.attackerBase6
        let server = family == 0 ? AddressPlan.server4 : AddressPlan.server6
        if family == 0 {
            frame += [0x45, 0, 0, UInt8(20 + udpLength), 0, 0, 0x40, 0, 64, 17, 0, 0] + source + server
        } else {
            frame += [0x60, 0, 0, 0, 0, UInt8(udpLength), 17, 64] + source + server
        }
        frame += [0x9c, 0x40, UInt8(port >> 8), UInt8(port & 0xff), 0, UInt8(udpLength), 0, 0] + payload
        frame.withUnsafeMutableBytes { Self.fixChecksums($0.baseAddress!, family: family) }
        self.family = family
        self.bytes = frame
    }

    func rewrite(_ frame: UnsafeMutableRawPointer, source: [UInt8], payload: UInt8) {
        let sourceOffset = family == 0 ? 26 : 22
        source.withUnsafeBytes { frame.advanced(by: sourceOffset).copyMemory(from: $0.baseAddress!, byteCount: source.count) }
        frame.storeBytes(of: payload, toByteOffset: headerLength + 8, as: UInt8.self)
        Self.fixChecksums(frame, family: family)
    }

    /// Recomputes the IPv4 header checksum, or the IPv6 UDP checksum (pseudo-header included).
    static func fixChecksums(_ frame: UnsafeMutableRawPointer, family: Int) {
        func sum(_ offset: Int, _ length: Int, _ start: UInt32 = 0) -> UInt32 {
            var total = start
            for position in stride(from: offset, to: offset + length, by: 2) {
                total += UInt32(frame.load(fromByteOffset: position, as: UInt8.self)) << 8
                    | UInt32(frame.load(fromByteOffset: position + 1, as: UInt8.self))
            }
            return total
        }
        func store(_ total: UInt32, at offset: Int, zeroAsOnes: Bool) {
            var folded = total
            while folded > 0xffff { folded = (folded & 0xffff) + (folded >> 16) }
            var checksum = ~UInt16(folded)
            if zeroAsOnes && checksum == 0 { checksum = 0xffff }
            frame.storeBytes(of: checksum.bigEndian, toByteOffset: offset, as: UInt16.self)
        }
        if family == 0 {
            frame.storeBytes(of: 0, toByteOffset: 24, as: UInt16.self)
            store(sum(14, 20), at: 24, zeroAsOnes: false)
        } else {
            frame.storeBytes(of: 0, toByteOffset: 60, as: UInt16.self)
            let udpLength = frameLength - 54
            // Pseudo-header: both addresses, the UDP length and next header 17.
            let total = sum(22, 32, UInt32(udpLength) + 17)
            store(sum(54, udpLength, total), at: 60, zeroAsOnes: true)
        }
    }
}

func parseMAC(_ text: String, option: String) throws -> [UInt8] {
    let parts = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    guard parts.count == 6 else { throw ValidationError("\(option) \(text) is not a MAC address like 02:00:c6:12:00:01") }
    return parts
}
