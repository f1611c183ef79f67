// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem
@_spi(Testing) import XDPFirewall
import XDPTesting

/// The `xdp` suite's rows for what a flood costs: one banned source's packets on two CPUs at once
/// against one CPU (what a shared cache line written per drop costs), and a different source for
/// every packet over a million banned or unbanned ones (a cold cache), each beside xdp-filter.
extension XDPSuite {
    /// Per-packet ns of each program on `cases` run on two CPUs at once, against one CPU alone, in
    /// alternating rounds, every verdict checked.
    func twoCPUCosts(
        _ cases: [(String, [UInt8], XDPVerdict)], filter: LoadedProgram, peer: XDPFilterPeer?
    ) throws
        -> [Measurement]
    {
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        guard cpus >= 2 else {
            FileHandle.standardError.write(Data("portcullis-perf: one CPU online; the two-CPU rows are skipped\n".utf8))
            return []
        }
        let first = max(options.cpu, 0)
        let second = (first + 1) % cpus
        var results: [Measurement] = []
        for (name, frame, expected) in cases {
            var programs = [("filter", filter)]
            if let peer { programs.append(("xdp-filter", peer.program)) }
            for (label, program) in programs {
                var alone: [Double] = []
                var together: [Double] = []
                for _ in 0..<options.rounds {
                    alone.append(try concurrentRuns(program, frame, expected, cpus: [first]))
                    together.append(try concurrentRuns(program, frame, expected, cpus: [first, second]))
                }
                results.append(
                    Measurement(
                        suite: "xdp", name: "\(label) \(name), two CPUs at once", unit: "ns/packet",
                        value: median(together), reference: "one CPU", referenceValue: median(alone),
                        rounds: options.rounds, ratio: median(zip(together, alone).map { $0 / max($1, 1) })))
            }
        }
        return results
    }

    /// One test run of `frame` on each of `cpus` at the same time (threads pinned, released
    /// together). - Returns: their mean ns per packet.
    private func concurrentRuns(
        _ program: LoadedProgram, _ frame: [UInt8], _ expected: XDPVerdict, cpus: [Int]
    )
        throws -> Double
    {
        final class Outcome: @unchecked Sendable {
            let lock = NSLock()
            var times: [Double] = []
            var failure: String?
            let start = DispatchGroup()
        }
        let outcome = Outcome()
        outcome.start.enter()
        let repetitions = self.repetitions
        let threads = try cpus.map { cpu in
            try SystemThread.spawn {
                var failure: String?
                var time = 0.0
                do {
                    try SystemThread.pinCurrent(to: cpu)
                    outcome.start.wait()
                    let run = try program.testRun(frame: frame, repetitions: repetitions)
                    if run.verdict != expected { failure = "CPU \(cpu): \(run.verdict), expected \(expected)" }
                    time = Double(run.averageNanoseconds)
                } catch {
                    failure = "CPU \(cpu): \(error)"
                }
                outcome.lock.lock()
                outcome.times.append(time)
                if let failure { outcome.failure = failure }
                outcome.lock.unlock()
            }
        }
        outcome.start.leave()
        for thread in threads { thread.join() }
        if let failure = outcome.failure { throw MeasurementError(description: "two CPUs: \(failure)") }
        return outcome.times.reduce(0, +) / Double(outcome.times.count)
    }

