// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import XDPFirewall

/// Suite `idle`: the daemon's CPU while nothing comes, holding many bans (found in the maps at
/// start and resumed, as after a restart) against the same daemon holding none, each over
/// `--seconds`: what its expiry thread, its sweep and its idle workers cost.
struct IdleSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "idle",
        abstract: "The daemon's CPU while idle holding 1,000,000 bans vs holding none, over a minute each."
    )

    @OptionGroup var options: HarnessOptions

    @Option(help: "Bans held: 65,534 IPv4 from 198.18.0.1, the rest IPv6 in 2001:2::/48 (at most 1,048,576).")
    var bans = 1_000_000

    @Option(help: "Seconds each idle daemon is watched.")
    var seconds = 60.0

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Directory for the idle log file.")
    var scratch = "/tmp"

    func validate() throws {
        if !(1...1_048_576).contains(bans) { throw ValidationError("--bans must be 1...1048576") }
        if seconds <= 0 { throw ValidationError("--seconds must be above 0") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    func address(_ index: Int) -> IPAddress {
        if index < 65_534 { return IPAddress(ipv4NetworkOrder: UInt32(0xC612_0001 + index).bigEndian) }
        let rest = index - 65_534 + 1
        return IPAddress("2001:2::\(String(rest >> 16, radix: 16)):\(String(rest & 0xffff, radix: 16))")!
    }

    func measure() throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: try BPFObjectLocator().locate(explicit: bpfObject), pinDirectory: nil)
        let maps = filter.maps!
        let end = BanExpiry.after(seconds: 86_400)!
        let requests = (0..<bans).map { BanRequest(address($0), end) }
        var held: [Double] = []
        var none: [Double] = []
        for round in 0..<options.rounds {
            for holding in round % 2 == 0 ? [true, false] : [false, true] {
                try maps.unban(batch: try maps.entries().map(\.address))
                if holding { try maps.ban(batch: requests) }
                let cpu = try idleCPU(maps: maps)
                if holding { held.append(cpu) } else { none.append(cpu) }
            }
        }
        try maps.unban(batch: try maps.entries().map(\.address))
        return [
            Measurement(
                suite: "idle", name: "idle daemon holding \(bans) bans, \(Int(seconds)) s: CPU", unit: "ms/s",
                value: median(held), reference: "holding none", referenceValue: median(none), rounds: options.rounds,
                ratio: median(zip(held, none).map { $0 / max($1, 1e-6) }))
        ]
    }

    nonisolated(unsafe) private static var runNumber = 0

    /// ms of the process's CPU per second while a daemon tailing a file nobody writes runs (after
    /// its start, which resumes the bans, has finished), less this thread's.
    private func idleCPU(maps: BanMaps) throws -> Double {
        Self.runNumber += 1
        let directory = scratch + "/pcidle-\(getpid())-\(Self.runNumber)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var transport = TransportConfiguration(kind: .file)
        transport.file.path = directory + "/offences.log"
        let created = open(transport.file.path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o640)
        guard created >= 0 else { throw MeasurementError(description: "create \(transport.file.path): errno \(errno)") }
        close(created)
        var configuration = DaemonConfiguration(transport: transport)
        configuration.banTime = 3600
        configuration.allowlist = try Allowlist()
        configuration.protectHost = false
        let daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        SystemClock.sleep(nanoseconds: 1_000_000_000)  // the start's work is not idle
        let startCPU = SystemClock.processCPUNanoseconds()
        let own = SystemClock.threadCPUNanoseconds()
        let start = SystemClock.monotonicNanoseconds()
        SystemClock.sleep(nanoseconds: UInt64(seconds * 1e9))
        let elapsed = Double(SystemClock.monotonicNanoseconds() - start) / 1e9
        let cpu = SystemClock.processCPUNanoseconds() - startCPU - (SystemClock.threadCPUNanoseconds() - own)
        daemon.stop()
        return Double(cpu) / 1e6 / elapsed
    }
}
