// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import CLab
import XDPFirewall
import XDPTesting

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
            throw ValidationError(
                "no interface \(interface) in this network namespace: run flood through Lab/tools/testbed flood")
        }
        interfaceIndex = Int32(index)
        let path = try BPFObjectLocator().locate("flood.bpf.o", explicit: objectPath)
        program = try LoadedProgram(objectAt: path, programName: FLOOD_PROG_NAME)
        self.plan = plan
        self.templates = templates
    }

    /// Why the kernel refuses live frames here, or nil. Asked before `configure`: the program's
    /// window has not begun, so the probe's frame is dropped, never sent.
    func refusal() -> FirewallError? {
        program.liveFramesRefusal(probing: templates[0].bytes, interfaceIndex: interfaceIndex)
    }

    func configure(duration: Double, threads: Int) throws {
        let start = UInt64(SystemClock.monotonicSeconds() * 1e9)
        startSeconds = Double(start) / 1e9
        // Paced at least one frame per second per thread: 0 would mean unpaced.
        let perThread = plan.rate > 0 ? max(1, plan.rate / UInt64(threads)) : 0
        threadRate = Double(perThread)
        var config = flood_config()
        config.rate = perThread
        config.start_ns = start
        config.end_ns = start + UInt64(duration * 1e9)
        withUnsafeMutableBytes(of: &config.weight) {
            $0.withMemoryRebound(to: UInt64.self) { weights in
                for stream in 0..<TrafficPlan.streams { weights[stream] = plan.weight[stream] }
            }
        }
        withUnsafeMutableBytes(of: &config.clients) {
            $0.withMemoryRebound(to: UInt32.self) { clients in
                for stream in 0..<TrafficPlan.streams { clients[stream] = UInt32(plan.clients[stream]) }
            }
        }
        let baseStride = MemoryLayout.size(ofValue: config.base) / TrafficPlan.streams
        withUnsafeMutableBytes(of: &config.base) { bases in
            for (stream, base) in TrafficPlan.bases.enumerated() {
                bases.baseAddress!.advanced(by: stream * baseStride).copyMemory(from: base, byteCount: base.count)
            }
        }
        withUnsafeMutableBytes(of: &config.frame_v4) { $0.copyBytes(from: templates[0].bytes) }
        withUnsafeMutableBytes(of: &config.frame_v6) { $0.copyBytes(from: templates[1].bytes) }
        try program.setArrayElement(map: FLOOD_MAP_CONFIG, to: withUnsafeBytes(of: config) { Array($0) })
        // Thread k (on CPU k) starts each stream at client k/threads of the way round: with aligned
        // cursors each attacker's frames would come in pairs, one per thread, the second just
        // behind the one that crossed the threshold.
        let counters = (0..<threads).map { thread in
            var counters = flood_counters()
            withUnsafeMutableBytes(of: &counters.next) {
                $0.withMemoryRebound(to: UInt64.self) { next in
                    for stream in 0..<TrafficPlan.streams {
                        next[stream] = UInt64(
                            TrafficPlan.startingClient(thread: thread, of: threads, clients: plan.clients[stream]))
                    }
                }
            }
            return withUnsafeBytes(of: counters) { Array($0) }
        }
        try program.setPerCPUArrayElement(map: FLOOD_MAP_COUNTERS, to: counters)
    }

    /// Paced: each call asks for the frames due by now (the program sends them at once) and the
    /// thread sleeps between calls, rather than the program spinning through runs that are not
    /// due, which would take the CPUs the defended side needs.
    func send(thread: Int, until end: Double, chunk: Int, stop: StopFlag) throws {
        if threadRate > 0 {
            var requested = 0.0
            while SystemClock.monotonicSeconds() < end && !stop.isSet {
                let due = threadRate * (SystemClock.monotonicSeconds() - startSeconds) - requested
                if due < 64 {
                    SystemClock.sleep(nanoseconds: 1_000_000)
                    continue
                }
                let count = UInt32(min(due, Double(1 << 24)))
                try program.transmitLiveFrames(templates[1].bytes, count: count, interfaceIndex: interfaceIndex)
                requested += Double(count)
            }
            return
        }
        var repeatCount = UInt32(chunk)
        while SystemClock.monotonicSeconds() < end && !stop.isSet {
            let before = SystemClock.monotonicSeconds()
            try program.transmitLiveFrames(templates[1].bytes, count: repeatCount, interfaceIndex: interfaceIndex)
            let took = max(SystemClock.monotonicSeconds() - before, 1e-4)
            repeatCount = UInt32(min(max(Double(repeatCount) * 0.2 / took, 4096), Double(1 << 26)))
        }
    }

    func counts() throws -> FloodCounts {
        var counts = FloodCounts()
        for bytes in try program.perCPUArrayElement(map: FLOOD_MAP_COUNTERS) {
            let counters = bytes.withUnsafeBytes { $0.loadUnaligned(as: flood_counters.self) }
            withUnsafeBytes(of: counters.sent) {
                $0.withMemoryRebound(to: UInt64.self) { sent in
                    for stream in 0..<TrafficPlan.streams { counts.sent[stream] += Int(sent[stream]) }
                }
            }
        }
        return counts
    }
}
