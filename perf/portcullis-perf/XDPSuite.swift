// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// Suite `xdp`: the filter's cost per packet (kernel test-run) next to a program that only parses
/// and next to xdp-filter, on one CPU and on two at once, for one source and for many; and ban
/// installation with one map update per address next to batched updates.
struct XDPSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdp",
        abstract:
            "XDP filter ns/packet vs a parse-only program and vs xdp-filter (one CPU, two at once, a million "
            + "sources), and with networks loaded vs the exact-only filter; list "
            + "swaps; CrowdSec answers parsed and installed; bans/s single vs batched map updates.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "Test-run repetitions per round (the kernel reports the mean time of one).")
    var repetitions: Int32 = 1_000_000

    @Option(help: "Addresses banned per round in the ban installation measurement.")
    var bans = 65_536

    @Option(help: "Addresses per bpf_map_update_batch call.")
    var batchSize = 1024

    @Option(help: "Other bans in the maps while packets are timed (a populated hash table).")
    var background = 131_068

    @Option(help: "IPv6 exact bans in the maps for the network rows (against the exact-only filter).")
    var exactBans = 1_000_000

    @Option(help: "IPv6 /64 prefix bans for the network rows (at most 32,768: half of 2001:2::/48).")
    var prefixes = 32_768

    @Option(help: "Entries of the blocklist loaded and swapped in the network rows.")
    var listEntries = 100_000

    @Option(help: "CrowdSec decisions per Local API answer in the bouncer's rows.")
    var decisions = 100_000

    @Flag(help: "Only the CrowdSec bouncer's rows.")
    var crowdsecOnly = false

    @Option(help: "Path of portcullis.bpf.o (xdp_reference.bpf.o, xdp_spray.bpf.o and xdp_clocks.bpf.o beside it).")
    var bpfObject: String?

    @Option(help: "xdp-filter's compiled blocklist program, the in-run peer (its rows are skipped when it is missing).")
    var xdpFilter = XDPFilterPeer.defaultPath

    @Option(help: "IPv6 sources banned, and as many unbanned, in the many-sources rows (each packet another source).")
    var manySources = 1_000_000

    /// Addresses of the benchmarking range 198.18.0.0/15 left after the two probes (.0.1, .0.2) and
    /// the network and broadcast-like ends: the thesis's 131,068 attackers.
    static let rangeCapacity = 131_068

    func validate() throws {
        if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if !(1...Self.rangeCapacity).contains(bans) {
            throw ValidationError("--bans must be 1...\(Self.rangeCapacity)")
        }
        if !(0...Self.rangeCapacity).contains(background) {
            throw ValidationError("--background must be 0...\(Self.rangeCapacity)")
        }
        if !(1...1_000_000).contains(exactBans) { throw ValidationError("--exact-bans must be 1...1000000") }
        if !(1...32_768).contains(prefixes) { throw ValidationError("--prefixes must be 1...32768") }
        if !(2...1_000_000).contains(listEntries) { throw ValidationError("--list-entries must be 2...1000000") }
        if !(2...1_000_000).contains(manySources) { throw ValidationError("--many-sources must be 2...1000000") }
        if !(10...131_068).contains(decisions) { throw ValidationError("--decisions must be 10...131068") }
    }

    func run() throws {
        try runSuite(options) { try measure() }
    }

    /// `name` beside --bpf-object, when one is given.
    private func sibling(_ name: String) -> String? {
        bpfObject.map { path -> String in
            let directory = (path as NSString).deletingLastPathComponent
            return (directory.isEmpty ? "." : directory) + "/" + name
        }
    }

    func measure() throws -> [Measurement] {
        let locator = BPFObjectLocator()
        let filterPath = try locator.locate(explicit: bpfObject)
        let referencePath = sibling("xdp_reference.bpf.o")
        if crowdsecOnly { return try decisionCosts(filterPath: filterPath) }
        let filter = try LoadedProgram(filterAt: filterPath, pinDirectory: nil)
        let referenceObject = try locator.locate("xdp_reference.bpf.o", explicit: referencePath)
        let reference = try LoadedProgram(objectAt: referenceObject, programName: "pc_xdp_reference")
        let maps = filter.maps!
        let peerEntries = UInt32(manySources + 65_536)
        let packets = try packetCosts(
            filter: filter, reference: reference, maps: maps,
            peer: try XDPFilterPeer.load(path: xdpFilter, entries: peerEntries))
        try maps.unban(batch: try maps.entries().map(\.address))  // the installation rounds reuse the range
        let spray = try LoadedProgram(
            objectAt: try locator.locate("xdp_spray.bpf.o", explicit: sibling("xdp_spray.bpf.o")),
            programName: "pc_xdp_spray")
        let sources = try manySourceCosts(
            filter: filter, spray: spray, peer: try XDPFilterPeer.load(path: xdpFilter, entries: peerEntries))
        // The clocks' rows drop a ban of the table's: none without one.
        let clocks =
            background == 0
            ? []
            : try clockCosts(
                objectPath: try locator.locate("xdp_clocks.bpf.o", explicit: sibling("xdp_clocks.bpf.o")))
        let networks = try networkCosts(filterPath: filterPath, referencePath: referenceObject)
        let crowdsec = try decisionCosts(filterPath: filterPath)
        return packets + sources + clocks + networks + crowdsec
            + (try banInstallationRates(
                objectPath: filterPath, bans: bans, batchSize: batchSize,
                rounds: options.rounds, suite: "xdp"))
    }

    /// ns/packet of the filter vs the parse-only reference and vs xdp-filter (`peer`, filled with
    /// the same addresses) for sources banned for good, banned for an hour, and unbanned, of both
    /// families, the three programs in rotating order; then two CPUs at once on one banned source.
    private func packetCosts(
        filter: LoadedProgram, reference: LoadedProgram, maps: BanMaps, peer: XDPFilterPeer?
    )
        throws -> [Measurement]
    {
        // A realistic table: the thesis's attacker count already banned, in both maps.
        let end = BanExpiry.after(seconds: 3600)!
        let crowd = (0..<background).flatMap { index -> [BanRequest] in
            [BanRequest(benchmarkIPv4(index), end), BanRequest(benchmarkIPv6(group: 1, index: index), end)]
        }
        for start in stride(from: 0, to: crowd.count, by: 8192) {
            try maps.ban(batch: Array(crowd[start..<min(start + 8192, crowd.count)]))
        }
        let server4 = IPAddress("198.18.255.254")!
        let server6 = IPAddress("2001:2::fffe")!
        let banned4 = IPAddress("198.18.0.1")!
        let banned6 = IPAddress("2001:2::1")!
        try maps.insert(BanRequest(banned4, .permanent))
        try maps.insert(BanRequest(banned6, .permanent))
        try peer?.block(crowd.map(\.address) + [banned4, banned6])
        // The timed rows' sources are the crowd's first (banned for an hour, as a daemon bans).
        let timed4 = benchmarkIPv4(0)
        let timed6 = benchmarkIPv6(group: 1, index: 0)
        let cases: [(String, [UInt8], XDPVerdict)] = [
            ("IPv4 banned", TestFrame.udp(from: banned4, to: server4), .drop),
            ("IPv4 banned, ends in 1 h", TestFrame.udp(from: timed4, to: server4), .drop),
            ("IPv4 unbanned", TestFrame.udp(from: IPAddress("198.18.0.2")!, to: server4), .pass),
            ("IPv6 banned", TestFrame.udp(from: banned6, to: server6), .drop),
            ("IPv6 banned, ends in 1 h", TestFrame.udp(from: timed6, to: server6), .drop),
            ("IPv6 unbanned", TestFrame.udp(from: IPAddress("2001:2::2")!, to: server6), .pass),
        ]
        var results: [Measurement] = []
        for (name, frame, expected) in cases {
            var programs: [(LoadedProgram, XDPVerdict?)] = [(filter, expected), (reference, nil)]
            if let peer { programs.append((peer.program, expected)) }
            let times = try rotatingRuns(name, frame, programs)
            results.append(
                Measurement(
                    suite: "xdp", name: "filter \(name)", unit: "ns/packet", value: median(times[0]),
                    reference: "parse-only program", referenceValue: median(times[1]), rounds: options.rounds))
            if peer != nil {
                results.append(
                    Measurement(
                        suite: "xdp", name: "filter \(name)", unit: "ns/packet", value: median(times[0]),
                        reference: "xdp-filter", referenceValue: median(times[2]), rounds: options.rounds,
                        ratio: median(zip(times[0], times[2]).map { $0 / max($1, 1) })))
            }
        }
        // The clock's cost alone: one source, its ban rewritten for good or for an hour before each run
        // (the order alternating), so that nothing but the end differs.
        for (family, address, frame) in [("IPv4", banned4, cases[0].1), ("IPv6", banned6, cases[3].1)] {
            var timed: [Double] = []
            var permanent: [Double] = []
            for round in 0..<options.rounds {
                for step in 0..<2 {
                    let withEnd = (round + step) % 2 == 0
                    try maps.insert(BanRequest(address, withEnd ? end : .permanent))
                    let run = try filter.testRun(frame: frame, repetitions: repetitions)
                    guard run.verdict == .drop else {
                        throw MeasurementError(description: "\(family) \(address): \(run.verdict), expected XDP_DROP")
                    }
                    if withEnd {
                        timed.append(Double(run.averageNanoseconds))
                    } else {
                        permanent.append(Double(run.averageNanoseconds))
                    }
                }
            }
            try maps.insert(BanRequest(address, .permanent))
            results.append(
                Measurement(
                    suite: "xdp", name: "filter \(family) banned, ends in 1 h, one source", unit: "ns/packet",
                    value: median(timed), reference: "the same source banned for good",
                    referenceValue: median(permanent), rounds: options.rounds,
                    ratio: median(zip(timed, permanent).map { $0 / max($1, 1) })))
        }
        let twoCPUCases = cases.filter { $0.0.hasSuffix("ends in 1 h") }
        return results + (try twoCPUCosts(twoCPUCases, filter: filter, peer: peer))
    }

}

