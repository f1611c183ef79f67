import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisMetrics
import Testing
import TestSupport

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
