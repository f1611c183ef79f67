import ArgumentParser
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// The fallback engine: frames built in user space, sent with sendmmsg on an AF_PACKET socket
/// (PACKET_QDISC_BYPASS), in batches of 256, paced by sleeping.
final class PacketSender: FrameSender, @unchecked Sendable {
    let lanes: [PacketLane]

    init(plan: TrafficPlan, templates: [FrameTemplate], interface: String, threads: Int) throws {
        lanes = try (0..<threads).map { _ in
            try PacketLane(
                plan: plan, rate: Double(plan.rate) / Double(threads), templates: templates, interface: interface)
        }
        for (thread, lane) in lanes.enumerated() {
            lane.firstClient = (0..<TrafficPlan.streams).map {
                TrafficPlan.startingClient(thread: thread, of: threads, clients: plan.clients[$0])
            }
        }
    }

    func configure(duration: Double, threads: Int) throws {}

    func send(thread: Int, until end: Double, chunk: Int, stop: StopFlag) throws {
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
            throw ValidationError(
                "no interface \(interface) in this network namespace: run flood through Lab/tools/testbed flood")
        }
        self.rate = rate
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        guard fd >= 0 else {
            Console.fail("flood: cannot open an AF_PACKET socket: \(String(cString: strerror(errno))) (run as root)")
        }
        var bypass: Int32 = 1
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &bypass, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_ifindex = Int32(index)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard bound == 0 else {
            Console.fail("flood: cannot bind the AF_PACKET socket to \(interface): \(String(cString: strerror(errno)))")
        }
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

    func run(until end: Double, stop: StopFlag) {
        let start = SystemClock.monotonicSeconds()
        while true {
            let now = SystemClock.monotonicSeconds()
            if now >= end || stop.isSet { break }
            var count = Self.batch
            if rate > 0 {
                let due = Int(rate * (now - start)) - frames
                if due <= 0 {
                    SystemClock.sleep(nanoseconds: 100_000)
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
            let address = AddressPlan.address(
                base: TrafficPlan.bases[stream],
                index: (firstClient[stream] + tally.sent[stream]) % plan.clients[stream])
            template.rewrite(
                frame, source: address, payload: UInt8(ascii: TrafficPlan.isValid(stream: stream) ? "A" : "B"))
            frames += 1
            tally.sent[stream] += 1
        }
        var offset = 0
        while offset < count {
            switch systemCallResult({ cportcullis_sendmmsg(fd, messages + offset, UInt32(count - offset), 0) }) {
            case .success(let sent):
                offset += Int(sent)
            case .failure(let error) where error.code == ENOBUFS || error.code == EAGAIN:
                tally.failures += 1
                sched_yield()
            case .failure(let error):
                Console.fail("flood: sendmmsg on the AF_PACKET socket failed: \(error)")
            }
        }
    }

    /// bpf/flood.bpf.c's pick_stream.
    private func pickStream() -> Int {
        let total = plan.weight.reduce(0, +)
        var best = -1
        var bestDeficit = Int64.min
        for stream in 0..<TrafficPlan.streams where plan.weight[stream] > 0 && plan.clients[stream] > 0 {
            // Wrapping, as the BPF program's u64 arithmetic does.
            let deficit =
                Int64(bitPattern: UInt64(frames + 1) &* plan.weight[stream])
                &- Int64(bitPattern: UInt64(tally.sent[stream]) &* total)
            if deficit > bestDeficit {
                best = stream
                bestDeficit = deficit
            }
        }
        return best
    }

}