extension XDPSuite {
    /// `options.rounds` test runs of `frame` through each program, alternating so both see the
    /// same machine conditions, each verdict checked (a nil expectation is not checked).
    /// - Returns: the kernel's mean ns per packet of each round, for the filter and the reference.
    func alternatingRuns(
        _ name: String, _ frame: [UInt8], filter: (LoadedProgram, XDPVerdict),
        reference: (LoadedProgram, XDPVerdict?)
    ) throws -> (filter: [Double], reference: [Double]) {
        let times = try rotatingRuns(name, frame, [filter, reference], rotating: false)
        return (times[0], times[1])
    }

    /// `options.rounds` test runs of `frame` through each of `programs`, round r starting with
    /// program r mod their count when `rotating` (else always in the order given), so that all see
    /// the same machine conditions; each verdict checked (a nil expectation is not checked).
    /// - Returns: per program, the kernel's mean ns per packet of each round.
    func rotatingRuns(
        _ name: String, _ frame: [UInt8], _ programs: [(LoadedProgram, XDPVerdict?)], rotating: Bool = true
    ) throws -> [[Double]] {
        var times = [[Double]](repeating: [], count: programs.count)
        for round in 0..<options.rounds {
            for step in 0..<programs.count {
                let index = rotating ? (round + step) % programs.count : step
                let (program, expected) = programs[index]
                let run = try program.testRun(frame: frame, repetitions: repetitions)
                if let expected, run.verdict != expected {
                    throw MeasurementError(
                        description: "\(name): program \(index) returned \(run.verdict), expected \(expected)")
                }
                times[index].append(Double(run.averageNanoseconds))
            }
        }
        return times
    }
}

/// The INDEXth address of 198.18.0.0/15 after 198.18.0.0-3 (the probes use .1 and .2).
func benchmarkIPv4(_ index: Int) -> IPAddress {
    precondition(index < XDPSuite.rangeCapacity, "outside 198.18.0.0/15")
    return IPAddress(ipv4NetworkOrder: UInt32(0xc612_0004 + index).bigEndian)
}

/// 2001:2:0:GROUP::INDEX (INDEX in the last 32 bits): inside the IPv6 benchmarking range.
func benchmarkIPv6(group: UInt16, index: Int) -> IPAddress {
    var bytes = in6_addr()
    withUnsafeMutableBytes(of: &bytes) { raw in
        raw.storeBytes(of: UInt16(0x2001).bigEndian, toByteOffset: 0, as: UInt16.self)
        raw.storeBytes(of: UInt16(0x0002).bigEndian, toByteOffset: 2, as: UInt16.self)
        raw.storeBytes(of: group.bigEndian, toByteOffset: 6, as: UInt16.self)
        raw.storeBytes(of: UInt32(truncatingIfNeeded: index).bigEndian, toByteOffset: 12, as: UInt32.self)
    }
    return IPAddress(ipv6Bytes: bytes)
}
