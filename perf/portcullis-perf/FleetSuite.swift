// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Logging
import Foundation
import PortcullisCore
import PortcullisDaemon
@_spi(Testing) import PortcullisFleet
import PortcullisSystem
import Synchronization
import XDPFirewall
import CPortcullisNATS

/// Suite `fleet`: how fast a ban made on host A is in the maps of hosts B and C, through a real
/// NATS server with JetStream (Debian's nats-server, started here on loopback and stopped by its
/// pid). Three fleet nodes run in this process, each with its own maps (one clock for all): A's
/// ban is written into A's maps and published as the daemon publishes it; B's and C's watches
/// install it. Reference: a NATS core publish → subscribe through the same server, measured in
/// the same run (the engine's own floor).
struct FleetSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "A's map update to B's and C's over NATS JetStream: p50, p99 against a core publish → subscribe.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "Bans per round, paced.")
    var bans = 1000

    @Option(help: "Microseconds between two bans.")
    var pace = 1000

    @Option(help: "Bans host A puts at once, which host D, joining after, reads (0: no such rows).")
    var joinerBans = 100_000

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Path of nats-server.")
    var natsServer = "/usr/sbin/nats-server"

    func validate() throws {
        if bans < 10 || bans > 60_000 { throw ValidationError("--bans must be 10...60000") }
        if pace < 0 { throw ValidationError("--pace must be at least 0") }
        if joinerBans < 0 || joinerBans > 1_000_000 { throw ValidationError("--joiner-bans must be 0...1000000") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    func measure() throws -> [Measurement] {
        guard FileManager.default.isExecutableFile(atPath: natsServer) else {
            throw MeasurementError(
                description: "fleet: no nats-server at \(natsServer): tools/install-deps installs Debian's nats-server")
        }
        let server = try LoopbackNATS(path: natsServer)
        defer { server.stop() }
        let object = try BPFObjectLocator().locate(explicit: bpfObject)
        let programs = try (0..<4).map { _ in try LoadedProgram(filterAt: object, pinDirectory: nil) }
        let maps = programs.map { $0.maps! }
        // Problems only (the nodes' connection and read lines would interleave with the table).
        var quiet = ConsoleLogHandler.logger("portcullis-perf.fleet")
        quiet.logLevel = .warning
        var nodes: [FleetNode] = []
        defer { for node in nodes { node.stopAndJoin() } }
        let arrivals = Arrivals(capacity: bans * options.rounds)
        for (index, name) in ["a", "b", "c"].enumerated() {
            var settings = FleetSettings(servers: [server.url], host: name)
            settings.reconnectWait = 0.1
            // The suite measures whole buckets of one host's bans: no per-host limit in the way.
            settings.maxKeysPerHost = 10_000_000
            let node = FleetNode(settings: settings, maxAgeSeconds: 3600, logger: quiet)
            if index > 0 {
                let host = index - 1
                node.installObserver = { key in arrivals.record(key, host: host) }
            }
            try node.start(maps: index == 0 ? nil : maps[index], allowlist: [])
            nodes.append(node)
        }
        // Every node connected and every watch reading before the first ban.
        let deadline = SystemClock.monotonicSeconds() + 30
        while nodes.contains(where: { !$0.snapshot.connected || ($0 !== nodes[0] && $0.snapshot.resyncs == 0) }) {
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(description: "fleet: the nodes did not connect to \(server.url) within 30 s")
            }
            usleep(10_000)
        }
        let reference = try CoreRoundTrip(url: server.url)
        var fleetLatencies: [Double] = []
        var coreLatencies: [Double] = []
        var fleetP50: [Double] = []
        var fleetP99: [Double] = []
        var coreP50: [Double] = []
        var coreP99: [Double] = []
        for round in 0..<options.rounds {
            let addresses = (0..<bans).map { index in
                IPAddress(ipv4NetworkOrder: (UInt32(0xC612_0000) | UInt32(round << 16) | UInt32(index + 1)).bigEndian)
            }
            let round = try banRound(addresses, maps: maps[0], publisher: nodes[0], arrivals: arrivals)
            fleetLatencies += round
            fleetP50.append(percentile(round, 0.50))
            fleetP99.append(percentile(round, 0.99))
            let core = try reference.round(count: bans, paceMicroseconds: pace)
            coreLatencies += core
            coreP50.append(percentile(core, 0.50))
            coreP99.append(percentile(core, 0.99))
        }
        let label = "\(bans) bans paced at \(pace) µs, A's map → B's and C's"
        let referenceName = "NATS core publish → subscribe"
        let joiner =
            joinerBans > 0 ? try joinerRows(server: server, publisher: nodes[0], maps: maps[3], quiet: quiet) : []
        return joiner + [
            Measurement(
                suite: "fleet", name: label + ": p50", unit: "ms", value: median(fleetP50), reference: referenceName,
                referenceValue: median(coreP50), rounds: options.rounds),
            Measurement(
                suite: "fleet", name: label + ": p99", unit: "ms", value: median(fleetP99), reference: referenceName,
                referenceValue: median(coreP99), rounds: options.rounds),
            Measurement(
                suite: "fleet", name: label + ": max (all rounds)", unit: "ms", value: fleetLatencies.max() ?? 0,
                reference: referenceName, referenceValue: coreLatencies.max() ?? 0, rounds: options.rounds),
        ]
    }

    /// A publishes `joinerBans` bans at once (timed to the last acknowledgement, against bare
    /// asynchronous puts of as many values into a bucket of their own), then host D starts and
    /// reads the bucket's whole set into its maps (timed, against a bare watch reading the same set).
    private func joinerRows(
        server: LoopbackNATS, publisher: FleetNode, maps: BanMaps, quiet: Logger
    ) throws -> [Measurement] {
        let bare = try BareBucket(url: server.url)
        let barePut = try bare.putValues(count: joinerBans)
        let before = publisher.snapshot.published
        let started = SystemClock.monotonicSeconds()
        var index = 0
        while index < joinerBans {
            let count = min(1000, joinerBans - index)
            let addresses = (index..<index + count).map { number -> IPAddress in
                // 198.19.0.0/16 (65,536), then IPv6 2001:2:0:1::/64.
                number < 65_536
                    ? IPAddress(ipv4NetworkOrder: (UInt32(0xC613_0000) | UInt32(number)).bigEndian)
                    : IPAddress(high: UInt64(0x2001_0002_0000_0001).bigEndian, low: UInt64(number).bigEndian)
            }
            publisher.publish(
                BanEvent(
                    kind: .ban, origin: .filter, addresses: addresses,
                    monotonicNanoseconds: SystemClock.monotonicNanoseconds(),
                    jail: "perf", seconds: [UInt64](repeating: 3600, count: count)))
            index += count
        }
        while publisher.snapshot.published < before + UInt64(joinerBans) {
            guard SystemClock.monotonicSeconds() - started < 120 else {
                throw MeasurementError(description: "fleet: A did not publish \(joinerBans) bans within 120 s")
            }
            usleep(1000)
        }
        let published = SystemClock.monotonicSeconds() - started
        let (bareRead, keys) = try bare.watchAll(bucket: "portcullis-bans")
        var settings = FleetSettings(servers: [server.url], host: "d")
        settings.reconnectWait = 0.1
        // A bucket of more of one host's keys than the default per-host limit (100,000) is read whole.
        settings.maxKeysPerHost = 10_000_000
        let joiner = FleetNode(settings: settings, maxAgeSeconds: 3600, logger: quiet)
        let joined = SystemClock.monotonicSeconds()
        try joiner.start(maps: maps, allowlist: [])
        defer { joiner.stopAndJoin() }
        while joiner.snapshot.resyncs == 0 {
            guard SystemClock.monotonicSeconds() - joined < 120 else {
                throw MeasurementError(description: "fleet: D did not read the bucket within 120 s")
            }
            usleep(1000)
        }
        let read = SystemClock.monotonicSeconds() - joined
        let held = joiner.snapshot.bans
        guard held == keys else {
            throw MeasurementError(description: "fleet: D holds \(held) bans of the bucket's \(keys)")
        }
        return [
            Measurement(
                suite: "fleet", name: "A puts \(joinerBans) bans at once (to the last acknowledgement)", unit: "s",
                value: published, reference: "bare async puts of as many values", referenceValue: barePut, rounds: 1),
            Measurement(
                suite: "fleet", name: "D joins: \(keys) bans read into its maps (connect, watch, install)", unit: "s",
                value: read, reference: "a bare watch reading the same set", referenceValue: bareRead, rounds: 1),
        ]
    }

    /// One round: each address banned in A's maps and published, paced; returns, per ban and per
    /// receiving host, milliseconds from A's map write to that host's.
    private func banRound(
        _ addresses: [IPAddress], maps: BanMaps, publisher: FleetNode, arrivals: Arrivals
    ) throws -> [Double] {
        let keys = addresses.map { FleetKey.key(host: "a", IPNetwork(containing: $0, length: 32)) }
        arrivals.expect(keys)
        var written = [UInt64](repeating: 0, count: addresses.count)
        let start = SystemClock.monotonicNanoseconds()
        for (index, address) in addresses.enumerated() {
            let due = start + UInt64(index) * UInt64(pace) * 1000
            let now = SystemClock.monotonicNanoseconds()
            if due > now { SystemClock.sleep(nanoseconds: due - now) }
            try maps.ban(address, .at(bootNanoseconds: SystemClock.bootNanoseconds() + 3_600_000_000_000), origin: 1)
            written[index] = SystemClock.monotonicNanoseconds()
            publisher.publish(
                BanEvent(
                    kind: .ban, origin: .operator, addresses: [address], monotonicNanoseconds: written[index],
                    jail: "perf", seconds: [3600]))
        }
        let arrived = try arrivals.wait(seconds: 30)
        var latencies: [Double] = []
        latencies.reserveCapacity(addresses.count * 2)
        for host in 0..<2 {
            for index in addresses.indices {
                latencies.append(Double(arrived[host][index] &- written[index]) / 1e6)
            }
        }
        return latencies
    }
}

