// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import OffenceTable
import PortcullisCore
import PortcullisSystem
import CPortcullis
import Foundation
import LogTransport
import PortcullisDaemon
import XDPFirewall

/// Suite `pipeline`: offence lines from many clients through a transport into the daemon's
/// workers, which ban into real BPF maps: throughput, CPU per line, exact bans, line-to-ban latency.
struct PipelineSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract:
            "Lines through shm/socket into portcullisd's workers with real BPF maps: lines/s, CPU ns/line, bans, latency."
    )

    @OptionGroup var options: HarnessOptions

    @Option(help: "Lines per throughput run.")
    var lines = 10_000_000

    @Option(help: "Distinct clients (from 198.18.0.4 on; at most 131,068).")
    var clients = 131_068

    @Option(help: "Ban threshold.")
    var threshold: UInt32 = 3

    @Option(help: "Ban workers.")
    var workers = 1

    @Option(help: "Lines/s of the paced latency run, in which each client's threshold lines come in a row.")
    var pacedRate = 300_000

    @Option(help: "Clients of the paced latency run.")
    var latencyClients = 30_000

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Directory for the socket transport's sockets.")
    var scratch = "/tmp"

    func validate() throws {
        if !(1...131_068).contains(clients) { throw ValidationError("--clients must be 1...131068") }
        if lines < clients { throw ValidationError("--lines must be at least --clients") }
        if threshold < 1 || workers < 1 || pacedRate < 1000 {
            throw ValidationError("--threshold and --workers must be at least 1, --paced-rate at least 1000")
        }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    /// Figures of one run.
    struct Run {
        var linesPerSecond: Double
        var cpuPerLine: Double
        var bans: UInt64
        var expectedBans: UInt64
        var latencies: [Double]  // microseconds, one per banned client
    }

    func measure() throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: try BPFObjectLocator().locate(explicit: bpfObject), pinDirectory: nil)
        let maps = filter.maps!
        let batches = Self.batches(clients: clients, repeats: 1)
        let latencyBatches = Self.batches(clients: min(clients, latencyClients), repeats: Int(threshold))
        var results: [Measurement] = []
        var reference: [Double] = []
        for _ in 0..<options.rounds { reference.append(engineAloneNanosecondsPerLine(batches)) }
        let engineAlone = median(reference)
        for kind in [TransportKind.shm, .socket] {
            var saturated: [Run] = []
            var paced: [Run] = []
            for _ in 0..<options.rounds {
                saturated.append(
                    try runPipeline(
                        kind, maps: maps, batches: batches, clients: clients, repeats: 1,
                        totalLines: lines, rate: nil))
                paced.append(
                    try runPipeline(
                        kind, maps: maps, batches: latencyBatches,
                        clients: min(clients, latencyClients), repeats: Int(threshold),
                        totalLines: min(clients, latencyClients) * Int(threshold), rate: pacedRate))
            }
            let name = "pipeline \(kind.rawValue), \(workers) worker\(workers == 1 ? "" : "s")"
            func add(_ row: String, _ unit: String, _ value: Double, _ referenceName: String, _ referenceValue: Double)
            {
                results.append(
                    Measurement(
                        suite: "pipeline", name: row, unit: unit, value: value, reference: referenceName,
                        referenceValue: referenceValue, rounds: options.rounds))
            }
            add(
                name, "lines/s", median(saturated.map(\.linesPerSecond)), "scan + count alone, 1 thread",
                1e9 / engineAlone)
            add(
                "\(name): CPU per line", "ns/line", median(saturated.map(\.cpuPerLine)),
                "scan + count alone, 1 thread", engineAlone)
            let worst = saturated.min { $0.bans < $1.bans }!
            add(
                "\(name): bans installed (worst round)", "bans", Double(worst.bans),
                "clients that crossed the threshold",
                Double(worst.expectedBans))
            let pacedLatency = paced.flatMap(\.latencies)
            let saturatedLatency = saturated.flatMap(\.latencies)
            add(
                "\(name): line-to-ban p99, \(pacedRate) lines/s", "µs", percentile(pacedLatency, 0.99),
                "p50, same runs", percentile(pacedLatency, 0.5))
            add(
                "\(name): line-to-ban p99, \(clients) clients crossing in one burst", "µs",
                percentile(saturatedLatency, 0.99), "p50, same runs", percentile(saturatedLatency, 0.5))
        }
        return results
    }

    /// The lines of one round, in batches of 256: each client's line `repeats` times in a row, for
    /// every client in turn.
    static func batches(clients: Int, repeats: Int) -> [LineBatch] {
        var batches: [LineBatch] = []
        var current = LineBatch(byteCapacity: 256 * 80, lineCapacity: 256)
        let stamp = UTCTime(secondsSinceEpoch: 1_795_718_566)  // 2026-11-26 18:42:46
        for index in 0..<clients {
            let value = 0xC612_0004 + index
            let line = OffenceLine.text(time: stamp, address: IPAddress(ipv4NetworkOrder: UInt32(value).bigEndian))
            for _ in 0..<repeats {
                if current.isFull {
                    batches.append(current)
                    current = LineBatch(byteCapacity: 256 * 80, lineCapacity: 256)
                }
                current.append(line)
            }
        }
        batches.append(current)
        return batches
    }

    /// ns per line of the scanner and the offence table in one thread, no transport, no maps.
    private func engineAloneNanosecondsPerLine(_ batches: [LineBatch]) -> Double {
        let table = try! OffenceTable(bins: 6_000_011, threshold: threshold)
        let scanner = LineScanner()
        var crossings = 0
        var done = 0
        let start = SystemClock.monotonicSeconds()
        while done < lines {
            for batch in batches where done < lines {
                batch.forEachLine { line in
                    if case .offence(let key) = scanner.scan(line), table.record(key, now: 1) == .crossed {
                        crossings += 1
                    }
                }
                done += batch.count
            }
        }
        blackHole(UInt64(crossings))
        return (SystemClock.monotonicSeconds() - start) * 1e9 / Double(done)
    }

    nonisolated(unsafe) private static var runNumber = 0

    /// One run: a daemon reading `kind`, a writer thread publishing rounds of lines (paced at `rate`
    /// lines/s if given) until `totalLines`; then the figures.
    /// - Parameters:
    ///   - clients: the clients the batches cycle through; each appears `repeats` times in a row.
    private func runPipeline(
        _ kind: TransportKind, maps: BanMaps, batches: [LineBatch], clients: Int, repeats: Int,
        totalLines: Int, rate: Int?
    ) throws -> Run {
        Self.runNumber += 1
        let tag = "pcpipe-\(getpid())-\(Self.runNumber)"
        var transport = TransportConfiguration(kind: kind)
        transport.shm.name = "/" + tag
        transport.shm.rings = 1
        transport.socket.directory = scratch + "/" + tag
        defer {
            shm_unlink(transport.shm.name)
            try? FileManager.default.removeItem(atPath: transport.socket.directory)
        }
        try maps.unban(batch: try maps.entries().map(\.address))
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = threshold
        configuration.banTime = 3600
        configuration.workers = workers
        let cpuCount = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        configuration.cpus = cpuCount >= 2 ? (0..<workers).map { 1 + $0 % (cpuCount - 1) } : []
        configuration.allowlist = try Allowlist()
        let published = UnsafeMutablePointer<UInt64>.allocate(capacity: clients)
        let banned = UnsafeMutablePointer<UInt64>.allocate(capacity: clients)
        published.initialize(repeating: 0, count: clients)
        banned.initialize(repeating: 0, count: clients)
        defer {
            published.deallocate()
            banned.deallocate()
        }
        nonisolated(unsafe) let bannedTimes = banned
        let observer = BanTimes { event in
            for address in event.addresses {
                bannedTimes[Int(UInt32(bigEndian: address.ipv4NetworkOrder)) - 0xC612_0004] = event.monotonicNanoseconds
            }
        }
        let daemon = try Daemon(configuration: configuration, maps: maps, publishers: [observer])
        try daemon.start()
        nonisolated(unsafe) let writer = try transport.makeWriter()
        nonisolated(unsafe) let batches = batches
        nonisolated(unsafe) let publishedTimes = published
        let threshold = Int(self.threshold)
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: Error?
        nonisolated(unsafe) var linesSent = 0  // whole batches: a little over totalLines
        let start = SystemClock.monotonicNanoseconds()
        let thread = Thread {
            if cpuCount >= 2 { try? SystemThread.pinCurrent(to: 0) }
            var sent = 0
            var round = 0
            let writerStart = SystemClock.monotonicNanoseconds()
            do {
                while sent < totalLines {
                    for batch in batches where sent < totalLines {
                        let time = SystemClock.monotonicNanoseconds()
                        // Note when each client's threshold-th line is published (the ban's cause).
                        for offset in 0..<batch.count {
                            let position = sent + offset  // line number overall
                            let inRound = position % (clients * repeats)
                            let client = inRound / repeats
                            let occurrence = (position / (clients * repeats)) * repeats + inRound % repeats + 1
                            if occurrence == threshold { publishedTimes[client] = time }
                        }
                        _ = try writer.publish(batch)
                        sent += batch.count
                        if let rate {
                            let due = writerStart + UInt64(Double(sent) / Double(rate) * 1e9)
                            while SystemClock.monotonicNanoseconds() < due { sched_yield() }
                        }
                    }
                    round += 1
                }
            } catch {
                failure = error
            }
            linesSent = sent
            done.signal()
        }
        thread.start()
        done.wait()
        writer.close()
        if let failure { throw MeasurementError(description: "writer: \(failure)") }
        let totalLines = linesSent
        let deadline = SystemClock.monotonicNanoseconds() + 120_000_000_000
        while daemon.status.total.lines < UInt64(totalLines) && SystemClock.monotonicNanoseconds() < deadline {
            SystemClock.sleep(nanoseconds: 2_000_000)
        }
        let end = SystemClock.monotonicNanoseconds()
        daemon.stop()
        let status = daemon.status
        let total = status.total
        guard total.lines == UInt64(totalLines) else {
            throw MeasurementError(description: "\(kind): the daemon read \(total.lines) of \(totalLines) lines")
        }
        var perClient = [Int](repeating: 0, count: clients)
        for position in 0..<totalLines { perClient[(position % (clients * repeats)) / repeats] += 1 }
        let expected = UInt64(perClient.filter { $0 >= threshold }.count)
        var latencies: [Double] = []
        for index in 0..<clients where banned[index] != 0 && published[index] != 0 {
            latencies.append(Double(banned[index] &- published[index]) / 1000)
        }
        return Run(
            linesPerSecond: Double(totalLines) / (Double(end - start) / 1e9),
            cpuPerLine: Double(total.cpuNanoseconds + status.expiryCPUNanoseconds) / Double(totalLines),
            bans: total.bans, expectedBans: expected, latencies: latencies)
    }
}

/// The `fraction` percentile (nearest rank) of `values`; 0 when empty.
func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
}

/// Records when each client was banned: the line-to-ban latency's end.
final class BanTimes: BanPublisher, @unchecked Sendable {
    private let record: (BanEvent) -> Void

    init(_ record: @escaping (BanEvent) -> Void) {
        self.record = record
    }

    func publish(_ event: BanEvent) {
        if event.kind == .ban { record(event) }
    }
}
