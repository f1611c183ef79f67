// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CLab
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// The engines that build frames in user space, one lane (socket, buffers, counts) per thread:
/// AF_XDP (`xsk`: frames written into the socket's UMEM, sent by the kernel in copy mode, no XDP
/// program) and AF_PACKET (`packet`: `sendmmsg` in batches of 256, `PACKET_QDISC_BYPASS`). Both
/// are paced by sleeping. Where the kernel refuses live frames, xsk is the faster: 1.3-1.5x the
/// frames of sendmmsg on this machine's veth, one and two threads, with and without an XDP program
/// on the peer (BUILD.md, "The testbed's generator").
final class UserSpaceSender: FrameSender, @unchecked Sendable {
    let lanes: [FrameLane]

    init(kind: Flood.Engine, plan: TrafficPlan, templates: [FrameTemplate], interface: String, threads: Int) throws {
        let index = if_nametoindex(interface)
        guard index > 0 else {
            throw ValidationError(
                "no interface \(interface) in this network namespace: run flood through Lab/tools/testbed flood")
        }
        lanes = try (0..<threads).map { thread in
            var schedule = FrameSchedule(plan: plan, rate: Double(plan.rate) / Double(threads), templates: templates)
            schedule.firstClient = (0..<TrafficPlan.streams).map {
                TrafficPlan.startingClient(thread: thread, of: threads, clients: plan.clients[$0])
            }
            return kind == .xsk
                ? try XSKLane(schedule: schedule, interfaceIndex: index, queue: UInt32(thread))
                : try PacketLane(schedule: schedule, interfaceIndex: index, interface: interface)
        }
    }

    func configure(duration: Double, threads: Int) throws {}

    func send(thread: Int, until end: Double, chunk: Int, stop: StopFlag) throws {
        try lanes[thread].run(until: end, stop: stop)
    }

    func counts() throws -> FloodCounts {
        var total = FloodCounts()
        for lane in lanes {
            let tally = lane.finish()
            for stream in 0..<TrafficPlan.streams { total.sent[stream] += tally.sent[stream] }
            total.failures += tally.failures
        }
        return total
    }
}

/// Which frame comes next on one lane, and when: bpf/flood.bpf.c's schedule in user space.
struct FrameSchedule {
    let plan: TrafficPlan
    /// Frames per second of this lane; 0: as fast as it goes.
    let rate: Double
    let templates: [FrameTemplate]
    var tally = FloodCounts()
    private var frames = 0
    /// Per stream, the client this lane starts with (see TrafficPlan.startingClient).
    var firstClient = [0, 0, 0, 0]

    init(plan: TrafficPlan, rate: Double, templates: [FrameTemplate]) {
        self.plan = plan
        self.rate = rate
        self.templates = templates
    }

    /// How many frames are due `elapsed` seconds after the start, at most `batch`; 0: none yet.
    func due(elapsed: Double, batch: Int) -> Int {
        rate > 0 ? min(batch, max(Int(rate * elapsed) - frames, 0)) : batch
    }