/// When B's and C's watches installed each key of a round (`CLOCK_MONOTONIC` nanoseconds).
private final class Arrivals: Sendable {
    private struct State {
        var index: [String: Int] = [:]
        var times: [[UInt64]] = [[], []]
        var left = 0
    }

    private let state: Mutex<State>

    init(capacity: Int) { state = Mutex(State()) }

    func expect(_ keys: [String]) {
        state.withLock { state in
            state.index = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
            state.times = [[UInt64](repeating: 0, count: keys.count), [UInt64](repeating: 0, count: keys.count)]
            state.left = keys.count * 2
        }
    }

    func record(_ key: String, host: Int) {
        let now = SystemClock.monotonicNanoseconds()
        state.withLock { state in
            guard let index = state.index[key], state.times[host][index] == 0 else { return }
            state.times[host][index] = now
            state.left -= 1
        }
    }

    func wait(seconds: Double) throws -> [[UInt64]] {
        let deadline = SystemClock.monotonicSeconds() + seconds
        while true {
            let (left, times) = state.withLock { ($0.left, $0.times) }
            if left == 0 { return times }
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(
                    description: "fleet: \(left) installs on B and C missing after \(Int(seconds)) s")
            }
            usleep(1000)
        }
    }
}

/// nats-server with JetStream on a free loopback port, a scratch store, stopped by its pid.
final class LoopbackNATS {
    let url: String
    private let directory: String
    private let process = Process()

