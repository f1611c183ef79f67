// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import XDPFirewall

/// Suite `paced`: lines at an ordinary rate, one line per publish as a service logs them, over
/// each transport into the daemon's worker: the daemon's CPU per line and the worker's wake-ups
/// per second, against the same lines in one burst (the saturated cost) and against the same
/// pace without wake-up moderation (`--wake-delay 0`); and the line-to-ban latency at that pace.
struct PacedSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "paced",
        abstract:
            "Lines at 200,000/s one per publish over shm/socket/file: CPU per line and wake-ups/s vs a burst and vs no moderation; line-to-ban p50."
    )

    @OptionGroup var options: HarnessOptions

    @Option(help: "Lines per second of the paced runs.")
    var rate = 200_000

    @Option(help: "Seconds of each paced run.")
    var seconds = 3.0

    @Option(help: "Transports (comma-separated: shm, socket, file).")
    var transports = "shm,socket,file"

    @Option(help: "The daemon's --wake-delay in microseconds for the moderated runs.")
    var wakeDelay = DaemonConfiguration.defaultWakeDelayMicroseconds

    @Option(help: "Clients of the latency run (each bans after 3 lines in a row).")
    var latencyClients = 20_000

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Directory for the socket and file transports.")
    var scratch = "/tmp"

    var kinds: [TransportKind] { transports.split(separator: ",").compactMap { TransportKind(rawValue: String($0)) } }

    func validate() throws {
        if rate < 1000 || seconds <= 0 { throw ValidationError("--rate must be at least 1000, --seconds above 0") }
        if kinds.isEmpty { throw ValidationError("--transports: shm, socket, file") }
        if !(1...131_068).contains(latencyClients) { throw ValidationError("--latency-clients must be 1...131068") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    struct Run {
        var cpuPerLine: Double  // ns
        var wakeupsPerSecond: Double
        var wakeups: Double
        var latencies: [Double]  // µs
    }

    /// CPU time of one sleep of `delay` µs and its wake-up, in ns: what each wake-up costs a
    /// thread on this machine whatever it does (measured: about 50 µs in a Firecracker VM).
    static func sleepCost(delay: Int) -> Double {
        let count = 400
        let start = SystemClock.threadCPUNanoseconds()
        for _ in 0..<count { SystemClock.sleep(nanoseconds: UInt64(max(delay, 1)) * 1000) }
        return Double(SystemClock.threadCPUNanoseconds() - start) / Double(count)
    }

    func measure() throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: try BPFObjectLocator().locate(explicit: bpfObject), pinDirectory: nil)
        let maps = filter.maps!
        let lines = Int(Double(rate) * seconds)
        var results: [Measurement] = []
        for kind in kinds {
            var moderated: [Run] = []
            var unmoderated: [Run] = []
            var burst: [Run] = []
            var latency: [Run] = []
            var latencyUnmoderated: [Run] = []
            var sleeps: [Double] = []
            for _ in 0..<options.rounds {
                sleeps.append(Self.sleepCost(delay: wakeDelay))
                moderated.append(
                    try runPaced(kind, maps: maps, lines: lines, rate: rate, delay: wakeDelay, bans: false))
                unmoderated.append(try runPaced(kind, maps: maps, lines: lines, rate: rate, delay: 0, bans: false))
                burst.append(try runPaced(kind, maps: maps, lines: lines, rate: nil, delay: wakeDelay, bans: false))
                latency.append(
                    try runPaced(
                        kind, maps: maps, lines: latencyClients * 3, rate: rate, delay: wakeDelay, bans: true))
                latencyUnmoderated.append(
                    try runPaced(kind, maps: maps, lines: latencyClients * 3, rate: rate, delay: 0, bans: true))
            }
            let name = "\(kind.rawValue), \(rate) lines/s"
            func add(_ row: String, _ unit: String, _ value: [Double], _ reference: String, _ referenceValue: [Double])
            {
                results.append(
                    Measurement(
                        suite: "paced", name: row, unit: unit, value: median(value), reference: reference,
                        referenceValue: median(referenceValue), rounds: options.rounds,
                        ratio: median(zip(value, referenceValue).map { $0 / max($1, 1e-9) })))
            }
            add(
                "\(name), no bans: CPU per line", "ns/line", moderated.map(\.cpuPerLine), "the same lines in one burst",
                burst.map(\.cpuPerLine))
            add(
                "\(name), no bans: CPU per line", "ns/line", moderated.map(\.cpuPerLine), "--wake-delay 0",
                unmoderated.map(\.cpuPerLine))
            add(
                "\(name), no bans: worker wake-ups", "/s", moderated.map(\.wakeupsPerSecond), "--wake-delay 0",
                unmoderated.map(\.wakeupsPerSecond))
            // What each wake-up cost beyond the lines' saturated cost.
            let perWakeup = zip(moderated, burst).map { paced, burst in
                (paced.cpuPerLine - burst.cpuPerLine) * Double(lines) / max(paced.wakeups, 1)
            }
            add(
                "\(name), no bans: CPU per worker wake-up beyond the burst's", "ns", perWakeup,
                "a bare \(wakeDelay) µs sleep and wake-up", sleeps)
            let p50 = latency.map { percentile($0.latencies, 0.5) }
            let p99 = latency.map { percentile($0.latencies, 0.99) }
            add(
                "\(name): line-to-ban p50", "µs", p50, "--wake-delay 0",
                latencyUnmoderated.map { percentile($0.latencies, 0.5) })
            add(
                "\(name): line-to-ban p99", "µs", p99, "--wake-delay 0",
                latencyUnmoderated.map { percentile($0.latencies, 0.99) })
        }
        return results
    }

    nonisolated(unsafe) private static var runNumber = 0

    /// One run: `lines` lines, one per publish, paced at `rate` (nil: as fast as the writer goes,
    /// in batches of 256). Without bans the clients never reach the threshold; with them, each
    /// client's three lines come in a row and the threshold is 3.
    private func runPaced(
        _ kind: TransportKind, maps: BanMaps, lines: Int, rate: Int?, delay: Int, bans: Bool
    ) throws -> Run {
        Self.runNumber += 1
        let tag = "pcpaced-\(getpid())-\(Self.runNumber)"
        var transport = TransportConfiguration(kind: kind)
        transport.shm.name = "/" + tag
        transport.shm.rings = 1
        transport.socket.directory = scratch + "/" + tag
        let directory = scratch + "/" + tag + "-file"
        transport.file.path = directory + "/offences.log"
        if kind == .file {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        }
        defer {
            shm_unlink(transport.shm.name)
            try? FileManager.default.removeItem(atPath: transport.socket.directory)
            try? FileManager.default.removeItem(atPath: directory)
        }
        try maps.unban(batch: try maps.entries().map(\.address))
        var configuration = DaemonConfiguration(transport: transport)
        configuration.threshold = bans ? 3 : OffenceTable.highestCount
        configuration.banTime = 3600
        configuration.wakeDelayMicroseconds = delay
        configuration.allowlist = try Allowlist()
        configuration.protectHost = false
        let cpuCount = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        configuration.cpus = cpuCount >= 2 ? [1] : []
        let clients = bans ? lines / 3 : min(lines, 131_068)
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
                let index = Int(UInt32(bigEndian: address.ipv4NetworkOrder)) - 0xC612_0004
                if (0..<clients).contains(index) { bannedTimes[index] = event.monotonicNanoseconds }
            }
        }
        let daemon = try Daemon(configuration: configuration, maps: maps, publishers: [observer])
        try daemon.start()
        nonisolated(unsafe) let writer = try transport.makeWriter()
        defer { writer.close() }
        // Each line its own batch (a service logs one at a time); the burst in batches of 256.
        let stamp = UTCTime(secondsSinceEpoch: 1_795_718_566)
        var singles: [LineBatch] = []
        singles.reserveCapacity(lines)
        for position in 0..<lines {
            let client = bans ? position / 3 : position % clients
            let batch = LineBatch(byteCapacity: 96, lineCapacity: 1)
            batch.append(
                OffenceLine.text(
                    time: stamp, address: IPAddress(ipv4NetworkOrder: UInt32(0xC612_0004 + client).bigEndian)))
            singles.append(batch)
        }
        nonisolated(unsafe) let bursts = rate == nil ? PipelineSuite.batches(clients: clients, repeats: 1) : []
        nonisolated(unsafe) let batches = singles
        nonisolated(unsafe) let publishedTimes = published
        nonisolated(unsafe) var failure: Error?
        nonisolated(unsafe) var writerCPU: UInt64 = 0
        nonisolated(unsafe) var linesSent = lines  // the burst's whole batches: a little more
        let done = DispatchSemaphore(value: 0)
        let before = daemon.status.total
        let startCPU = SystemClock.processCPUNanoseconds()
        let start = SystemClock.monotonicNanoseconds()
        let thread = Thread {
            if cpuCount >= 2 { try? SystemThread.pinCurrent(to: 0) }
            let own = SystemClock.threadCPUNanoseconds()
            do {
                if rate == nil {
                    var sent = 0
                    while sent < lines {
                        for batch in bursts where sent < lines {
                            _ = try writer.publish(batch)
                            sent += batch.count
                        }
                    }
                    linesSent = sent
                } else {
                    let interval = 1e9 / Double(rate!)
                    for (position, batch) in batches.enumerated() {
                        let due = start + UInt64(Double(position) * interval)
                        while SystemClock.monotonicNanoseconds() < due { sched_yield() }
                        if bans && position % 3 == 2 {
                            publishedTimes[position / 3] = SystemClock.monotonicNanoseconds()
                        }
                        _ = try writer.publish(batch)
                    }
                }
            } catch {
                failure = error
            }
            writerCPU = SystemClock.threadCPUNanoseconds() - own
            done.signal()
        }
        thread.start()
        let mainCPU = SystemClock.threadCPUNanoseconds()
        done.wait()
        if let failure { throw MeasurementError(description: "\(kind) writer: \(failure)") }
        let lines = linesSent
        let deadline = SystemClock.monotonicNanoseconds() + 60_000_000_000
        while daemon.status.total.lines - before.lines < UInt64(lines) && SystemClock.monotonicNanoseconds() < deadline
        {
            SystemClock.sleep(nanoseconds: 1_000_000)
        }
        let end = SystemClock.monotonicNanoseconds()
        let cpu =
            SystemClock.processCPUNanoseconds() - startCPU - writerCPU - (SystemClock.threadCPUNanoseconds() - mainCPU)
        let after = daemon.status.total
        daemon.stop()
        guard after.lines - before.lines == UInt64(lines) else {
            throw MeasurementError(
                description: "\(kind): the daemon read \(after.lines - before.lines) of \(lines) lines")
        }
        var latencies: [Double] = []
        if bans {
            for index in 0..<clients where banned[index] != 0 && published[index] != 0 {
                latencies.append(Double(banned[index] &- published[index]) / 1000)
            }
            guard latencies.count == clients else {
                throw MeasurementError(description: "\(kind): \(latencies.count) of \(clients) clients banned")
            }
        }
        return Run(
            cpuPerLine: Double(cpu) / Double(lines),
            wakeupsPerSecond: Double(after.wakeups - before.wakeups) / (Double(end - start) / 1e9),
            wakeups: Double(after.wakeups - before.wakeups), latencies: latencies)
    }
}
