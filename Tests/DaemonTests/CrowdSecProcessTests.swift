// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisCrowdSec
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall
import XDPTesting

/// portcullisd with a real CrowdSec Local API (Debian's crowdsec, `-no-cs`, scratch SQLite) in the
/// receiver namespace: the bouncer's decisions in the driver, the jails' bans as alerts. A suite of
/// its own beside the other process suites; its tests run one after another (they share the CPUs).
@Suite("portcullisd with CrowdSec", .enabled(if: Privileges.runnable), .serialized)
struct CrowdSecProcessTests: DaemonProcessSuite {}

/// The helpers of the CrowdSec tests (the fleet's use them too).
extension DaemonProcessSuite {
    /// The `[crowdsec]` table and a jail reading `LOG` for the built-in test lines.
    func crowdsecConfiguration(_ lapi: CrowdSecLAPI, _ keys: [String]) -> String {
        """
        [jail.app]
        source = "file:LOG"
        failregex = '^\\s*failed from <HOST>$'
        maxretry = 3
        bantime = 600

        [crowdsec]
        api_url = "\(lapi.url)"
        \(keys.joined(separator: "\n"))
        """
    }

    /// The list layer's entries of `crowdsec/` origins: network → origin.
    func crowdsecEntries(_ maps: BanMaps) throws -> [String: String] {
        try originEntries(maps, prefix: "crowdsec/")
    }

    /// The list layer's entries of origins named `PREFIX...`: network → origin.
    func originEntries(_ maps: BanMaps, prefix: String) throws -> [String: String] {
        let names = try maps.originNames()
        var entries: [String: String] = [:]
        for entry in try maps.listEntries() {
            if let name = names[entry.origin], name.hasPrefix(prefix) { entries[entry.network.description] = name }
        }
        return entries
    }

    /// Seconds until `condition` holds (polled every 20 ms), or nil after `limit`.
    func secondsUntil(_ limit: Double, _ condition: () throws -> Bool) rethrows -> Double? {
        let start = SystemClock.monotonicSeconds()
        while SystemClock.monotonicSeconds() - start < limit * patience {
            if try condition() { return SystemClock.monotonicSeconds() - start }
            usleep(20_000)
        }
        return try condition() ? SystemClock.monotonicSeconds() - start : nil
    }

    /// The metrics endpoint's text, through curl in the daemon's namespace.
    func scrape(_ network: TestNetwork, ready: String) throws -> String {
        try scrape(in: network.receiver, ready: ready)
    }

