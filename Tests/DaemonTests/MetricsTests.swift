// SPDX-License-Identifier: Apache-2.0
import Glibc
import LogTransport
import PortcullisCore
@testable import PortcullisDaemon
import PortcullisMetrics
import PortcullisSystem
import Synchronization
import Testing
import TestSupport
import XDPFirewall
import XDPTesting

@Suite("Metrics")
struct MetricsTests {
    @Test("--metrics addresses: IPv4, [IPv6], localhost, with a port; anything else refused in one line")
    func endpoints() throws {
        let v4 = try MetricsEndpoint("127.0.0.1:9617")
        #expect(v4.port == 9617 && v4.isLoopback && v4.url(port: 9617) == "http://127.0.0.1:9617/metrics")
        let v6 = try MetricsEndpoint("[::1]:0")
        #expect(v6.isLoopback && v6.url(port: 80) == "http://[::1]:80/metrics")
        #expect(try MetricsEndpoint("localhost:9617").isLoopback)
        #expect(try !MetricsEndpoint("198.18.0.1:9617").isLoopback)
        #expect(try !MetricsEndpoint("[2001:2::1]:9617").isLoopback)
        for bad in ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:9617", "[::1]", "example.org:9617", ""] {
            #expect(throws: MetricsError.self, "\(bad)") { try MetricsEndpoint(bad) }
        }
        do {
            _ = try MetricsEndpoint("metrics.example:9617")
            Issue.record("a name is refused (no name is looked up)")
        } catch {
            #expect(error.description.contains("not an IPv4 address") && error.description.contains("or none"))
        }
    }

    /// The value of one series in a text exposition.
    func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test(
        "counters stay monotonic when the daemon counts anew (a reload's jails); a jail gone takes its gauges along; bans by origin and the latency from the events",
        .enabled(if: Privileges.runnable))
    func scrapes() throws {
        let metrics = DaemonMetrics(version: "test")
        try withShmDaemon(
            mapEntries: 64,
            configure: {
                $0.threshold = 3; $0.banTime = 600; $0.tableBins = 10_007
            }, publishers: [metrics]
        ) { daemon, maps, writer in
            let batch = LineBatch()
            for address in ["198.18.20.1", "198.18.20.2"] {
                for _ in 0..<3 { batch.append(offenceLine(address)) }
            }
            _ = try writer.publish(batch)
            #expect(eventually(within: 10) { daemon.status.total.bans == 2 })
            var status = daemon.status
            let source = status.sources[0].label
            let lines = "portcullis_lines_total{jail=\"default\",source=\"\(source)\"}"
            var text = String(
                decoding: metrics.render(.init(status: status, maps: maps, control: [], reloads: 0, reloadsRefused: 0)),
                as: UTF8.self)
            #expect(value(text, lines) == 6, "\(text)")
            #expect(value(text, "portcullis_bans_total{jail=\"default\",origin=\"filter\"}") == 2)
            #expect(value(text, "portcullis_line_to_ban_seconds_count") == 2)
            #expect(value(text, "portcullis_bans_in_force{jail=\"default\"}") == 2)
            #expect(value(text, "portcullis_offence_table_bins{jail=\"default\"}") == 10_007)

            // A reload: the new daemon's jail counts from 0 again (2 lines so far), and is named otherwise.
            status.sources[0].jails[0].counters.lines = 2
            status.tables[0].jail = "renamed"
            status.jails[0].name = "renamed"
            text = String(
                decoding: metrics.render(.init(status: status, maps: maps, control: [], reloads: 1, reloadsRefused: 0)),
                as: UTF8.self)
            #expect(value(text, lines) == 8, "6, then 2 more: \(text)")
            #expect(value(text, "portcullis_offence_table_bins{jail=\"default\"}") == nil, "gone with its jail")
            #expect(value(text, "portcullis_offence_table_bins{jail=\"renamed\"}") == 10_007)
            #expect(value(text, "portcullis_reloads_total{result=\"reloaded\"}") == 1)
            text = String(decoding: metrics.render(nil), as: UTF8.self)
            #expect(value(text, lines) == 8, "counters stay when no daemon answers")
            #expect(value(text, "portcullis_offence_table_bins{jail=\"renamed\"}") == nil)
            #expect(value(text, "process_open_fds").map { $0 > 0 } == true)
        }
    }
}

