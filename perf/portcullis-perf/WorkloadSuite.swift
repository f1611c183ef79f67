// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import LogTransport
import PortcullisCore
@_spi(Testing) import PortcullisDaemon
import PortcullisSystem
@_spi(Testing) import XDPFirewall

/// Suite `workload`: the workload fail2ban and CrowdSec were measured on (1,000,000 lines of the
/// built-in format from 131,068 clients, 65,534 IPv4 and 65,534 IPv6, each offending at least
/// `threshold` times, shuffled), appended to a tailed file in one go and read by the daemon with
/// real maps and a ban log. Each round runs it with bans installed and with installation switched
/// off, and times a bare `bpf_map_update_batch` of the same keys: what a ban costs beyond the line.
struct WorkloadSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workload",
        abstract:
            "1M lines, 131,068 clients, file transport, real maps: CPU per line with bans vs without; µs per ban vs a bare batched update."
    )

    @OptionGroup var options: HarnessOptions

    @Option(help: "Lines of the workload.")
    var lines = 1_000_000

    @Option(help: "Clients per family (IPv4 from 198.18.0.1, IPv6 from 2001:2::1; at most 65,534).")
    var clients = 65_534

    @Option(help: "Ban threshold (every client offends at least this often).")
    var threshold: UInt32 = 3

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Directory for the log file and the ban log.")
    var scratch = "/tmp"

    @Option(help: "Filters to run: builtin, failregex or both (comma-separated).")
    var filters = "builtin,failregex"

    func validate() throws {
        if !(1...65_534).contains(clients) { throw ValidationError("--clients must be 1...65534") }
        if threshold < 1 { throw ValidationError("--threshold must be at least 1") }
        if lines < 2 * clients * Int(threshold) {
            throw ValidationError("--lines must be at least 2 × --clients × --threshold")
        }
        if filterList.isEmpty { throw ValidationError("--filters: builtin, failregex or both") }
    }

    var filterList: [String] {
        filters.split(separator: ",").map(String.init).filter { ["builtin", "failregex"].contains($0) }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    static let failRegex = "^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} client <HOST> exceeded request rate limit$"

    /// The client of `index`: IPv4 first, then IPv6.
    func address(_ index: Int) -> IPAddress {
        if index < clients { return IPAddress(ipv4NetworkOrder: UInt32(0xC612_0001 + index).bigEndian) }
        return IPAddress("2001:2::\(String(index - clients + 1, radix: 16))")!
    }

    /// Where a banned address's index is: the inverse of `address`.
    func index(of address: IPAddress) -> Int? {
        if address.isIPv4 {
            let value = Int(UInt32(bigEndian: address.ipv4NetworkOrder)) - 0xC612_0001
            return (0..<clients).contains(value) ? value : nil
        }
        // The last two bytes: the low 16 bits of `low` read in network order.
        let last = Int(UInt16(bigEndian: UInt16(truncatingIfNeeded: address.low >> 48))) - 1
        return (0..<clients).contains(last) ? clients + last : nil
    }

    /// The file's text: every client `threshold` times, the rest of the lines from clients drawn
    /// at random, shuffled (a fixed seed: the same file every run).
    func workload() -> [UInt8] {
        var generator = SplitMix64(seed: 0x5EED_F00D)
        let total = 2 * clients
        var order: [Int32] = []
        order.reserveCapacity(lines)
        for index in 0..<total { for _ in 0..<threshold { order.append(Int32(index)) } }
        while order.count < lines { order.append(Int32(generator.next() % UInt64(total))) }
        order.shuffle(using: &generator)
        let stamp = UTCTime(secondsSinceEpoch: 1_795_718_566)
        var text: [UInt8] = []
        text.reserveCapacity(lines * 72)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: OffenceLine.maximumLength + 1, alignment: 8)
        defer { buffer.deallocate() }
        let addresses = (0..<total).map(address)
        for index in order {
            let length = OffenceLine.write(time: stamp, address: addresses[Int(index)], into: buffer)
            buffer.storeBytes(of: UInt8(ascii: "\n"), toByteOffset: length, as: UInt8.self)
            text.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: length + 1))
        }
        return text
    }

    struct Run {
        var seconds: Double
        var cpuNanoseconds: Double
        var bans: Int
    }

    func measure() throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: try BPFObjectLocator().locate(explicit: bpfObject), pinDirectory: nil)
        let maps = filter.maps!
        let text = workload()
        let total = 2 * clients
        var results: [Measurement] = []
        var bare: [Double] = []  // ns per key
        for name in filterList {
            var on: [Run] = []
            var off: [Run] = []
            for round in 0..<options.rounds {
                // Alternating which goes first: a drift of the machine's speed favours neither.
                for installs in round % 2 == 0 ? [true, false] : [false, true] {
                    let run = try runWorkload(text, maps: maps, failRegex: name == "failregex", installs: installs)
                    if installs { on.append(run) } else { off.append(run) }
                }
                bare.append(try bareBatchNanoseconds(maps: maps, total: total))
            }
            let label = name == "failregex" ? "--failregex" : "built-in format"
            let count = Double(lines)
            let onCPU = on.map { $0.cpuNanoseconds / count }
            let offCPU = off.map { $0.cpuNanoseconds / count }
            func add(_ row: String, _ unit: String, _ value: [Double], _ reference: String, _ referenceValue: [Double])
            {
                results.append(
                    Measurement(
                        suite: "workload", name: row, unit: unit, value: median(value), reference: reference,
                        referenceValue: median(referenceValue), rounds: options.rounds,
                        ratio: median(zip(value, referenceValue).map { $0 / $1 })))
            }
            add(
                "\(label), \(total) bans: lines/s", "lines/s", on.map { count / $0.seconds }, "installation off",
                off.map { count / $0.seconds })
            add("\(label), \(total) bans: CPU per line", "ns/line", onCPU, "installation off", offCPU)
            let banCost = zip(on, off).map { ($0.cpuNanoseconds - $1.cpuNanoseconds) / Double(total) }
            add(
                "\(label): CPU per ban (with bans - without)", "ns/ban", banCost,
                "bare bpf_map_update_batch, per key", Array(bare.suffix(options.rounds)))
            if name == filterList.last {
                results += try listingRows(maps: maps, total: total)
            }
            let worst = on.map(\.bans).min()!
            results.append(
                Measurement(
                    suite: "workload", name: "\(label): addresses banned exactly once (worst round)", unit: "bans",
                    value: Double(worst), reference: "clients", referenceValue: Double(total), rounds: options.rounds))
        }
        return results
    }

    nonisolated(unsafe) private static var runNumber = 0

    /// One run: a daemon tailing a fresh file; the whole workload appended in one `write`; done
    /// when every line is read and (with installation) every client banned. The CPU is the
    /// process's from the append to the daemon's stop (which writes out the ban log) less this
    /// thread's (which appends and waits).
    private func runWorkload(_ text: [UInt8], maps: BanMaps, failRegex: Bool, installs: Bool) throws -> Run {
        Self.runNumber += 1
        let directory = scratch + "/pcwork-\(getpid())-\(Self.runNumber)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try maps.unban(batch: try maps.entries().map(\.address))
        var transport = TransportConfiguration(kind: .file)
        transport.file.path = directory + "/offences.log"
        let created = open(transport.file.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard created >= 0 else { throw MeasurementError(description: "create \(transport.file.path): errno \(errno)") }
        defer { close(created) }
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = threshold
        configuration.banTime = 3600
        configuration.allowlist = try Allowlist()
        configuration.protectHost = false
        if failRegex { configuration.failRegexes = [Self.failRegex] }
        let cpuCount = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        configuration.cpus = cpuCount >= 2 ? [1] : []
        let total = 2 * clients
        let counts = UnsafeMutablePointer<UInt8>.allocate(capacity: total)
        counts.initialize(repeating: 0, count: total)
        defer { counts.deallocate() }
        nonisolated(unsafe) let bannedCounts = counts
        let suite = self
        let observer = BanTimes { event in
            for address in event.addresses {
                if let index = suite.index(of: address) { bannedCounts[index] &+= 1 }
            }
        }
        let log = try BanLog(path: directory + "/bans.log")
        let daemon = try Daemon(configuration: configuration, maps: maps, publishers: [log, observer])
        daemon.installsBans = installs
        try daemon.start()
        if cpuCount >= 2 { try? SystemThread.pinCurrent(to: 0) }
        let startCPU = SystemClock.processCPUNanoseconds()
        let ownStart = SystemClock.threadCPUNanoseconds()
        let start = SystemClock.monotonicNanoseconds()
        var written = 0
        while written < text.count {
            let result = text.withUnsafeBytes { write(created, $0.baseAddress! + written, $0.count - written) }
            guard result > 0 else { throw MeasurementError(description: "append the workload: errno \(errno)") }
            written += result
        }
        let deadline = start + 300_000_000_000
        func finished() -> Bool {
            let status = daemon.status.total
            return status.lines >= UInt64(lines) && (!installs || status.bans >= UInt64(total))
        }
        while !finished() && SystemClock.monotonicNanoseconds() < deadline { SystemClock.sleep(nanoseconds: 1_000_000) }
        let end = SystemClock.monotonicNanoseconds()
        // After the stop, which flushes the ban log: its last lines are counted too.
        daemon.stop()
        let cpu = SystemClock.processCPUNanoseconds() - startCPU - (SystemClock.threadCPUNanoseconds() - ownStart)
        let status = daemon.status.total
        guard status.lines == UInt64(lines) else {
            throw MeasurementError(description: "the daemon read \(status.lines) of \(lines) lines")
        }
        let once = (0..<total).filter { counts[$0] == 1 }.count
        if installs && once != total {
            let twice = (0..<total).filter { counts[$0] > 1 }.count
            throw MeasurementError(
                description: "\(total - once) clients not banned exactly once (\(twice) more than once)")
        }
        return Run(seconds: Double(end - start) / 1e9, cpuNanoseconds: Double(cpu), bans: installs ? once : 0)
    }

    /// `portcullis list --json`'s listing (`writeJSONListing`, to /dev/null) of the workload's
    /// 131,068 bans against a bare batched dump of the same maps, alternating, `rounds` times.
    private func listingRows(maps: BanMaps, total: Int) throws -> [Measurement] {
        try maps.unban(batch: try maps.entries().map(\.address))
        let end = BanExpiry.after(seconds: 3600)!
        try maps.ban(batch: (0..<total).map { BanRequest(address($0), end) })
        defer { _ = try? maps.unban(batch: (0..<total).map(address)) }
        let rows = try maps.entries().count
        guard rows == total else { throw MeasurementError(description: "the maps hold \(rows) bans, not \(total)") }
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(null) }
        var listing: [Double] = []
        var dump: [Double] = []
        var former: [Double] = []
        for _ in 0..<options.rounds {
            let formerStart = SystemClock.monotonicNanoseconds()
            // The rows as `portcullis list --json` encoded them before it streamed.
            let text = JSONOutput.line(try maps.listing())
            _ = text.utf8.withContiguousStorageIfAvailable { write(null, $0.baseAddress, $0.count) }
            former.append(Double(SystemClock.monotonicNanoseconds() - formerStart) / 1e6)
            var start = SystemClock.monotonicNanoseconds()
            let written = try maps.writeJSONListing(to: null)
            listing.append(Double(SystemClock.monotonicNanoseconds() - start) / 1e6)
            start = SystemClock.monotonicNanoseconds()
            let read = try maps.bareBatchedDump()
            dump.append(Double(SystemClock.monotonicNanoseconds() - start) / 1e6)
            guard written == total && read == total else {
                throw MeasurementError(description: "listed \(written), dumped \(read) of \(total) bans")
            }
        }
        return [
            Measurement(
                suite: "workload", name: "list --json, \(total) bans (streamed to /dev/null)", unit: "ms",
                value: median(listing), reference: "bare bpf_map_lookup_batch dump", referenceValue: median(dump),
                rounds: options.rounds, ratio: median(zip(listing, dump).map { $0 / $1 })),
            Measurement(
                suite: "workload", name: "list --json, \(total) bans (streamed to /dev/null)", unit: "ms",
                value: median(listing), reference: "former: listing() + JSONEncoder", referenceValue: median(former),
                rounds: options.rounds, ratio: median(zip(listing, former).map { $0 / $1 })),
        ]
    }

    /// ns per key of one `bpf_map_update_batch` per family of the same keys, into empty maps.
    private func bareBatchNanoseconds(maps: BanMaps, total: Int) throws -> Double {
        try maps.unban(batch: try maps.entries().map(\.address))
        let end = BanExpiry.after(seconds: 3600)!
        let requests = (0..<total).map { BanRequest(address($0), end) }
        let start = SystemClock.threadCPUNanoseconds()
        try maps.ban(batch: requests)
        let elapsed = SystemClock.threadCPUNanoseconds() - start
        try maps.unban(batch: requests.map(\.address))
        return Double(elapsed) / Double(total)
    }
}

/// A small seeded generator: the workload is the same file in every run.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
