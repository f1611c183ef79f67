// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem
@_spi(Testing) import XDPFirewall
import XDPTesting

/// The `xdp` suite's rows for the clocks a ban's end can be compared with (xdp_clocks.bpf.o): what
/// each adds to a drop for a ban ending in an hour, against the same program comparing nothing, in
/// alternating rounds; and what a kernel sweep (bpf_for_each_map_elem deleting ended entries) of the
/// suite's table costs, against the second it would have to run in.
extension XDPSuite {
    func clockCosts(objectPath: String) throws -> [Measurement] {
        let end = BanExpiry.after(seconds: 3600)!
        let crowd = (0..<background).map { benchmarkIPv4($0).ipv4Key }
        let server = IPAddress("198.18.255.254")!
        let frame = TestFrame.udp(from: benchmarkIPv4(0), to: server)
        let entries = UInt32(max(background, 1))
        func load(_ name: String) throws -> LoadedProgram {
            let program = try LoadedProgram(objectAt: objectPath, programName: name, sizes: ["clk_bans": entries])
            let fd = bpf_map__fd(try program.object.map("clk_bans"))
            let value = pc_ban(expires_ns: end.nanosecondsForReference, dropped: 0, origin: 0, tag: 0)
            try updateBatches(fd: fd, keys: crowd, what: "clk_bans") { [pc_ban](repeating: value, count: $0) }
            return program
        }
        let none = try load("pc_clock_none")
        let cached = try load("pc_clock_cached")
        try runSyscallProgram(try cached.object.programFD(named: "clk_start"), "start the cached clock's timer")
        // Two periods: from the second tick on the time in the map is fresh.
        usleep(UInt32(2 * PC_CLOCK_PERIOD_NS / 1000) + 50_000)
        var results: [Measurement] = []
        for (name, label) in [
            ("pc_clock_boot", "bpf_ktime_get_boot_ns()"), ("pc_clock_coarse", "bpf_ktime_get_coarse_ns()"),
            ("pc_clock_jiffies", "bpf_jiffies64()"), ("pc_clock_cached", "the timer's time in a map"),
        ] {
            let program = name == "pc_clock_cached" ? cached : try load(name)
            let times = try rotatingRuns(label, frame, [(program, .drop), (none, .drop)])
            results.append(
                Measurement(
                    suite: "xdp", name: "clock for a timed drop: \(label)", unit: "ns/packet", value: median(times[0]),
                    reference: "the same, no clock read", referenceValue: median(times[1]), rounds: options.rounds,
                    ratio: median(zip(times[0], times[1]).map { $0 / max($1, 1) })))
        }
        let sweep = try none.object.programFD(named: "clk_sweep")
        var sweeps: [Double] = []
        for _ in 0..<options.rounds {
            let start = SystemClock.monotonicNanoseconds()
            let visited = try runSyscallProgram(sweep, "sweep the table")
            sweeps.append(Double(SystemClock.monotonicNanoseconds() - start) / 1e6)
            guard visited == Int32(background) else {
                throw MeasurementError(description: "the sweep visited \(visited) of \(background) entries")
            }
        }
        results.append(
            Measurement(
                suite: "xdp", name: "kernel sweep of \(background) bans (bpf_for_each_map_elem)", unit: "ms",
                value: median(sweeps), reference: "a second (one sweep a second)", referenceValue: 1000,
                rounds: options.rounds))
        return results
    }

    /// Runs a BPF_PROG_TYPE_SYSCALL program once. - Returns: what it returned.
    @discardableResult
    private func runSyscallProgram(_ fd: Int32, _ what: String) throws -> Int32 {
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        guard bpf_prog_test_run_opts(fd, &options) == 0 else {
            throw MeasurementError(description: "\(what): errno \(errno)")
        }
        let result = Int32(bitPattern: options.retval)
        guard result >= 0 else { throw MeasurementError(description: "\(what): the program returned \(result)") }
        return result
    }
}