    /// Per-packet ns over many sources, each packet from another (pc_xdp_spray writes it and
    /// tail-calls the program; what the spray costs alone is measured in the same rounds and
    /// subtracted): `manySources` IPv6 sources banned for an hour and as many unbanned, and the
    /// 65,534 each of 198.18.0.0/15 can hold. Every verdict is checked through the programs'
    /// own counters.
    func manySourceCosts(filter: LoadedProgram, spray: LoadedProgram, peer: XDPFilterPeer?) throws -> [Measurement] {
        let maps = filter.maps!
        let end = BanExpiry.after(seconds: 3600)!
        let half = XDPSuite.rangeCapacity / 2
        let server4 = IPAddress("198.18.255.254")!
        let server6 = IPAddress("2001:2::fffe")!
        // name, banned, a frame whose source the spray rewrites, its first value, count, offset.
        let sets: [(String, Bool, [UInt8], UInt32, Int, UInt32)] = [
            (
                "IPv6 \(manySources) sources banned", true,
                TestFrame.udp(from: benchmarkIPv6(group: 3, index: 0), to: server6), 0, manySources, 34
            ),
            (
                "IPv6 \(manySources) sources unbanned", false,
                TestFrame.udp(from: benchmarkIPv6(group: 4, index: 0), to: server6), 0, manySources, 34
            ),
            (
                "IPv4 \(half) sources banned", true, TestFrame.udp(from: benchmarkIPv4(0), to: server4),
                UInt32(0xc612_0004), half, 26
            ),
            (
                "IPv4 \(half) sources unbanned", false, TestFrame.udp(from: benchmarkIPv4(half), to: server4),
                UInt32(0xc612_0004 + half), half, 26
            ),
        ]
        let banned =
            (0..<manySources).map { benchmarkIPv6(group: 3, index: $0) } + (0..<half).map { benchmarkIPv4($0) }
        let requests = banned.map { BanRequest($0, end) }
        for start in stride(from: 0, to: requests.count, by: 8192) {
            try maps.ban(batch: Array(requests[start..<min(start + 8192, requests.count)]))
        }
        try peer?.block(banned)
        let sprayEnd = try LoadedProgram(objectAt: spray.object.path, programName: "pc_xdp_spray_end")
        let target = bpf_map__fd(try spray.object.map("spray_target"))
        func aim(at program: LoadedProgram) throws {
            var key: UInt32 = 0
            var fd = program.programFD
            guard bpf_map_update_elem(target, &key, &fd, UInt64(BPF_ANY)) == 0 else {
                throw MeasurementError(description: "point the spray at a program: errno \(errno)")
            }
        }
        var results: [Measurement] = []
        for (name, isBanned, frame, base, count, offset) in sets {
            try spray.setArrayElement(map: "spray_config", to: sprayConfig(count: count, base: base, offset: offset))
            let verdict: XDPVerdict = isBanned ? .drop : .pass
            var programs: [(String, LoadedProgram, () throws -> UInt64)] = [
                (
                    "filter", filter,
                    { () throws -> UInt64 in
                        let counters = try maps.counters()
                        return isBanned ? counters.dropped.packets : counters.passed.packets
                    }
                ),
                ("spray", sprayEnd, { 0 }),
            ]
            if let peer { programs.append(("xdp-filter", peer.program, { try peer.frames(verdict) })) }
            var times = [[Double]](repeating: [], count: programs.count)
            for round in 0..<options.rounds {
                for step in 0..<programs.count {
                    let index = (round + step) % programs.count
                    let (label, program, counted) = programs[index]
                    try aim(at: program)
                    let before = try counted()
                    let run = try spray.testRun(frame: frame, repetitions: repetitions)
                    let expected = label == "spray" ? XDPVerdict.pass : verdict
                    let seen = try counted() - before
                    if run.verdict != expected || (label != "spray" && seen != UInt64(repetitions)) {
                        throw MeasurementError(
                            description: "\(name): \(label) returned \(run.verdict) (expected \(expected)), "
                                + "\(seen) of \(repetitions) frames counted as \(expected)")
                    }
                    times[index].append(Double(run.averageNanoseconds))
                }
            }
            // Each round's spray cost subtracted from the same round's figures.
            let filterTimes = zip(times[0], times[1]).map { $0 - $1 }
            results.append(
                Measurement(
                    suite: "xdp", name: "filter \(name), each packet another", unit: "ns/packet",
                    value: median(filterTimes), reference: "the spray alone (subtracted)",
                    referenceValue: median(times[1]), rounds: options.rounds))
            if peer != nil {
                let peerTimes = zip(times[2], times[1]).map { $0 - $1 }
                results.append(
                    Measurement(
                        suite: "xdp", name: "filter \(name), each packet another", unit: "ns/packet",
                        value: median(filterTimes), reference: "xdp-filter", referenceValue: median(peerTimes),
                        rounds: options.rounds,
                        ratio: median(zip(filterTimes, peerTimes).map { $0 / max($1, 1) })))
            }
        }
        try maps.unban(batch: banned)
        return results
    }

    /// pc_xdp_spray's configuration (xdp_spray.bpf.c's struct spray_config, host order).
    private func sprayConfig(count: Int, base: UInt32, offset: UInt32) -> [UInt8] {
        [UInt32(count), base, offset, 0].flatMap { value in withUnsafeBytes(of: value) { Array($0) } }
    }
}
