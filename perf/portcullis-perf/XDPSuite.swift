// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// Suite `xdp`: the filter's cost per packet (kernel test-run) next to a program that only parses,
/// and ban installation with one map update per address next to batched updates.
struct XDPSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdp",
        abstract:
            "XDP filter ns/packet vs a parse-only program, and with networks loaded vs the exact-only filter; list "
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

    @Option(help: "Path of portcullis.bpf.o (xdp_reference.bpf.o is expected beside it).")
    var bpfObject: String?

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
        if !(10...131_068).contains(decisions) { throw ValidationError("--decisions must be 10...131068") }
    }

    func run() throws {
        try runSuite(options) { try measure() }
    }

    func measure() throws -> [Measurement] {
        let locator = BPFObjectLocator()
        let filterPath = try locator.locate(explicit: bpfObject)
        let referencePath = bpfObject.map { path -> String in
            let directory = (path as NSString).deletingLastPathComponent
            return (directory.isEmpty ? "." : directory) + "/xdp_reference.bpf.o"
        }
        if crowdsecOnly { return try decisionCosts(filterPath: filterPath) }
        let filter = try LoadedProgram(filterAt: filterPath, pinDirectory: nil)
        let referenceObject = try locator.locate("xdp_reference.bpf.o", explicit: referencePath)
        let reference = try LoadedProgram(objectAt: referenceObject, programName: "pc_xdp_reference")
        let maps = filter.maps!
        let packets = try packetCosts(filter: filter, reference: reference, maps: maps)
        try maps.unban(batch: try maps.entries().map(\.address))  // the installation rounds reuse the range
        let networks = try networkCosts(filterPath: filterPath, referencePath: referenceObject)
        let crowdsec = try decisionCosts(filterPath: filterPath)
        return packets + networks + crowdsec
            + (try banInstallationRates(
                objectPath: filterPath, bans: bans, batchSize: batchSize,
                rounds: options.rounds, suite: "xdp"))
    }

    /// ns/packet of the filter vs the reference for banned and unbanned sources of both families.
    private func packetCosts(filter: LoadedProgram, reference: LoadedProgram, maps: BanMaps) throws -> [Measurement] {
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
        let cases: [(String, [UInt8], XDPVerdict)] = [
            ("IPv4 banned", TestFrame.udp(from: banned4, to: server4), .drop),
            ("IPv4 unbanned", TestFrame.udp(from: IPAddress("198.18.0.2")!, to: server4), .pass),
            ("IPv6 banned", TestFrame.udp(from: banned6, to: server6), .drop),
            ("IPv6 unbanned", TestFrame.udp(from: IPAddress("2001:2::2")!, to: server6), .pass),
        ]
        return try cases.map { name, frame, expected in
            let (filterTimes, referenceTimes) = try alternatingRuns(
                name, frame, filter: (filter, expected), reference: (reference, nil))
            return Measurement(
                suite: "xdp", name: "filter \(name)", unit: "ns/packet", value: median(filterTimes),
                reference: "parse-only program", referenceValue: median(referenceTimes),
                rounds: options.rounds)
        }
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
        var times: [Double] = []
        var referenceTimes: [Double] = []
        for _ in 0..<options.rounds {
            let run = try filter.0.testRun(frame: frame, repetitions: repetitions)
            guard run.verdict == filter.1 else {
                throw MeasurementError(description: "\(name): the filter returned \(run.verdict), expected \(filter.1)")
            }
            times.append(Double(run.averageNanoseconds))
            let referenceRun = try reference.0.testRun(frame: frame, repetitions: repetitions)
            if let expected = reference.1, referenceRun.verdict != expected {
                throw MeasurementError(
                    description: "\(name): the reference returned \(referenceRun.verdict), expected \(expected)")
            }
            referenceTimes.append(Double(referenceRun.averageNanoseconds))
        }
        return (times, referenceTimes)
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