@Suite("Metrics: drops by origin", .enabled(if: Privileges.runnable))
struct DropMetricsTests {
    @Test(
        "portcullis_dropped_packets_total and _bytes_total by origin, name and family, from frames the filter dropped; the verdict counter's dropped is their sum"
    )
    func dropsByOrigin() throws {
        try Privileges.require()
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        let maps = try #require(program.maps)
        let slots = try maps.originSlots(for: ["sshd", "fleet/web-2"])
        let (jail, manual, fleet) = (IPAddress("198.18.31.1")!, IPAddress("2001:2::31")!, IPAddress("2001:2::32")!)
        try maps.ban(jail, .permanent, origin: try #require(slots["sshd"]))
        try maps.ban(manual, .permanent)
        try maps.ban(fleet, .permanent, origin: try #require(slots["fleet/web-2"]))
        let frame4 = TestFrame.udp(from: jail, to: IPAddress("198.18.255.254")!)
        let frame6 = TestFrame.udp(from: manual, to: IPAddress("2001:2::fffe")!)
        #expect(try program.testRun(frame: frame4, repetitions: 6).verdict == .drop)
        #expect(try program.testRun(frame: frame6, repetitions: 4).verdict == .drop)
        #expect(
            try program.testRun(frame: TestFrame.udp(from: fleet, to: IPAddress("2001:2::fffe")!), repetitions: 1)
                .verdict == .drop)
        let status = DaemonStatus(
            workers: [], workerCPUs: [], unbans: 0, sweptUnbans: 0, scheduledBans: 0, tableBins: 0, linesLost: 0,
            expiryCPUNanoseconds: 0, uptime: 0)
        let metrics = DaemonMetrics(version: "test")
        let text = String(
            decoding: metrics.render(.init(status: status, maps: maps, control: [], reloads: 0, reloadsRefused: 0)),
            as: UTF8.self)
        func value(_ name: String, _ origin: String, _ named: String, _ family: String) -> Double? {
            MetricsTests().value(text, "\(name){origin=\"\(origin)\",name=\"\(named)\",family=\"\(family)\"}")
        }
        let (packets, bytes) = ("portcullis_dropped_packets_total", "portcullis_dropped_bytes_total")
        #expect(value(packets, "jail", "sshd", "ipv4") == 6, "\(text)")
        #expect(value(bytes, "jail", "sshd", "ipv4") == Double(6 * frame4.count))
        #expect(value(packets, "jail", "sshd", "ipv6") == 0, "a named origin's series exist from the start")
        #expect(value(packets, "manual", "", "ipv6") == 4)
        #expect(value(bytes, "manual", "", "ipv6") == Double(4 * frame6.count))
        #expect(value(packets, "manual", "", "ipv4") == 0)
        #expect(value(packets, "fleet", "web-2", "ipv6") == 1)
        #expect(value(bytes, "fleet", "web-2", "ipv6") == Double(frame6.count))
        #expect(MetricsTests().value(text, "portcullis_xdp_packets_total{verdict=\"dropped\"}") == 11)
        #expect(text.contains("# TYPE portcullis_dropped_packets_total counter"))
    }
}

@Suite("Metrics endpoint under load")
struct MetricsLoadTests {
    @Test(
        "a scrape within a second of the last one reuses its walk of the ban maps (N9): 3,000 bans, one walk for two scrapes",
        .enabled(if: Privileges.runnable))
    func mapWalkCached() throws {
        let metrics = DaemonMetrics(version: "test")
        try withShmDaemon(mapEntries: 4096, configure: { $0.threshold = 3 }, publishers: [metrics]) {
            daemon, maps, _ in
            let requests = (0..<3000).map {
                BanRequest(IPAddress(ipv4: 198, 18, UInt8(100 + $0 / 250), UInt8($0 % 250)), .permanent)
            }
            let installed = try maps.ban(batch: requests)
            #expect(installed == 3000)
            let inputs = DaemonMetrics.Inputs(
                status: daemon.status, maps: maps, control: [], reloads: 0, reloadsRefused: 0)
            let series = "portcullis_bans_in_force{jail=\"manual\"}"
            let first = String(decoding: metrics.render(inputs), as: UTF8.self)
            let second = String(decoding: metrics.render(inputs), as: UTF8.self)
            #expect(MetricsTests().value(first, series) == 3000)
            #expect(MetricsTests().value(second, series) == 3000)
            #expect(MetricsTests().value(second, "portcullis_ban_map_entries{family=\"ipv4\"}") == 3000)
            #expect(metrics.mapWalks == 1, "the second scrape walked the maps again")
        }
    }