    /// Writes the next frame at `frame` (room for FrameTemplate.frameLength bytes) and counts it
    /// sent; returns its length.
    mutating func writeNext(into frame: UnsafeMutableRawPointer) -> Int {
        let stream = pickStream()
        let template = templates[TrafficPlan.isIPv6(stream: stream) ? 1 : 0]
        frame.copyMemory(from: template.bytes, byteCount: template.bytes.count)
        let address = AddressPlan.address(
            base: TrafficPlan.bases[stream], index: (firstClient[stream] + tally.sent[stream]) % plan.clients[stream])
        template.rewrite(frame, source: address, payload: UInt8(ascii: TrafficPlan.isValid(stream: stream) ? "A" : "B"))
        frames += 1
        tally.sent[stream] += 1
        return template.bytes.count
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

/// One thread's share of a user-space engine.
class FrameLane {
    var schedule: FrameSchedule
    static let batch = 256

    init(schedule: FrameSchedule) { self.schedule = schedule }

    /// Sends what is due until `end` or `stop`, sleeping 0.1 ms while nothing is.
    func run(until end: Double, stop: StopFlag) throws {
        let start = SystemClock.monotonicSeconds()
        while true {
            let now = SystemClock.monotonicSeconds()
            if now >= end || stop.isSet { break }
            let count = schedule.due(elapsed: now - start, batch: Self.batch)
            if count == 0 {
                SystemClock.sleep(nanoseconds: 100_000)
                continue
            }
            try send(count, until: end, stop: stop)
        }
    }

    /// Builds and sends `count` frames; a device that keeps refusing them is given up on at `end`.
    func send(_ count: Int, until end: Double, stop: StopFlag) throws { fatalError("a lane sends") }

    /// Its counts, once sending has ended.
    func finish() -> FloodCounts { schedule.tally }
}

/// AF_PACKET with sendmmsg.
final class PacketLane: FrameLane {
    let fd: Int32
    private let buffers: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let messages: UnsafeMutablePointer<cportcullis_mmsghdr>
    private static let slotSize = 128

    init(schedule: FrameSchedule, interfaceIndex: UInt32, interface: String) throws {
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        guard fd >= 0 else {
            Console.fail("flood: cannot open an AF_PACKET socket: \(String(cString: strerror(errno))) (run as root)")
        }
        var bypass: Int32 = 1
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &bypass, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_ll()
        address.sll_family = UInt16(AF_PACKET)
        address.sll_ifindex = Int32(interfaceIndex)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size))
            }
        }
        guard bound == 0 else {
            Console.fail("flood: cannot bind the AF_PACKET socket to \(interface): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        buffers = UnsafeMutableRawPointer.allocate(byteCount: Self.batch * Self.slotSize, alignment: 64)
        iovecs = .allocate(capacity: Self.batch)
        messages = .allocate(capacity: Self.batch)
        for slot in 0..<Self.batch {
            iovecs[slot] = iovec(iov_base: buffers + slot * Self.slotSize, iov_len: 0)
            var message = cportcullis_mmsghdr()
            message.msg_hdr.msg_iov = iovecs + slot
            message.msg_hdr.msg_iovlen = 1
            messages[slot] = message
        }
        super.init(schedule: schedule)
    }

    deinit {
        close(fd)
        buffers.deallocate()
        iovecs.deallocate()
        messages.deallocate()
    }

    override func send(_ count: Int, until end: Double, stop: StopFlag) throws {
        for slot in 0..<count { iovecs[slot].iov_len = schedule.writeNext(into: iovecs[slot].iov_base!) }
        var offset = 0
        while offset < count {
            switch systemCallResult({ cportcullis_sendmmsg(fd, messages + offset, UInt32(count - offset), 0) }) {
            case .success(let sent):
                offset += Int(sent)
            case .failure(let error) where error.code == ENOBUFS || error.code == EAGAIN:
                schedule.tally.failures += 1
                // A device that refuses every frame (a peer that is down) must not hold the
                // thread past its end.
                if SystemClock.monotonicSeconds() >= end || stop.isSet { return }
                sched_yield()
            case .failure(let error):
                Console.fail("flood: sendmmsg on the AF_PACKET socket failed: \(error)")
            }
        }
    }
}

/// AF_XDP in copy mode through libxdp's xsk rings (Lab/Sources/CLab/clab_xsk.c): thread k sends on
/// queue k, so the interface needs as many queues as threads (Lab/tools/testbed makes one per CPU).
final class XSKLane: FrameLane {
    private let socket: OpaquePointer

    init(schedule: FrameSchedule, interfaceIndex: UInt32, queue: UInt32) throws {
        var made: OpaquePointer?
        let error = clab_xsk_open(&made, interfaceIndex, queue, 4096)
        guard error == 0, let made else {
            throw XSKError(
                operation: "open an AF_XDP socket on queue \(queue) (the interface needs a queue per --threads)",
                code: -error)
        }
        socket = made
        super.init(schedule: schedule)
    }

    deinit { clab_xsk_close(socket) }

    override func send(_ count: Int, until end: Double, stop: StopFlag) throws {
        var written = 0
        while written < count {
            guard let slot = clab_xsk_slot(socket) else {
                // Every slot in flight: hand them to the kernel, take back what it completed.
                try flush(until: end, stop: stop)
                if SystemClock.monotonicSeconds() >= end || stop.isSet { return }
                continue
            }
            clab_xsk_commit(socket, UInt32(schedule.writeNext(into: slot)))
            written += 1
        }
        try flush(until: end, stop: stop)
    }

    private func flush(until end: Double, stop: StopFlag) throws {
        let error = clab_xsk_flush(socket)
        switch -error {
        case 0: return
        case EAGAIN, EBUSY, ENOBUFS, ENETDOWN: sched_yield()  // counted by clab_xsk_counts
        default: throw XSKError(operation: "send on the AF_XDP socket", code: -error)
        }
    }

    override func finish() -> FloodCounts {
        clab_xsk_drain(socket, 200)
        var counts = clab_xsk_counts()
        _ = clab_xsk_counts(socket, &counts)
        var tally = schedule.tally
        tally.failures = Int(counts.dropped + counts.failed_flushes + counts.invalid)
        return tally
    }
}

/// A failing AF_XDP call, for the one-line error.
struct XSKError: Error, CustomStringConvertible {
    let operation: String
    let code: Int32
    var description: String { "\(operation): \(String(cString: strerror(code)))" }
}