    /// - Parameter cluster: this server's name, its route port and the other servers' (a cluster
    ///   on loopback, as docs/fleet.md's recipe without TLS), or nil for a server alone.
    init(path: String, port: Int? = nil, cluster: (name: String, route: Int, routes: [Int])? = nil) throws {
        directory = NSTemporaryDirectory() + "pc-perf-nats-\(getpid())\(cluster?.name ?? "")"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let port = try port ?? Self.freePort()
        url = "nats://127.0.0.1:\(port)"
        // setpriv: the server is killed should this process die without stopping it.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = [
            "--pdeathsig", "KILL", "--", path, "-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory,
        ]
        if let cluster {
            process.arguments! += [
                "--server_name", cluster.name, "--cluster_name", "portcullis", "--cluster",
                "nats://127.0.0.1:\(cluster.route)", "--routes",
                cluster.routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ","),
            ]
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = SystemClock.monotonicSeconds() + 30
        while !Self.accepts(port) {
            guard process.isRunning, SystemClock.monotonicSeconds() < deadline else {
                stop()
                throw MeasurementError(
                    description: "fleet: nats-server did not listen on 127.0.0.1:\(port) within 30 s")
            }
            usleep(20_000)
        }
    }

    /// `count` servers clustered on loopback (`n0`, `n1`...), each routed to the others.
    static func cluster(path: String, count: Int) throws -> [LoopbackNATS] {
        let ports = try (0..<2 * count).map { _ in try freePort() }
        var servers: [LoopbackNATS] = []
        do {
            for index in 0..<count {
                let routes = (0..<count).filter { $0 != index }.map { ports[count + $0] }
                servers.append(
                    try LoopbackNATS(
                        path: path, port: ports[index], cluster: ("n\(index)", ports[count + index], routes)))
            }
        } catch {
            for server in servers { server.stop() }
            throw error
        }
        return servers
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A port the kernel gives a bound socket (closed again: the server takes it next).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw MeasurementError(description: "fleet: no free loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

/// NATS core publish → subscribe: one connection publishes (each message as soon as it is
/// given), another receives in nats.c's callback; both on this machine's clock.
private final class CoreRoundTrip {
    private let publisher: OpaquePointer
    private let subscriber: OpaquePointer
    private let subscription: OpaquePointer
    private let received: Received

    final class Received: @unchecked Sendable {
        let times = Mutex<[UInt64]>([])
    }

    init(url: String) throws {
        func connect(asap: Bool) throws -> OpaquePointer {
            var options: OpaquePointer?
            natsOptions_Create(&options)
            defer { natsOptions_Destroy(options) }
            natsOptions_SetURL(options, url)
            natsOptions_SetSendAsap(options, asap)
            var connection: OpaquePointer?
            let status = natsConnection_Connect(&connection, options)
            guard status == NATS_OK, let connection else {
                throw MeasurementError(
                    description: "fleet: core connection: \(String(cString: natsStatus_GetText(status)))")
            }
            return connection
        }
        publisher = try connect(asap: true)
        subscriber = try connect(asap: false)
        received = Received()
        var subscription: OpaquePointer?
        let status = natsConnection_Subscribe(
            &subscription, subscriber, "portcullis.perf.rtt",
            { _, _, message, closure in
                let now = SystemClock.monotonicNanoseconds()
                let received = Unmanaged<Received>.fromOpaque(closure!).takeUnretainedValue()
                if let data = natsMsg_GetData(message), natsMsg_GetDataLength(message) == 8 {
                    let sent = UnsafeRawPointer(data).loadUnaligned(as: UInt64.self)
                    received.times.withLock { $0.append(now &- sent) }
                }
                natsMsg_Destroy(message)
            }, Unmanaged.passUnretained(received).toOpaque())
        guard status == NATS_OK, let subscription else {
            throw MeasurementError(
                description: "fleet: core subscription: \(String(cString: natsStatus_GetText(status)))")
        }
        self.subscription = subscription
        natsConnection_Flush(subscriber)
    }

    deinit {
        natsSubscription_Destroy(subscription)
        natsConnection_Destroy(publisher)
        natsConnection_Destroy(subscriber)
    }

    /// `count` messages paced; milliseconds from each publish to its callback.
    func round(count: Int, paceMicroseconds: Int) throws -> [Double] {
        received.times.withLock { $0 = [] }
        let start = SystemClock.monotonicNanoseconds()
        for index in 0..<count {
            let due = start + UInt64(index) * UInt64(paceMicroseconds) * 1000
            let now = SystemClock.monotonicNanoseconds()
            if due > now { SystemClock.sleep(nanoseconds: due - now) }
            var sent = SystemClock.monotonicNanoseconds()
            _ = withUnsafeBytes(of: &sent) { bytes in
                natsConnection_Publish(publisher, "portcullis.perf.rtt", bytes.baseAddress, Int32(bytes.count))
            }
        }
        let deadline = SystemClock.monotonicSeconds() + 30
        while received.times.withLock({ $0.count }) < count {
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(description: "fleet: core messages missing after 30 s")
            }
            usleep(1000)
        }
        return received.times.withLock { $0.map { Double($0) / 1e6 } }
    }
}

/// nats.c alone, for the joiner rows' references: asynchronous puts into a bucket of their own,
/// and a watch that reads a bucket's whole set and does nothing with it.
private final class BareBucket {
    private let connection: OpaquePointer
    private let jetStream: OpaquePointer

    init(url: String) throws {
        var options: OpaquePointer?
        natsOptions_Create(&options)
        defer { natsOptions_Destroy(options) }
        natsOptions_SetURL(options, url)
        var connection: OpaquePointer?
        guard natsConnection_Connect(&connection, options) == NATS_OK, let connection else {
            throw MeasurementError(description: "fleet: the bare client cannot connect to \(url)")
        }
        self.connection = connection
        var jetStream: OpaquePointer?
        guard natsConnection_JetStream(&jetStream, connection, nil) == NATS_OK, let jetStream else {
            natsConnection_Destroy(connection)
            throw MeasurementError(description: "fleet: the bare client has no JetStream context")
        }
        self.jetStream = jetStream
    }

    deinit {
        jsCtx_Destroy(jetStream)
        natsConnection_Destroy(connection)
    }

    /// Seconds to put `count` values like a ban's (about 80 bytes) asynchronously, to the last
    /// acknowledgement.
    func putValues(count: Int) throws -> Double {
        var config = kvConfig()
        kvConfig_Init(&config)
        var store: OpaquePointer?
        let made = "portcullis-perf-reference".withCString { name in
            config.Bucket = name
            config.History = 1
            config.StorageType = js_FileStorage
            return js_CreateKeyValue(&store, jetStream, &config)
        }
        guard made == NATS_OK, let store else { throw MeasurementError(description: "fleet: no reference bucket") }
        defer { kvStore_Destroy(store) }
        let value = Array(#"{"end":1764650000123,"at":1764646400123,"jail":"perf","host":"a","level":0}"#.utf8)
        let started = SystemClock.monotonicSeconds()
        for index in 0..<count {
            let status = value.withUnsafeBytes { bytes in
                js_PublishAsync(
                    jetStream, "$KV.portcullis-perf-reference.a.\(index)", bytes.baseAddress, Int32(bytes.count), nil)
            }
            guard status == NATS_OK else { throw MeasurementError(description: "fleet: a bare put failed") }
        }
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = 60_000
        guard js_PublishAsyncComplete(jetStream, &options) == NATS_OK else {
            throw MeasurementError(description: "fleet: the bare puts were not acknowledged")
        }
        return SystemClock.monotonicSeconds() - started
    }

    /// Seconds to read `bucket`'s whole set through a watch, and how many keys it had.
    func watchAll(bucket: String) throws -> (Double, Int) {
        let started = SystemClock.monotonicSeconds()
        var store: OpaquePointer?
        guard js_KeyValue(&store, jetStream, bucket) == NATS_OK, let store else {
            throw MeasurementError(description: "fleet: no bucket \(bucket)")
        }
        defer { kvStore_Destroy(store) }
        var watcher: OpaquePointer?
        guard kvStore_WatchAll(&watcher, store, nil) == NATS_OK, let watcher else {
            throw MeasurementError(description: "fleet: the bare watch failed")
        }
        defer { kvWatcher_Destroy(watcher) }
        var keys = 0
        while true {
            var entry: OpaquePointer?
            let status = kvWatcher_Next(&entry, watcher, 10_000)
            guard status == NATS_OK else { throw MeasurementError(description: "fleet: the bare watch stopped") }
            guard let entry else { break }
            if kvEntry_Operation(entry) == kvOp_Put { keys += 1 }
            kvEntry_Destroy(entry)
        }
        return (SystemClock.monotonicSeconds() - started, keys)
    }
}
