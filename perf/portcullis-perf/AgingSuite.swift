// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import XDPFirewall

/// Suite `aging`: a flood of one-off sources through the daemon, with attackers among them. Every
/// attacker must be banned however many sources the flood brings (the offence table ages), and
/// the table's use stays within its bins. Reference: the same lines with the flood's sources
/// allowlisted, so that they are scanned and parsed but never reach the table.
struct AgingSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aging",
        abstract: "One-off sources flooding the offence table, attackers among them: all banned? lines/s, CPU/line.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "One-off sources in the flood (each one line; half IPv4, half IPv6).")
    var sources = 100_000_000

    @Option(help: "Attackers among them (from 198.18.0.1 on), each 3 lines, 100 lines of the flood apart.")
    var attackers = 10_000

    @Option(help: "Bins of the offence table.")
    var tableBins = 6_000_011

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    func validate() throws {
        if attackers < 1 || attackers > 65_534 { throw ValidationError("--attackers must be 1...65534") }
        if sources < attackers * 400 { throw ValidationError("--sources must be at least 400 per attacker") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    struct Run {
        var linesPerSecond: Double
        var cpuPerLine: Double
        var bans: UInt64
        var occupied: UInt64
        var evicted: UInt64
        var refused: UInt64
        var detail: String
    }

    func measure() throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: try BPFObjectLocator().locate(explicit: bpfObject), pinDirectory: nil)
        let maps = filter.maps!
        var flooded: [Run] = []
        var reference: [Run] = []
        for _ in 0..<options.rounds {
            flooded.append(try runFlood(maps: maps, allowFlood: false))
            reference.append(try runFlood(maps: maps, allowFlood: true))
        }
        for run in flooded where run.bans != UInt64(attackers) {
            throw MeasurementError(
                description: "aging: \(run.bans) of \(attackers) attackers banned under the flood (\(run.detail))")
        }
        var results: [Measurement] = []
        func add(_ name: String, _ unit: String, _ value: Double, _ referenceName: String, _ referenceValue: Double) {
            results.append(
                Measurement(
                    suite: "aging", name: name, unit: unit, value: value, reference: referenceName,
                    referenceValue: referenceValue, rounds: options.rounds))
        }
        let label = "\(sources) one-off sources + \(attackers) attackers, \(tableBins) bins"
        add(
            label, "lines/s", median(flooded.map(\.linesPerSecond)), "same lines, the flood allowlisted",
            median(reference.map(\.linesPerSecond)))
        add(
            label + ": CPU per line", "ns", median(flooded.map(\.cpuPerLine)), "same lines, the flood allowlisted",
            median(reference.map(\.cpuPerLine)))
        add(
            label + ": attackers banned (worst round)", "bans", Double(flooded.map(\.bans).min() ?? 0),
            "attackers", Double(attackers))
        add(
            label + ": table bins in use (most)", "bins", Double(flooded.map(\.occupied).max() ?? 0), "table bins",
            Double(tableBins))
        add(
            label + ": bins taken over from live counts", "bins", median(flooded.map { Double($0.evicted) }),
            "one-off sources", Double(sources))
        add(
            label + ": offences refused (table full)", "offences", Double(flooded.map(\.refused).max() ?? 0),
            "one-off sources", Double(sources))
        return results
    }

    nonisolated(unsafe) private static var runNumber = 0

    /// The flood's source `index`: distinct for every index (a bijective scramble), IPv4 for even
    /// indices outside 198.18.0.0/15 (the attackers) and 127.0.0.0/8, IPv6 in 2001:2:f::/48 for odd.
    static func floodSource(_ index: Int) -> IPAddress {
        let scrambled = UInt64(index / 2) &* 0x9E37_79B9_7F4A_7C15
        if index % 2 == 1 {
            return IPAddress(high: (0x2001_0002_000f_0000 | (scrambled >> 48)).bigEndian, low: scrambled.bigEndian)
        }
        var value = UInt32(truncatingIfNeeded: UInt64(index / 2) &* 0x9E37_79B1)
        if value >> 17 == 0xC612 >> 1 || value >> 24 == 127 { value ^= 0x4000_0000 }  // 198.18/15, 127/8 out
        return IPAddress(ipv4NetworkOrder: value.bigEndian)
    }

    /// The networks of `floodSource` (everything but the attackers' 198.18.0.0/15 and loopback).
    static let floodNetworks: [String] = {
        // 0.0.0.0/0 less 198.18.0.0/15: the sibling at each prefix length from 1 to 15.
        let attackers: UInt32 = 0xC612_0000
        var networks = (1...15).map { length -> String in
            let sibling = (attackers ^ (1 << (32 - UInt32(length)))) & ~((1 << (32 - UInt32(length))) - 1)
            return "\(IPAddress(ipv4NetworkOrder: sibling.bigEndian))/\(length)"
        }
        networks.append("2001:2:f::/48")
        return networks
    }()

    private func runFlood(maps: BanMaps, allowFlood: Bool) throws -> Run {
        Self.runNumber += 1
        var transport = TransportConfiguration(kind: .shm)
        transport.shm.name = "/pcaging-\(getpid())-\(Self.runNumber)"
        transport.shm.rings = 1
        defer { shm_unlink(transport.shm.name) }
        try maps.unban(batch: try maps.entries().map(\.address))
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = 3
        configuration.banTime = 3600
        configuration.tableBins = tableBins
        let cpuCount = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        configuration.cpus = cpuCount >= 2 ? [1] : []
        configuration.allowlist = try Allowlist(allowFlood ? Self.floodNetworks : [])
        let daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        let writer = try transport.makeWriter()
        defer { writer.close() }
        let start = SystemClock.monotonicNanoseconds()
        let total = try publish(to: writer)
        let deadline = SystemClock.monotonicNanoseconds() + 600_000_000_000
        while daemon.status.total.lines < UInt64(total) && SystemClock.monotonicNanoseconds() < deadline {
            SystemClock.sleep(nanoseconds: 2_000_000)
        }
        let end = SystemClock.monotonicNanoseconds()
        daemon.stop()
        let status = daemon.status
        guard status.total.lines == UInt64(total) else {
            throw MeasurementError(description: "aging: the daemon read \(status.total.lines) of \(total) lines")
        }
        return Run(
            linesPerSecond: Double(total) / (Double(end - start) / 1e9),
            cpuPerLine: Double(status.total.cpuNanoseconds) / Double(total), bans: status.total.bans,
            occupied: status.tableBins, evicted: status.tableEvicted, refused: status.total.tableFull,
            detail: status.summaryLines()[0])
    }

    /// Publishes the flood with the attackers' lines among it, formatted as it goes (on this
    /// thread, pinned to CPU 0; the worker runs on CPU 1). - Returns: lines published.
    private func publish(to writer: LogWriter) throws -> Int {
        try pinThread(toCPU: 0)
        let time = UTCTime(secondsSinceEpoch: 1_795_718_566)
        let batch = LineBatch(byteCapacity: 256 * OffenceLine.maximumLength, lineCapacity: 256)
        var published = 0
        func append(_ address: IPAddress) throws {
            if batch.isFull {
                _ = try writer.publish(batch)
                batch.removeAll()
            }
            let destination = batch.appendUninitialized(length: OffenceLine.maximumLength)!
            batch.shortenLast(to: OffenceLine.write(time: time, address: address, into: destination))
            published += 1
        }
        let perAttacker = sources / attackers
        var next = 0
        for attacker in 0..<attackers {
            let address = IPAddress(ipv4: 198, 18, UInt8((attacker + 1) >> 8), UInt8((attacker + 1) & 255))
            let end = attacker == attackers - 1 ? sources : next + perAttacker
            // The attacker's 3 lines, 100 flood lines apart, from the middle of its share on.
            let first = next + min(perAttacker / 2, perAttacker - 201)
            while next < end {
                if next == first || next == first + 100 || next == first + 200 { try append(address) }
                try append(Self.floodSource(next))
                next += 1
            }
        }
        if !batch.isEmpty { _ = try writer.publish(batch) }
        return published
    }
}