    /// The metrics endpoint's text of the daemon in `namespace`, through curl there.
    func scrape(in namespace: String, ready: String) throws -> String {
        try #require(eventually(within: 10) { FileManager.default.fileExists(atPath: ready) })
        let text = try String(contentsOfFile: ready, encoding: .utf8)
        let url = try #require(
            text.firstMatch(of: /"metrics":"(http:[^"]+)"/).map {
                String($0.1).replacingOccurrences(of: "\\/", with: "/")
            })
        return try runProcess(
            "/usr/bin/nsenter",
            ["--net=/run/netns/\(namespace)", "--", "/usr/bin/curl", "-sS", "--max-time", "10", url]
        ).stdout
    }

    /// Runs `body` with a test network, a started scratch Local API in its receiver namespace and
    /// a configuration scratch directory; removes all three after it (nothing without crowdsec,
    /// outside CI).
    func withLocalAPI(
        _ tag: String, _ body: (TestNetwork, ScratchPinDirectory, CrowdSecLAPI, ConfigurationScratch) throws -> Void
    ) throws {
        guard CrowdSecLAPI.available() else { return }
        try withTestNetwork(tag) { network, scratch in
            let lapi = try CrowdSecLAPI(namespace: network.receiver)
            defer { lapi.remove() }
            try lapi.start()
            let files = try ConfigurationScratch()
            defer { files.remove() }
            try body(network, scratch, lapi, files)
        }
    }

    /// A series' value in a scrape.
    func sample(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }
}

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec bouncer: an Ip and a Range decision drop their sources within update_frequency + 1 s and nothing else; deletion lifts both; a local ban and its unban never undo a decision, nor the other way round; captcha and allowlisted decisions are counted, not enforced"
    )
    func crowdsecDecisions() throws {
        try withLocalAPI("y") { network, scratch, lapi, files in
            let key = try lapi.bouncerKey("portcullis-test")
            try files.write(crowdsecConfiguration(lapi, ["api_key = \"\(key)\"", "update_frequency = \"1s\""]))
            let ready = files.directory + "/ready.json"
            let socket = files.directory + "/control.sock"
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                    "--allow", "198.18.3.0/24", "--metrics", "127.0.0.1:0", "--ready-file", ready, "--control", socket,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            let filter = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
            func verdict(_ source: String) throws -> XDPVerdict {
                try filter.testRun(frame: TestFrame.udp(from: IPAddress(source)!, to: IPAddress("198.19.255.254")!))
                    .verdict
            }
            func cli(_ arguments: [String]) throws -> ProcessResult {
                try runProcess(Products.cli, arguments + ["--control", socket, "--pin-dir", scratch.path])
            }
            // update_frequency (1 s) + 1 s is the bound; what it took is reported, the test waits up
            // to 10 s (a loaded machine's clock is not the bouncer's fault).
            for arguments in [
                ["-i", "198.18.0.7", "-d", "2m"], ["-r", "198.18.1.0/24", "-d", "2m"],
                ["-i", "198.18.2.1", "-d", "2m", "-t", "captcha"], ["-i", "198.18.3.3", "-d", "2m"],
            ] {
                let added = try lapi.cscli(["decisions", "add"] + arguments)
                try #require(added.status == 0, "\(added.stderr)")
            }
            let enforced = try secondsUntil(10) {
                try verdict("198.18.0.7") == .drop && verdict("198.18.1.200") == .drop
            }
            print(
                "crowdsec: Ip and Range decisions enforced \(enforced.map { String(format: "%.2f", $0) } ?? "never") s after cscli returned"
            )
            #expect(enforced != nil)
            #expect(try verdict("198.18.2.1") == .pass, "a captcha decision is not a ban")
            #expect(try verdict("198.18.3.3") == .pass, "allowlisted")
            #expect(try verdict("198.18.0.8") == .pass && verdict("198.18.2.0") == .pass)
            #expect(try crowdsecEntries(maps) == ["198.18.0.7": "crowdsec/cscli", "198.18.1.0/24": "crowdsec/cscli"])
            let listing = try cli(["list", "--json"])
            #expect(listing.stdout.contains("crowdsec/cscli"), "\(listing.stdout)")

            // A local ban of the same address and its unban: the decision still drops.
            var result = try cli(["ban", "198.18.0.7", "--for", "600"])
            #expect(result.status == 0, "\(result.stderr)")
            result = try cli(["unban", "198.18.0.7"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(
                result.stderr.contains(
                    "note: 198.18.0.7 is still dropped by crowdsec/cscli (198.18.0.7), a CrowdSec decision: "
                        + "cscli decisions delete -i 198.18.0.7"), "\(result.stderr)")
            #expect(try verdict("198.18.0.7") == .drop, "the CrowdSec decision stays")
            // A local ban inside the range outlives the range's deletion.
            result = try cli(["ban", "198.18.1.9", "--for", "600"])
            #expect(result.status == 0, "\(result.stderr)")

            for arguments in [["-i", "198.18.0.7"], ["-r", "198.18.1.0/24"]] {
                let deleted = try lapi.cscli(["decisions", "delete"] + arguments)
                try #require(deleted.status == 0, "\(deleted.stderr)")
            }
            let lifted = try secondsUntil(10) { try verdict("198.18.0.7") == .pass && verdict("198.18.1.200") == .pass }
            print(
                "crowdsec: deletions lifted \(lifted.map { String(format: "%.2f", $0) } ?? "never") s after cscli returned"
            )
            #expect(lifted != nil)
            #expect(try verdict("198.18.1.9") == .drop, "the local ban stays")
            #expect(try crowdsecEntries(maps).isEmpty)

            let status = try runProcess(Products.cli, ["status", "--control", socket])
            #expect(
                status.stdout.contains("crowdsec bouncer: \(lapi.url) connected, 0 networks enforced, "),
                "\(status.stdout) \(status.stderr)")
            // The Local API knows the bouncer by its User-Agent.
            let bouncers = try lapi.json(["bouncers", "list"]) as? [[String: Any]] ?? []
            #expect(
                bouncers.contains {
                    $0["name"] as? String == "portcullis-test" && $0["type"] as? String == "portcullis"
                },
                "\(bouncers)")
            let metrics = try scrape(network, ready: ready)
            #expect(sample(metrics, #"portcullis_crowdsec_decisions_skipped_total{reason="type"}"#) == 1, "\(metrics)")
            #expect(sample(metrics, #"portcullis_crowdsec_decisions_skipped_total{reason="allowlisted"}"#) == 1)
            #expect((sample(metrics, "portcullis_crowdsec_pulls_total") ?? 0) >= 2)
            #expect(sample(metrics, "portcullis_crowdsec_connected") == 1)
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(text.contains("crowdsec: bouncer of \(lapi.url), every 1.0 s"), "\(text)")
            #expect(text.contains("crowdsec: synchronised with \(lapi.url)"), "\(text)")
            #expect(try verdict("198.18.1.9") == .drop, "stopping the daemon leaves the bans")
        }
    }

    @Test(
        "CrowdSec bouncer: 50,000 imported decisions enforced (what the deltas missed repaired by a resync; install times reported); a daemon restarted while decisions came and went converges to exactly the LAPI's set in one pull"
    )
    func crowdsecImport() throws {
        try withLocalAPI("z") { network, scratch, lapi, files in
            let key = try lapi.bouncerKey("portcullis-test")
            try files.write(
                crowdsecConfiguration(
                    lapi, ["api_key = \"\(key)\"", "update_frequency = \"1s\"", "resync_frequency = \"5s\""]))
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
            ]
            var (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            // 50,000 addresses of 198.19.0.0/16 in one import (as a community list arrives).
            var expected = Set<String>()
            var csv = "duration,scope,value,reason\n"
            for index in 0..<50_000 {
                let address = "198.19.\(index / 250).\(index % 250 + 1)"
                expected.insert(address)
                csv += "30m,ip,\(address),test-import\n"
            }
            let file = files.directory + "/import.csv"
            try csv.write(toFile: file, atomically: true, encoding: .utf8)
            // CrowdSec's SQLite can refuse the import's writes while a pull holds the database
            // ("database is locked"): tried again (what it had written stays; the values are the same).
            var imported = try lapi.cscli(["decisions", "import", "-i", file], timeout: 300)
            for _ in 0..<3 where imported.status != 0 && imported.stderr.contains("database is locked") {
                imported = try lapi.cscli(["decisions", "import", "-i", file], timeout: 300)
            }
            try #require(imported.status == 0, "\(imported.stderr)")
            #expect(try eventually(within: 30) { try crowdsecEntries(maps).count == 50_000 })
            var text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            // The LAPI commits an import in parts while pulls run every second: the pulls that met
            // it are reported, and a resync's repair of what its deltas missed (CrowdSec 1.4's
            // stream can miss decisions committed during a pull).
            let pulls = text.split(separator: "\n").filter { $0.contains("pulled from") || $0.contains("repaired by") }
            for pull in pulls { print("crowdsec: import: " + (pull.split(separator: ": ", maxSplits: 2).last ?? "")) }
            #expect(!pulls.isEmpty, "large pulls are said: \(text)")

            // Stopped: 20 decisions deleted, a range and an address added; a stale entry of a
            // crowdsec origin the LAPI never had is left in the maps, as a crash could.
            for index in 0..<20 {
                let address = "198.19.\(index / 250).\(index % 250 + 1)"
                #expect(try lapi.cscli(["decisions", "delete", "-i", address]).status == 0)
                expected.remove(address)
            }
            #expect(try lapi.cscli(["decisions", "add", "-r", "198.18.64.0/18", "-d", "30m"]).status == 0)
            #expect(try lapi.cscli(["decisions", "add", "-i", "2001:2:0:99::1", "-d", "30m"]).status == 0)
            expected.formUnion(["198.18.64.0/18", "2001:2:0:99::1"])
            let stale = try #require(try maps.originSlots(for: ["crowdsec/cscli"])["crowdsec/cscli"])
            try maps.updateListEntries(
                owned: { $0 == stale },
                adding: [ListEntry(network: try IPNetwork(parsing: "198.18.200.1"), expiry: .permanent, origin: stale)],
                removing: [])

            // The restart's first pull is the whole set, installed in one swap: that is the figure.
            (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            #expect(try eventually(within: 30) { Set(try crowdsecEntries(maps).keys) == expected })
            text = stopDaemon(daemon, output)
            let entries = try crowdsecEntries(maps)
            #expect(Set(entries.keys) == expected, "extra: \(Set(entries.keys).subtracting(expected).prefix(5))")
            let synchronised = text.split(separator: "\n").first { $0.contains("synchronised with") }
            print("crowdsec: after the restart: \(synchronised ?? "no line")")
            #expect(
                synchronised?.contains(": \(expected.count) network(s) of ") == true,
                "\(text)")
        }
    }

    @Test(
        "CrowdSec alerts: a jail's ban becomes an alert and, by the profile, a decision the bouncer brings back; the LAPI stopped 30 s: banning goes on, the decisions stay enforced, the queued alert and a new decision arrive when it returns"
    )
    func crowdsecAlertsAndOutage() throws {
        try withLocalAPI("A") { network, scratch, lapi, files in
            let key = try lapi.bouncerKey("portcullis-test")
            try lapi.addMachine("portcullis-test", password: "test-password-0123456789")
            try files.write(
                crowdsecConfiguration(
                    lapi,
                    [
                        "api_key = \"\(key)\"", "update_frequency = \"1s\"", "login = \"portcullis-test\"",
                        "password = \"test-password-0123456789\"",
                    ]))
            let ready = files.directory + "/ready.json"
            let control = ControlScratch.path()
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                    "--metrics", "127.0.0.1:0", "--ready-file", ready, "--control", control,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            func status() throws -> ProcessResult { try runProcess(Products.cli, ["status", "--control", control]) }
            func alerted(_ address: String) throws -> Bool {
                guard let alerts = try lapi.json(["alerts", "list"]) as? [[String: Any]] else { return false }
                return alerts.contains {
                    ($0["scenario"] as? String) == "portcullis/app"
                        && (($0["source"] as? [String: Any])?["value"] as? String) == address
                }
            }
            try files.append(Array(repeating: "failed from 198.18.0.9", count: 3))
            #expect(try eventually(within: 10) { try maps.lookup(IPAddress("198.18.0.9")!) != nil })
            #expect(try eventually(within: 15) { try alerted("198.18.0.9") }, "the ban is an alert")
            // The default profile made it a 4 h ban; the bouncer enforces it as crowdsec/crowdsec.
            #expect(try eventually(within: 10) { try crowdsecEntries(maps)["198.18.0.9"] == "crowdsec/crowdsec" })
            #expect(try lapi.cscli(["decisions", "add", "-i", "198.18.0.20", "-d", "10m"]).status == 0)
            #expect(try eventually(within: 10) { try crowdsecEntries(maps)["198.18.0.20"] != nil })

            // The LAPI away until the bouncer has failed to reach it twice.
            lapi.stop()
            try files.append(Array(repeating: "failed from 198.18.0.10", count: 3))
            #expect(
                try eventually(within: 5) { try maps.lookup(IPAddress("198.18.0.10")!) != nil },
                "local banning goes on")
            #expect(
                try eventually(within: 120) {
                    (sample(
                        try scrape(network, ready: ready), #"portcullis_crowdsec_pull_errors_total{kind="unreachable"}"#
                    )
                        ?? 0) >= 2
                }, "the bouncer tried the away LAPI twice")
            let held = try crowdsecEntries(maps)
            #expect(held["198.18.0.20"] != nil && held["198.18.0.9"] != nil, "the decisions stay: \(held)")
            let during = try scrape(network, ready: ready)
            #expect(sample(during, "portcullis_crowdsec_connected") == 0, "\(during)")
            #expect((sample(during, #"portcullis_crowdsec_pull_errors_total{kind="unreachable"}"#) ?? 0) >= 2)
            #expect(sample(during, "portcullis_crowdsec_alert_queue") == 1)
            // The health: the bouncer down (and the pusher, its alert queued), within its 2 s look.
            #expect(
                try eventually(within: 10) {
                    sample(try scrape(network, ready: ready), #"portcullis_companion_up{companion="crowdsec"}"#) == 0
                })
            let degraded = try status()
            #expect(degraded.status == 2, "\(degraded.stdout) \(degraded.stderr)")
            #expect(degraded.stdout.contains("crowdsec cannot reach its server"), "\(degraded.stdout)")
            #expect(sample(try scrape(network, ready: ready), "portcullis_degraded") == 1)
            try lapi.start()
            #expect(try lapi.cscli(["decisions", "add", "-i", "198.18.0.21", "-d", "10m"]).status == 0)
            let back = try secondsUntil(60) { try crowdsecEntries(maps)["198.18.0.21"] != nil }
            print(
                "crowdsec: a decision made after the LAPI's return enforced \(back.map { String(format: "%.2f", $0) } ?? "never") s later"
            )
            #expect(back != nil)
            #expect(try eventually(within: 60) { try alerted("198.18.0.10") }, "the queued alert is pushed")
            let after = try scrape(network, ready: ready)
            #expect((sample(after, "portcullis_crowdsec_resyncs_total") ?? 0) >= 2, "\(after)")
            #expect(sample(after, "portcullis_crowdsec_alerts_pushed_total") == 2)
            #expect(sample(after, "portcullis_crowdsec_alert_queue") == 0)
            #expect(try eventually(within: 10) { try status().status == 0 }, "healthy again once both reach it")
            let healthy = try scrape(network, ready: ready)
            #expect(sample(healthy, #"portcullis_companion_up{companion="crowdsec"}"#) == 1, "\(healthy)")
            #expect(sample(healthy, #"portcullis_companion_up{companion="crowdsec-alerts"}"#) == 1, "\(healthy)")
            let text = stopDaemon(daemon, output)
            #expect(text.contains("no longer degraded after "), "\(text)")
            #expect(daemon.terminationStatus == 0, "\(text)")
            let unreachable = text.split(separator: "\n").filter {
                $0.contains("is unreachable") && $0.contains("retrying")
            }
            #expect(unreachable.count == 1, "one line for the outage, not one per retry: \(unreachable)")
            #expect(text.contains("alerts reach \(lapi.url) again"), "\(text)")
        }
    }

    @Test(
        "CrowdSec bad input: a wrong api_key is one clear error, retried, while the jails ban; alerts with alert_decisions carry Portcullis's ban and its duration"
    )
    func crowdsecWrongKey() throws {
        try withLocalAPI("B") { network, scratch, lapi, files in
            try lapi.addMachine("portcullis-test", password: "test-password-0123456789")
            try files.write(
                crowdsecConfiguration(
                    lapi,
                    [
                        "api_key = \"not-a-key\"", "update_frequency = \"1s\"", "login = \"portcullis-test\"",
                        "password = \"test-password-0123456789\"", "alert_decisions = true",
                    ]))
            let ready = files.directory + "/ready.json"
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                    "--metrics", "127.0.0.1:0", "--ready-file", ready,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(
                try eventually(within: 20) {
                    (sample(
                        try scrape(network, ready: ready), #"portcullis_crowdsec_pull_errors_total{kind="refused"}"#)
                        ?? 0) >= 3
                })
            try files.append(Array(repeating: "failed from 198.18.0.30", count: 3))
            #expect(try eventually(within: 10) { try maps.lookup(IPAddress("198.18.0.30")!) != nil }, "the jail bans")
            // The alert carried the jail's decision: origin crowdsec (an agent's), the jail's 600 s.
            func decision() throws -> [String: Any]? {
                guard let alerts = try lapi.json(["alerts", "list"]) as? [[String: Any]] else { return nil }
                return alerts.lazy.compactMap { ($0["decisions"] as? [[String: Any]])?.first }
                    .first { ($0["value"] as? String) == "198.18.0.30" }
            }
            let pushed = try eventually(within: 15) { try decision() != nil }
            let listed = try lapi.cscli(["alerts", "list", "-o", "json"]).stdout
            #expect(pushed, "\(listed.prefix(2000))")
            let carried = try #require(try decision())
            #expect(carried["origin"] as? String == "crowdsec" && carried["type"] as? String == "ban", "\(carried)")
            #expect(carried["scope"] as? String == "Ip" && carried["scenario"] as? String == "portcullis/app")
            let left = GoDuration.seconds(carried["duration"] as? String ?? "")
            #expect(left.map { $0 > 500 && $0 <= 600 } == true, "\(carried)")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            let refused = linkLines(text, containing: "refused the api_key")
            #expect(refused.count == 1, "one line, not one per retry: \(text)")
            #expect(refused.first?.contains("cscli bouncers add") == true)
        }
    }
}

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec answers no real LAPI gives (a stub serves them): a decision with a bad duration or fields is counted and skipped, the good ones enforced; an answer that is not JSON is one error, and the next full pull recovers"
    )
    func crowdsecMalformedAnswers() throws {
        try withTestNetwork("C") { network, scratch in
            let files = try ConfigurationScratch()
            defer { files.remove() }
            // The real LAPI validates what it stores, so these can only come from a stub: the first
            // full pull has one good decision and two bad ones, the next answer is not JSON, the
            // ones after are empty deltas or (a full pull again) the good decision.
            let stub = files.directory + "/stub.py"
            try """
            import http.server, json, sys
            good = {"duration": "2m", "id": 1, "origin": "cscli", "scenario": "s", "scope": "Ip", "type": "ban", "value": "198.18.0.40"}
            calls = 0
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    global calls
                    calls += 1
                    full = "startup=true" in self.path
                    if calls == 1:
                        body = json.dumps({"new": [good, dict(good, id=2, value="198.18.0.41", duration="forever"), {"id": "3"}], "deleted": None})
                    elif calls == 2:
                        body = "<html>not json</html>"
                    else:
                        body = json.dumps({"new": [good] if full else None, "deleted": None})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                def log_message(self, *args):
                    pass
            http.server.HTTPServer(("127.0.0.1", 8081), Handler).serve_forever()
            """.write(toFile: stub, atomically: true, encoding: .utf8)
            let server = Process()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            server.arguments = ["--net=/run/netns/\(network.receiver)", "--", "/usr/bin/python3", stub]
            try server.run()
            defer {
                // SIGKILL: a child of the test process inherits its blocked SIGTERM.
                kill(server.processIdentifier, SIGKILL)
                server.waitUntilExit()
            }
            try files.write(
                """
                [jail.app]
                source = "file:LOG"

                [crowdsec]
                api_url = "http://127.0.0.1:8081/"
                api_key = "stub"
                update_frequency = 1
                """)
            let ready = files.directory + "/ready.json"
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                    "--metrics", "127.0.0.1:0", "--ready-file", ready,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try eventually(within: 15) { try crowdsecEntries(maps) == ["198.18.0.40": "crowdsec/cscli"] })
            #expect(
                try eventually(within: 15) {
                    let text = try scrape(network, ready: ready)
                    return sample(text, #"portcullis_crowdsec_pull_errors_total{kind="malformed"}"#) == 1
                        && (sample(text, "portcullis_crowdsec_resyncs_total") ?? 0) >= 2
                })
            let metrics = try scrape(network, ready: ready)
            #expect(
                sample(metrics, #"portcullis_crowdsec_decisions_skipped_total{reason="malformed"}"#) == 2, "\(metrics)")
            #expect(try crowdsecEntries(maps) == ["198.18.0.40": "crowdsec/cscli"], "the good one stays through it all")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(
                text.contains("malformed answer: not JSON (21 bytes); the decisions in force stay, retrying"), "\(text)"
            )
        }
    }
}

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec over TLS: a Local API with a self-signed certificate is trusted with ca_cert_path and its decisions enforced; without the CA the certificate is refused in one line and nothing is enforced; insecure_skip_verify reaches it"
    )
    func crowdsecTLS() throws {
        try withLocalAPI("D") { network, scratch, lapi, files in
            let key = try lapi.bouncerKey("portcullis-test")
            #expect(try lapi.cscli(["decisions", "add", "-i", "198.18.0.50", "-d", "10m"]).status == 0)
            // The same Local API, now over HTTPS only.
            lapi.stop()
            try lapi.serveTLS()
            try lapi.start()
            let maps = { () throws -> BanMaps in try BanMaps.open(pinnedIn: scratch.pins) }
            for (keys, enforced) in [
                (["ca_cert_path = \"\(lapi.certificate)\""], true), ([], false),
                (["insecure_skip_verify = true"], true),
            ] {
                try files.write(
                    crowdsecConfiguration(lapi, ["api_key = \"\(key)\"", "update_frequency = 1"] + keys))
                let (daemon, output) = try startDaemon(
                    network,
                    ["--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state"],
                    waitUntilReading: true)
                defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
                var installed = false
                if enforced {
                    installed = try eventually(within: 10) {
                        try crowdsecEntries(try maps())["198.18.0.50"] == "crowdsec/cscli"
                    }
                } else {
                    SystemClock.sleep(nanoseconds: 2_500_000_000)
                }
                let text = stopDaemon(daemon, output)
                #expect(daemon.terminationStatus == 0, "\(text)")
                #expect(installed == enforced, "\(keys): \(text)")
                if !enforced {
                    let refused = linkLines(text, containing: "is unreachable")
                    #expect(refused.count == 1 && refused[0].contains("certificate"), "\(text)")
                }
                // The next run starts from nothing: what this one installed goes.
                let installer = ListInstaller(maps: try maps(), prefix: "crowdsec/")
                _ = try installer.replaceAll([])
                #expect(try crowdsecEntries(try maps()).isEmpty)
            }
        }
    }
}

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec policy (N15): Range decisions 0.0.0.0/0 and ::/0 and Ip decisions 224.0.0.1 and fe80::1 are counted, not enforced; unban lifts a decision's entry here; a daemon started without [crowdsec] removes the decisions' entries, said in one line"
    )
    func crowdsecPolicy() throws {
        try withLocalAPI("q") { network, scratch, lapi, files in
            let key = try lapi.bouncerKey("portcullis-policy")
            let configuration = crowdsecConfiguration(lapi, ["api_key = \"\(key)\"", "update_frequency = \"1s\""])
            try files.write(configuration)
            let ready = files.directory + "/ready.json"
            let socket = files.directory + "/control.sock"
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                "--ready-file", ready, "--control", socket,
            ]
            var (daemon, output) = try startDaemon(
                network, arguments + ["--metrics", "127.0.0.1:0"], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            let filter = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
            func verdict(_ source: String) throws -> XDPVerdict {
                let to = source.contains(":") ? "2001:2::fe" : "198.19.255.254"
                return try filter.testRun(frame: TestFrame.udp(from: IPAddress(source)!, to: IPAddress(to)!)).verdict
            }
            for arguments in [
                ["-r", "0.0.0.0/0"], ["-r", "::/0"], ["-i", "224.0.0.1"], ["-i", "fe80::1"], ["-i", "198.18.0.7"],
                ["-i", "198.18.0.9"],
            ] {
                let added = try lapi.cscli(["decisions", "add", "-d", "10m"] + arguments)
                try #require(added.status == 0, "\(arguments): \(added.stderr)")
            }
            let enforced = try secondsUntil(10) { try verdict("198.18.0.7") == .drop && verdict("198.18.0.9") == .drop }
            #expect(enforced != nil)
            #expect(try verdict("198.18.0.8") == .pass && verdict("2001:2::8") == .pass, "a /0 decision enforced")
            #expect(try crowdsecEntries(maps) == ["198.18.0.7": "crowdsec/cscli", "198.18.0.9": "crowdsec/cscli"])
            let metrics = try scrape(network, ready: ready)
            #expect(
                sample(metrics, #"portcullis_crowdsec_decisions_skipped_total{reason="too_wide"}"#) == 2, "\(metrics)")
            #expect(sample(metrics, #"portcullis_crowdsec_decisions_skipped_total{reason="never_bannable"}"#) == 2)

            // The operator lifts a decision here (until the Local API sends it again).
            let unban = try runProcess(
                Products.cli, ["unban", "198.18.0.7", "--control", socket, "--pin-dir", scratch.path])
            #expect(
                unban.status == 0 && unban.stderr.contains("lifted crowdsec/cscli"), "\(unban.stdout) \(unban.stderr)")
            #expect(try verdict("198.18.0.7") == .pass)

            // Without [crowdsec], a restart removes what the Local API had installed.
            _ = stopDaemon(daemon, output)
            #expect(try crowdsecEntries(maps) == ["198.18.0.9": "crowdsec/cscli"])
            try files.write(String(configuration[..<configuration.range(of: "[crowdsec]")!.lowerBound]))
            (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            #expect(try secondsUntil(10) { try crowdsecEntries(maps).isEmpty } != nil)
            #expect(try verdict("198.18.0.9") == .pass)
            let text = stopDaemon(daemon, output)
            #expect(text.contains("no bouncer in [crowdsec]: 1 entries of CrowdSec's decisions removed"), "\(text)")
        }
    }
}