    /// A TCP connection to 127.0.0.1:`port` from `source` (127.0.0.1, 127.0.0.2...).
    static func connect(from source: String, port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let done =
            withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            } == 0
            && withUnsafePointer(to: &remote) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            } == 0
        guard done else {
            close(fd)
            return nil
        }
        return fd
    }

    static func send(_ fd: Int32, _ text: String) -> Bool {
        text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } > 0
    }

    /// A scrape from 127.0.0.1: the status line, or nil when none came within `seconds`.
    static func scrape(port: UInt16, seconds: Int32) -> String? {
        guard let fd = connect(from: "127.0.0.1", port: port) else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: Int(seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard send(fd, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") else { return nil }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !bytes.contains(10) {
            let count = read(fd, &buffer, buffer.count)
            guard count > 0 else { break }
            bytes += buffer[0..<count]
        }
        return bytes.contains(10) ? String(decoding: bytes.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self) : nil
    }

    @Test(
        "16 slow connections (a header line every 2 s) from 127.0.0.1 and 127.0.0.2: a concurrent scrape gets 200, and each slow one is shut although never idle (N9)"
    )
    func slowConnections() throws {
        let server = try MetricsServer(endpoint: MetricsEndpoint("127.0.0.1:0")) { Array("ok\n".utf8) }
        defer { server.close() }
        let port = server.port
        let stop = Atomic<Bool>(false)
        let ended = Atomic<Int>(0)
        var peers: [SystemThread] = []
        defer {
            stop.store(true, ordering: .releasing)
            for peer in peers { peer.join() }
        }
        for index in 0..<16 {
            let source = index < 8 ? "127.0.0.1" : "127.0.0.2"
            let fd = try #require(Self.connect(from: source, port: port))
            #expect(Self.send(fd, "GET /metrics HTTP/1.1\r\n"))
            peers.append(
                try SystemThread.spawn {
                    defer { close(fd) }
                    var line = 0
                    while !stop.load(ordering: .acquiring) {
                        // A header line every 2 s (within the 10 s idle timeout); a shut connection ends.
                        for _ in 0..<20 where !stop.load(ordering: .acquiring) {
                            SystemClock.sleep(nanoseconds: 100_000_000)
                        }
                        line += 1
                        var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                        var byte: UInt8 = 0
                        if Glibc.poll(&poll, 1, 0) > 0, recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0 {
                            ended.add(1, ordering: .releasing)
                            return
                        }
                        guard Self.send(fd, "X-Slow-\(line): yes\r\n") else {
                            ended.add(1, ordering: .releasing)
                            return
                        }
                    }
                })
        }
        #expect(Self.scrape(port: port, seconds: 30) == "HTTP/1.1 200 OK")
        #expect(eventually(within: 30) { ended.load(ordering: .acquiring) == 16 }, "every slow connection shut")
        #expect(server.connectionsCut >= 16)
    }
}
