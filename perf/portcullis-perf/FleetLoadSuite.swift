// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import CPortcullisNATS
import Foundation
import Logging
import PortcullisCore
@_spi(Testing) import PortcullisFleet
import PortcullisSystem
import Synchronization
import XDPFirewall

/// Suite `fleet-load`: three hosts each banning `--rate` new addresses a second for `--seconds`,
/// every ban on the two others, through one nats-server with JetStream on loopback, or three clustered (`--servers 3`, started here,
/// stopped by its pid). The three fleet nodes run in this process, each with its own maps: each
/// ban is written into its host's maps and published as the daemon's ban path does; the others'
/// watches install it. Then it waits `--after` seconds more (a bucket max age shorter than the bans
/// makes its keys put again meanwhile). Rows: propagation p50, p99 and max of every new ban to each
/// other host over the whole window (puts again included in the load), this process's CPU (the
/// three nodes, the map writes of the local bans and the arrivals' recording) per fleet ban sent
/// and received, and the stream's puts per new key.
struct FleetLoadSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-load",
        abstract: "Three hosts banning at a rate through one NATS server: propagation, CPU per ban, puts per key.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "New bans a second on each host.")
    var rate = 1000

    @Option(help: "Seconds each host bans for.")
    var seconds = 60

    @Option(help: "Each ban's time in seconds.")
    var banSeconds: UInt64 = 600

    @Option(help: "The bucket's max age in seconds (0: the ban time).")
    var maxAge: UInt64 = 0

    @Option(help: "Seconds to go on watching after the last install (puts again come meanwhile).")
    var after = 0

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Path of nats-server.")
    var natsServer = "/usr/sbin/nats-server"

    @Option(help: "NATS servers: 1, or 3 clustered on loopback (each host lists all three, replicas = 3).")
    var servers = 1

    func validate() throws {
        if rate < 1 || rate > 10_000 { throw ValidationError("--rate must be 1...10000") }
        if seconds < 1 || seconds > 600 { throw ValidationError("--seconds must be 1...600") }
        if rate * seconds > 65_000 { throw ValidationError("--rate × --seconds must be at most 65000 (a /16 each)") }
        if after < 0 { throw ValidationError("--after must be at least 0") }
        if servers != 1 && servers != 3 { throw ValidationError("--servers must be 1 or 3") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    func measure() throws -> [Measurement] {
        guard FileManager.default.isExecutableFile(atPath: natsServer) else {
            throw MeasurementError(
                description: "fleet-load: no nats-server at \(natsServer): tools/install-deps installs it")
        }
        let cluster =
            servers == 1
            ? [try LoopbackNATS(path: natsServer)] : try LoopbackNATS.cluster(path: natsServer, count: servers)
        defer { for server in cluster { server.stop() } }
        let object = try BPFObjectLocator().locate(explicit: bpfObject)
        let programs = try (0..<3).map { _ in try LoadedProgram(filterAt: object, pinDirectory: nil) }
        let maps = programs.map { $0.maps! }
        var quiet = ConsoleLogHandler.logger("portcullis-perf.fleet-load")
        quiet.logLevel = .error
        let names = ["a", "b", "c"]
        let count = rate * seconds
        // Host h's i-th ban: 198.18.0.0/16 + i, 198.19.0.0/16 + i, 2001:2:0:3::/64 + i.
        func address(_ host: Int, _ index: Int) -> IPAddress {
            if host == 2 {
                return IPAddress(high: UInt64(0x2001_0002_0000_0003).bigEndian, low: UInt64(index + 1).bigEndian)
            }
            let base: UInt32 = host == 0 ? 0xC612_0000 : 0xC613_0000
            return IPAddress(ipv4NetworkOrder: (base | UInt32(index)).bigEndian)
        }
        let addresses: [[IPAddress]] = (0..<3).map { host in (0..<count).map { address(host, $0) } }
        let keys = (0..<3).map { host in
            addresses[host].map {
                FleetKey.key(host: names[host], IPNetwork(containing: $0, length: $0.isIPv4 ? 32 : 128))
            }
        }
        let arrivals = (0..<3).map { _ in Installs(capacity: 2 * count) }
        var nodes: [FleetNode] = []
        defer { for node in nodes { node.stopAndJoin() } }
        for host in 0..<3 {
            // Each host lists the servers from a different one (nats.c picks at random all the same).
            var settings = FleetSettings(
                servers: (0..<cluster.count).map { cluster[(host + $0) % cluster.count].url }, host: names[host])
            settings.reconnectWait = 0.1
            settings.replicas = cluster.count
            let node = FleetNode(settings: settings, maxAgeSeconds: maxAge == 0 ? banSeconds : maxAge, logger: quiet)
            let installs = arrivals[host]
            node.installObserver = { key in installs.record(key) }
            try node.start(maps: maps[host], allowlist: [])
            nodes.append(node)
            // The first makes the bucket (its max age) before the others bind.
            try waitFor(60, "node \(names[host]) did not read the bucket") { node.snapshot.resyncs > 0 }
        }
        let cpuBefore = processCPUSeconds()
        let bannerBefore = threadCPUSeconds()
        var written = (0..<3).map { _ in [UInt64](repeating: 0, count: count) }
        let start = SystemClock.monotonicNanoseconds()
        let interval = 1_000_000_000 / UInt64(rate)
        let expiry = SystemClock.bootNanoseconds() + banSeconds * 1_000_000_000
        for index in 0..<count {
            let due = start + UInt64(index) * interval
            let now = SystemClock.monotonicNanoseconds()
            if due > now { SystemClock.sleep(nanoseconds: due - now) }
            for host in 0..<3 {
                let address = addresses[host][index]
                try maps[host].ban(address, .at(bootNanoseconds: expiry), origin: 1)
                written[host][index] = SystemClock.monotonicNanoseconds()
                nodes[host].publish(
                    BanEvent(
                        kind: .ban, origin: .filter, addresses: [address], monotonicNanoseconds: written[host][index],
                        jail: "perf", seconds: [banSeconds]))
            }
        }
        let banned = Double(SystemClock.monotonicNanoseconds() - start) / 1e9
        let banner = threadCPUSeconds() - bannerBefore
        try waitFor(120, "not every ban reached both other hosts within 120 s") {
            nodes.allSatisfy { $0.snapshot.installed >= UInt64(2 * count) }
        }
        if after > 0 { SystemClock.sleep(nanoseconds: UInt64(after) * 1_000_000_000) }
        let cpu = processCPUSeconds() - cpuBefore
        let snapshots = nodes.map(\.snapshot)
        let puts = try streamLastSequence(url: cluster[0].url, stream: "KV_portcullis-bans")
        // Each new ban's first install on each other host, from its write into its host's maps.
        let sentAt = Dictionary(
            uniqueKeysWithValues: (0..<3).flatMap { host in zip(keys[host], written[host]) })
        var latencies: [Double] = []
        latencies.reserveCapacity(6 * count)
        for installs in arrivals {
            for (key, at) in installs.first() {
                guard let sent = sentAt[key] else { continue }
                latencies.append(Double(Int64(bitPattern: at &- sent)) / 1e6)
            }
        }
        guard latencies.count == 6 * count else {
            throw MeasurementError(description: "fleet-load: \(latencies.count) installs of \(6 * count)")
        }
        latencies.sort()
        let sent = snapshots.reduce(0) { $0 + $1.published }
        let received = snapshots.reduce(0) { $0 + $1.received }
        let again = snapshots.reduce(0) { $0 + $1.republished }
        let bucketAge = snapshots[0].bucketMaxAgeSeconds ?? 0
        let label =
            "3 hosts × \(rate) new bans/s for \(seconds) s (\(banSeconds) s bans, bucket max age \(bucketAge) s, "
            + (cluster.count == 1
                ? "one nats-server" : "\(cluster.count) clustered nats-servers, replicas \(cluster.count)")
            + ", \(after) s after)"
        let reference = "ban window (s)"
        func row(_ name: String, _ unit: String, _ value: Double) -> Measurement {
            Measurement(
                suite: "fleet-load", name: label + ": " + name, unit: unit, value: value, reference: reference,
                referenceValue: banned, rounds: 1)
        }
        return [
            row("propagation p50", "ms", percentileOf(latencies, 0.50)),
            row("propagation p99", "ms", percentileOf(latencies, 0.99)),
            row("propagation max", "ms", latencies.last ?? 0),
            row(
                "CPU per fleet ban sent and received (\(sent) sent, \(received) received)", "µs",
                cpu * 1e6 / Double(sent + received)),
            row(
                "the same without the banning thread (its map writes, publish calls, pacing)", "µs",
                (cpu - banner) * 1e6 / Double(sent + received)),
            row(
                "stream puts per new key (\(puts) puts, \(3 * count) keys, \(again) put again)", "puts",
                Double(puts) / Double(3 * count)),
        ]
    }

    private func waitFor(_ limit: Double, _ what: String, _ done: () -> Bool) throws {
        let deadline = SystemClock.monotonicSeconds() + limit
        while !done() {
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(description: "fleet-load: \(what)")
            }
            usleep(2000)
        }
    }

    private func percentileOf(_ sorted: [Double], _ fraction: Double) -> Double {
        sorted[min(Int(Double(sorted.count) * fraction), sorted.count - 1)]
    }

    /// This process's user and system CPU seconds (/proc/self/stat).
    private func processCPUSeconds() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        // After the command's ")": state is field 3; utime and stime are fields 14 and 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The calling thread's CPU seconds.
    private func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// The stream's last sequence: every put and delete it ever took.
    private func streamLastSequence(url: String, stream: String) throws -> UInt64 {
        var connection: OpaquePointer?
        guard natsConnection_ConnectTo(&connection, url) == NATS_OK, let connection else {
            throw MeasurementError(description: "fleet-load: cannot connect to \(url)")
        }
        defer { natsConnection_Destroy(connection) }
        var jetStream: OpaquePointer?
        guard natsConnection_JetStream(&jetStream, connection, nil) == NATS_OK, let jetStream else {
            throw MeasurementError(description: "fleet-load: no JetStream context")
        }
        defer { jsCtx_Destroy(jetStream) }
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        guard js_GetStreamInfo(&info, jetStream, stream, nil, &code) == NATS_OK, let info else {
            throw MeasurementError(description: "fleet-load: no stream \(stream)")
        }
        defer { jsStreamInfo_Destroy(info) }
        return info.pointee.State.LastSeq
    }
}

/// The installs one host's watch made: key and `CLOCK_MONOTONIC` nanoseconds (its thread only appends).
private final class Installs: Sendable {
    private let state: Mutex<[(String, UInt64)]>

    init(capacity: Int) {
        var list: [(String, UInt64)] = []
        list.reserveCapacity(capacity)
        state = Mutex(list)
    }

    func record(_ key: String) {
        let now = SystemClock.monotonicNanoseconds()
        state.withLock { $0.append((key, now)) }
    }

    /// Each key's first install.
    func first() -> [String: UInt64] {
        state.withLock { list in
            var first: [String: UInt64] = [:]
            first.reserveCapacity(list.count)
            for (key, at) in list where first[key] == nil { first[key] = at }
            return first
        }
    }
}
