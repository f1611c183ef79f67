// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall

/// portcullisd as hosts of a fleet: a real NATS server with JetStream (Debian's nats-server) in a
/// hub namespace, and one daemon per host namespace, each with its own interface, pins and state.
/// A suite of its own beside the other process suites; its tests run one after another (they share
/// the CPUs).
@Suite("portcullisd in a fleet", .enabled(if: Privileges.runnable), .serialized)
struct FleetProcessTests: DaemonProcessSuite {}

/// One host of a test fleet: its files, pins and control socket.
struct FleetHost {
    let name: String
    let namespace: String
    let files: ConfigurationScratch
    let pins: ScratchPinDirectory
    var socket: String { files.directory + "/control.sock" }
    var ready: String { files.directory + "/ready.json" }

    func cli(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(Products.cli, arguments + ["--control", socket, "--pin-dir", pins.path])
    }

    /// A command of the maps alone (`blocklist`).
    func local(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(Products.cli, arguments + ["--pin-dir", pins.path])
    }

    /// A command of the control socket alone (`status`, `reload`).
    func control(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(Products.cli, arguments + ["--control", socket])
    }

    /// `portcullis status --json`'s fleet object.
    func fleetStatus() throws -> [String: Any] {
        let result = try control(["status", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return try #require(object?["fleet"] as? [String: Any], "\(result.stdout) \(result.stderr)")
    }
}

extension DaemonProcessSuite {
    /// A jail reading `LOG` (and, with `brief`, a second one whose bans last a second) and `[fleet]`.
    func fleetConfiguration(host: String, server: NATSServer, _ keys: [String] = []) -> String {
        """
        [jail.app]
        source = "file:LOG"
        failregex = '^\\s*failed from <HOST>$'
        maxretry = 3
        bantime = 600

        [jail.brief]
        source = "file:LOG"
        failregex = '^\\s*brief from <HOST>$'
        maxretry = 3
        bantime = 1

        [fleet]
        servers = ["\(server.url)"]
        host = "\(host)"
        allow_plaintext = true
        reconnect_wait = 0.25
        \(keys.joined(separator: "\n"))
        """
    }

    /// Runs `body` with a fleet network of `count` hosts, a started NATS server in its hub and
    /// each host's scratch files; removes all of it after (nothing without nats-server, outside CI).
    func withFleet(
        _ tag: String, hosts count: Int, serverConfiguration: String = "", serverFiles: [String] = [],
        _ body: (FleetNetwork, NATSServer, [FleetHost]) throws -> Void
    ) throws {
        guard NATSServer.available() else { return }
        try Privileges.require()
        let network = try FleetNetwork(tag, hosts: count)
        defer { network.remove() }
        let server = try NATSServer(
            namespace: network.hub, address: FleetNetwork.hubAddress, configuration: serverConfiguration)
        defer { server.remove() }
        for file in serverFiles { try server.add(file: file) }
        try server.start()
        var hosts: [FleetHost] = []
        defer {
            for host in hosts {
                host.files.remove()
                host.pins.remove()
            }
        }
        for index in 0..<count {
            hosts.append(
                FleetHost(
                    name: String(UnicodeScalar(UInt8(ascii: "a") + UInt8(index))), namespace: network.hosts[index],
                    files: try ConfigurationScratch(), pins: ScratchPinDirectory("fleet-\(tag)\(index)")))
        }
        try body(network, server, hosts)
    }

    /// Starts host `host`'s daemon with its configuration.
    func startHost(_ host: FleetHost, metrics: Bool = false) throws -> (Process, Pipe) {
        try startDaemon(
            in: host.namespace, interface: host.namespace,
            [
                "--config", host.files.path, "--pin-dir", host.pins.path, "--state-dir",
                host.files.directory + "/state",
                "--control", host.socket, "--ready-file", host.ready,
            ] + (metrics ? ["--metrics", "127.0.0.1:0"] : []), waitUntilReading: true)
    }

    /// A host's fleet lines of its log (what the test run shows of each daemon).
    func printFleetLines(_ host: FleetHost, _ log: String) {
        for line in log.split(separator: "\n") where line.contains("fleet") { print("host \(host.name): \(line)") }
    }

    /// The list layer's entries of `fleet/` origins in force: network → origin.
    func fleetEntries(_ maps: BanMaps) throws -> [String: String] {
        try originEntries(maps, prefix: "fleet/")
    }
}

extension FleetProcessTests {
    @Test(
        "fleet: a ban on host a (by its jail, and by portcullis ban) is in b's and c's maps as fleet/a, an unban on a lifts it there, nothing echoes; the testbed's attack from one source a banned is dropped on b's interface; the server killed for 30 s while a bans 1,000: a's bans are immediate, b and c hold all 1,000 soon after the server's return; b's queue of 10 keeps 10 of the 15 bans it made meanwhile and counts 5; a server back without its store gets the bucket made again and a's bans put again"
    )
    func fleetSharesBans() throws {
        try withFleet("E", hosts: 3) { network, server, hosts in
            var daemons: [(Process, Pipe)] = []
            defer {
                for (index, (daemon, output)) in daemons.enumerated() where daemon.isRunning {
                    printFleetLines(hosts[index], stopDaemon(daemon, output))
                }
            }
            for host in hosts {
                // b's queue holds 10 changes (the outage below fills it).
                try host.files.write(
                    fleetConfiguration(host: host.name, server: server, host.name == "b" ? ["queue = 10"] : []))
                daemons.append(try startHost(host))
            }
            let maps = try hosts.map { try BanMaps.open(pinnedIn: $0.pins.pins) }
            let others = [maps[1], maps[2]]
            func everywhere(_ network: String, within limit: Double = 10) throws -> Double? {
                try secondsUntil(limit) { try others.allSatisfy { try fleetEntries($0)[network] == "fleet/a" } }
            }
            func nowhere(_ networks: [String], within limit: Double = 10) throws -> Double? {
                try secondsUntil(limit) {
                    try others.allSatisfy { map in
                        let entries = try fleetEntries(map)
                        return networks.allSatisfy { entries[$0] == nil }
                    }
                }
            }
            // By a's jail, from log lines.
            try hosts[0].files.append(Array(repeating: "failed from 198.18.0.7", count: 3))
            let byJail = try everywhere("198.18.0.7")
            print("fleet: a's jail ban on b and c after \(byJail.map { String(format: "%.3f", $0) } ?? "never") s")
            try #require(byJail != nil, "198.18.0.7 never reached b and c")
            // By portcullis ban through a's control socket: an address and a network.
            let banned = try hosts[0].cli(["ban", "198.18.0.8", "198.18.1.0/24"])
            try #require(banned.status == 0, "\(banned.stderr)")
            #expect(try everywhere("198.18.0.8") != nil && everywhere("198.18.1.0/24") != nil)
            // Nothing echoes: a holds no fleet entry, b and c published nothing, a received nothing.
            #expect(try fleetEntries(maps[0]).isEmpty)
            #expect(try hosts[1].fleetStatus()["published"] as? Int == 0)
            #expect(try hosts[2].fleetStatus()["published"] as? Int == 0)
            #expect(try hosts[0].fleetStatus()["received"] as? Int == 0)
            #expect(try hosts[0].fleetStatus()["published"] as? Int == 3)
            // An unban on b lifts a's entry on b only, and says how to keep a's out; an unban on a
            // lifts them on b and c.
            let note = try hosts[1].cli(["unban", "198.18.0.8"])
            #expect(
                note.status == 0 && note.stderr.contains("lifted fleet/a's entry here")
                    && note.stderr.contains("portcullis fleet ignore a"), "\(note.stderr)")
            #expect(try fleetEntries(maps[1])["198.18.0.8"] == nil && fleetEntries(maps[2])["198.18.0.8"] == "fleet/a")
            let unbanned = try hosts[0].cli(["unban", "198.18.0.7", "198.18.0.8", "198.18.1.0/24"])
            try #require(unbanned.status == 0, "\(unbanned.stderr)")
            #expect(try nowhere(["198.18.0.7", "198.18.0.8", "198.18.1.0/24"]) != nil)

            // The testbed's attack from one source, banned on a, is dropped on b's interface.
            try hosts[0].files.append(Array(repeating: "failed from 198.18.0.1", count: 3))
            try #require(try everywhere("198.18.0.1") != nil)
            let sent = try network.attack(
                1, testbed: Products.directory + "/portcullis-testbed", rate: 2000, seconds: 1)
            let attacker = try IPNetwork(parsing: "198.18.0.1")
            func droppedOnB() throws -> UInt64 {
                try maps[1].listEntries().first { $0.network == attacker }?.dropped ?? 0
            }
            let dropped = try secondsUntil(10) { try droppedOnB() >= UInt64(sent) }
            let counted = try droppedOnB()
            print("fleet: the testbed's attack on b: \(sent) frames sent, \(counted) dropped by a's ban")
            #expect(sent > 0 && dropped != nil, "b dropped \(counted) of the \(sent) frames sent")

            // The server killed until every host has seen it gone; a bans 1,000 meanwhile.
            server.kill()
            let addresses = (0..<1000).map { "198.18.\(20 + $0 / 250).\($0 % 250 + 1)" }
            let during = try hosts[0].cli(["ban"] + addresses)
            try #require(during.status == 0, "\(during.stderr)")
            #expect(
                try addresses.allSatisfy { try maps[0].lookup(IPAddress($0)!) != nil }, "a's own bans wait for nothing")
            #expect(try hosts[0].fleetStatus()["queued"] as? Int == 1000)
            // b bans 15 meanwhile: its queue keeps 10, the 5 beyond are counted.
            let fromB = (1...15).map { "198.18.30.\($0)" }
            #expect(try hosts[1].cli(["ban"] + fromB).status == 0)
            let queuedB = try hosts[1].fleetStatus()
            #expect(queuedB["queued"] as? Int == 10 && queuedB["dropped"] as? Int == 5, "\(queuedB)")
            let seen = try secondsUntil(60) {
                try hosts.allSatisfy { try $0.fleetStatus()["connected"] as? Bool == false }
            }
            #expect(seen != nil, "every host says it is cut off from the server")
            try server.start()
            let back = try secondsUntil(30) {
                try others.allSatisfy { map in
                    let entries = try fleetEntries(map)
                    return addresses.allSatisfy { entries[$0] == "fleet/a" }
                }
            }
            print(
                "fleet: b and c held all 1,000 bans \(back.map { String(format: "%.2f", $0) } ?? "never") s after the server's return"
            )
            #expect(back != nil, "b and c did not get a's 1,000 bans after the outage")
            let fromBOnA = try secondsUntil(10) {
                let entries = try fleetEntries(maps[0])
                return fromB.prefix(10).allSatisfy { entries[$0] == "fleet/b" }
            }
            #expect(fromBOnA != nil, "a did not get b's 10 queued bans")
            #expect(try fromB.suffix(5).allSatisfy { try fleetEntries(maps[0])[$0] == nil })
            #expect(try hosts[0].fleetStatus()["queued"] as? Int == 0)

            // A server back without its store: a finds the bucket gone, makes it again and puts its
            // bans in force again; b and c hold them (and a's next ban).
            server.kill()
            try server.wipeStore()
            try server.start()
            let republished = try secondsUntil(30) {
                (try hosts[0].fleetStatus()["republished"] as? Int ?? 0) >= 1000
            }
            let statusA = try hosts[0].fleetStatus()
            #expect(republished != nil, "a did not put its bans again: \(statusA)")
            // b and c read the bucket made again (whole) after their reconnection, then a's puts.
            usleep(1_000_000)
            let restored = try secondsUntil(30) {
                try others.allSatisfy { map in
                    let entries = try fleetEntries(map)
                    return addresses.allSatisfy { entries[$0] == "fleet/a" }
                }
            }
            print(
                "fleet: after a wiped store, a put its bans again "
                    + "\(republished.map { String(format: "%.2f", $0) } ?? "never") s after the server's return, "
                    + "b and c held them \(restored.map { String(format: "%.2f", $0 + 1) } ?? "never") s after that")
            #expect(restored != nil, "a's bans were not put again into the bucket made again")
            let afterWipe = try hosts[0].cli(["ban", "198.18.0.90"])
            try #require(afterWipe.status == 0, "\(afterWipe.stderr)")
            #expect(try everywhere("198.18.0.90", within: 30) != nil)
            let logs = daemons.map { stopDaemon($0.0, $0.1) }
            // No host failed to write what it learned.
            for log in logs {
                #expect(!log.contains("fatal") && !log.contains("the maps refused"), "\(log)")
            }
        }
    }

    @Test(
        "fleet: host c started after 100,000 bans were made on a converges to exactly those still in force; the 5,000 that ended are skipped (by c, or by a when they ended in its queue); a reload that changes c's [fleet] reads the bucket again and holds the same"
    )
    func fleetLateJoiner() throws {
        try withFleet("F", hosts: 2) { _, server, hosts in
            let (a, c) = (hosts[0], hosts[1])
            try a.files.write(fleetConfiguration(host: "a", server: server))
            try c.files.write(fleetConfiguration(host: "c", server: server))
            let (daemonA, outputA) = try startHost(a)
            defer { if daemonA.isRunning { _ = stopDaemon(daemonA, outputA) } }
            // 95,000 of 600 s (half IPv4, half IPv6) and 5,000 of 1 s, three lines each.
            var long: [String] = []
            for index in 0..<47_500 { long.append("198.19.\(index / 256).\(index % 256)") }
            for index in 0..<47_500 { long.append("2001:2:0:1::" + String(index + 1, radix: 16)) }
            var brief: [String] = []
            for index in 0..<2500 { brief.append("198.18.\(128 + index / 256).\(index % 256)") }
            for index in 0..<2500 { brief.append("2001:2:0:2::" + String(index + 1, radix: 16)) }
            var lines: [String] = []
            lines.reserveCapacity(300_000)
            for _ in 0..<3 {
                lines += long.map { "failed from " + $0 }
                lines += brief.map { "brief from " + $0 }
            }
            try a.files.append(lines)
            // Put, or (a brief ban that ended while it waited in a's queue) dropped as ended.
            func done() throws -> Int {
                let status = try a.fleetStatus()
                return (status["published"] as? Int ?? 0) + (status["dropped"] as? Int ?? 0)
            }
            let published = try secondsUntil(120) { try done() >= 100_000 }
            print(
                "fleet: a banned and published 100,000 in \(published.map { String(format: "%.2f", $0) } ?? "never") s")
            let status = try a.fleetStatus()
            try #require(published != nil, "a did not publish its 100,000 bans: \(status)")
            usleep(2_000_000)  // the brief bans end
            let started = SystemClock.monotonicSeconds()
            let (daemonC, outputC) = try startHost(c, metrics: true)
            defer { if daemonC.isRunning { _ = stopDaemon(daemonC, outputC) } }
            let mapsC = try BanMaps.open(pinnedIn: c.pins.pins)
            let converged = try secondsUntil(60) { try fleetEntries(mapsC).count == 95_000 }
            let took = SystemClock.monotonicSeconds() - started
            print(
                "fleet: c converged to 95,000 bans \(converged == nil ? "never" : String(format: "%.2f", took)) s after its start"
            )
            let held = try fleetEntries(mapsC).count
            try #require(converged != nil, "c holds \(held) fleet bans, not 95,000")
            let entries = try fleetEntries(mapsC)
            #expect(long.allSatisfy { entries[$0] == "fleet/a" })
            #expect(brief.allSatisfy { entries[$0] == nil })
            let scrape = try scrape(in: c.namespace, ready: c.ready)
            // Each brief ban was skipped by c as ended, or never put by a.
            let droppedOnA = try a.fleetStatus()["dropped"] as? Int ?? 0
            let skippedOnC = sample(scrape, "portcullis_fleet_skipped_total{reason=\"ended\"}") ?? 0
            #expect(Int(skippedOnC) + droppedOnA == 5000, "c skipped \(skippedOnC), a dropped \(droppedOnA)")
            #expect(sample(scrape, "portcullis_fleet_bans") == 95_000)
            // A reload that changes [fleet] replaces c's node: it reads the bucket again, and holds
            // the same bans.
            try c.files.write(fleetConfiguration(host: "c", server: server, ["queue = 5000"]))
            let reloaded = try c.control(["reload"])
            #expect(reloaded.status == 0, "\(reloaded.stdout) \(reloaded.stderr)")
            #expect(try secondsUntil(30) { try (c.fleetStatus()["connected"] as? Bool) == true } != nil)
            #expect(try secondsUntil(30) { try c.fleetStatus()["bans"] as? Int == 95_000 } != nil)
            #expect(try fleetEntries(mapsC).count == 95_000)
            let log = stopDaemon(daemonC, outputC)
            for line in log.split(separator: "\n") where line.contains("fleet: read bucket") { print(line) }
            #expect(log.contains("SIGHUP: fleet: host c shares its bans"), "\(log.suffix(2000))")
        }
    }

    /// The example account of etc/nats/ (docs/fleet.md).
    static var exampleAccounts: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/etc/nats/fleet-accounts.conf"
    }

    @Test(
        "fleet bad input: with the example account, a host cannot put another's key; a key that is not an address and a value that is not a ban (or names another host) are counted and skipped; a server that refuses the credentials is said once and the daemon bans on alone; refused on a reconnection, the daemon connects again once they are taken"
    )
    func fleetBadInput() throws {
        try withFleet(
            "G", hosts: 3, serverConfiguration: "include \"fleet-accounts.conf\"", serverFiles: [Self.exampleAccounts]
        ) { _, server, hosts in
            let (a, b, c) = (hosts[0], hosts[1], hosts[2])
            try a.files.write(
                fleetConfiguration(host: "a", server: server, ["user = \"a\"", "password = \"change-me-a\""]))
            try b.files.write(fleetConfiguration(host: "b", server: server, ["user = \"b\"", "password = \"wrong\""]))
            let (daemonA, outputA) = try startHost(a, metrics: true)
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            let mapsA = try BanMaps.open(pinnedIn: a.pins.pins)
            let connected = try secondsUntil(10) { try a.fleetStatus()["connected"] as? Bool == true }
            try #require(connected != nil, "a did not connect with the example account's user a")
            // As user b (its own password): a's key is refused, b's keys go in.
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            func value(_ host: String) -> String {
                "{\"end\":\(now + 600_000),\"at\":\(now),\"jail\":\"app\",\"host\":\"\(host)\",\"level\":0}"
            }
            let forged = try server.put(
                bucket: "portcullis-bans", key: "a.198.18.0.60", value: value("a"), user: "b", password: "change-me-b")
            #expect(forged != nil, "user b put a key of host a")
            for (key, text) in [
                ("b.198.18.0.62", value("b")), ("b.not-an-address", value("b")), ("b.198.18.0.61", "garbage"),
                ("b.198.18.0.63", value("c")),
            ] {
                let put = try server.put(
                    bucket: "portcullis-bans", key: key, value: text, user: "b", password: "change-me-b")
                #expect(put == nil, "user b could not put \(key): \(put ?? "")")
            }
            #expect(try secondsUntil(10) { try fleetEntries(mapsA)["198.18.0.62"] == "fleet/b" } != nil)
            let metrics = try scrape(in: a.namespace, ready: a.ready)
            #expect(sample(metrics, "portcullis_fleet_skipped_total{reason=\"key\"}") == 1, "\(metrics)")
            #expect(sample(metrics, "portcullis_fleet_skipped_total{reason=\"malformed\"}") == 2)
            let entries = try fleetEntries(mapsA)
            #expect(entries["198.18.0.60"] == nil && entries["198.18.0.61"] == nil && entries["198.18.0.63"] == nil)

            // b's password is refused: one line, and its jail bans on alone.
            let (daemonB, outputB) = try startHost(b)
            let mapsB = try BanMaps.open(pinnedIn: b.pins.pins)
            try b.files.append(Array(repeating: "failed from 198.18.0.9", count: 3))
            #expect(try secondsUntil(10) { try mapsB.lookup(IPAddress("198.18.0.9")!) != nil } != nil)
            usleep(3_000_000)  // several tries to connect
            #expect(try b.fleetStatus()["connected"] as? Bool == false)
            let log = stopDaemon(daemonB, outputB)
            printFleetLines(b, log)
            let refusals = linkLines(log, containing: "refused this host's credentials")
            #expect(refusals.count == 1, "\(log)")
            #expect(log.contains("banning goes on alone"), "\(log)")

            // A host whose user may not put its keys (c with b's user): its puts are refused,
            // said once and counted, and it bans on.
            try c.files.write(
                fleetConfiguration(host: "c", server: server, ["user = \"b\"", "password = \"change-me-b\""]))
            let (daemonC, outputC) = try startHost(c)
            let mapsC = try BanMaps.open(pinnedIn: c.pins.pins)
            for address in ["198.18.0.11", "198.18.0.12"] {
                try c.files.append(Array(repeating: "failed from \(address)", count: 3))
                #expect(try secondsUntil(10) { try mapsC.lookup(IPAddress(address)!) != nil } != nil)
                usleep(200_000)
            }
            let counted = try secondsUntil(30) {
                try (c.fleetStatus()["queued"] as? Int) == 0
            }
            #expect(counted != nil)
            #expect(try c.fleetStatus()["published"] as? Int == 0)
            let said = stopDaemon(daemonC, outputC)
            printFleetLines(c, said)
            #expect(
                said.split(separator: "\n").filter { $0.contains("the server refused") }.count == 1
                    && said.contains("$KV.portcullis-bans.c.>"), "\(said)")
            #expect(try fleetEntries(mapsA)["198.18.0.11"] == nil)

            // a's password changed on the server: nats.c's reconnection is refused and closes the
            // connection for good; a says so, goes on alone, and connects again once it is back.
            let accounts = server.directory + "/fleet-accounts.conf"
            let original = try String(contentsOfFile: accounts, encoding: .utf8)
            server.kill()
            try original.replacingOccurrences(of: "change-me-a", with: "changed")
                .write(toFile: accounts, atomically: true, encoding: .utf8)
            try server.start()
            let refused = try secondsUntil(30) {
                let status = try a.fleetStatus()
                return status["connected"] as? Bool == false
                    && (status["last_error"] as? String ?? "").contains("refused this host's credentials")
            }
            let whenRefused = try a.fleetStatus()
            #expect(refused != nil, "\(whenRefused)")
            server.kill()
            try original.write(toFile: accounts, atomically: true, encoding: .utf8)
            try server.start()
            #expect(try secondsUntil(30) { try a.fleetStatus()["connected"] as? Bool == true } != nil)
            let before = try a.fleetStatus()["published"] as? Int ?? 0
            try a.files.append(Array(repeating: "failed from 198.18.0.13", count: 3))
            #expect(try secondsUntil(10) { (try a.fleetStatus()["published"] as? Int ?? 0) > before } != nil)
        }
    }

    @Test(
        "fleet: with share_crowdsec, a CrowdSec decision host a's bouncer enforces is put, in b's maps as fleet/a; its deletion lifts it there"
    )
    func fleetSharesCrowdSec() throws {
        guard CrowdSecLAPI.available() else { return }
        try withFleet("H", hosts: 2) { _, server, hosts in
            let (a, b) = (hosts[0], hosts[1])
            let lapi = try CrowdSecLAPI(namespace: a.namespace)
            defer { lapi.remove() }
            try lapi.start()
            let key = try lapi.bouncerKey("portcullis-fleet")
            try a.files.write(
                fleetConfiguration(host: "a", server: server, ["share_crowdsec = true"])
                    + "\n[crowdsec]\napi_url = \"\(lapi.url)\"\napi_key = \"\(key)\"\nupdate_frequency = \"1s\"\n")
            try b.files.write(fleetConfiguration(host: "b", server: server))
            let (daemonA, outputA) = try startHost(a)
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            let (daemonB, outputB) = try startHost(b)
            defer { if daemonB.isRunning { printFleetLines(b, stopDaemon(daemonB, outputB)) } }
            let mapsB = try BanMaps.open(pinnedIn: b.pins.pins)
            let added = try lapi.cscli(["decisions", "add", "-i", "198.18.0.70", "-d", "10m"])
            try #require(added.status == 0, "\(added.stderr)")
            let shared = try secondsUntil(15) { try fleetEntries(mapsB)["198.18.0.70"] == "fleet/a" }
            print("fleet: a CrowdSec decision on b after \(shared.map { String(format: "%.2f", $0) } ?? "never") s")
            #expect(shared != nil)
            let deleted = try lapi.cscli(["decisions", "delete", "-i", "198.18.0.70"])
            try #require(deleted.status == 0, "\(deleted.stderr)")
            #expect(try secondsUntil(15) { try fleetEntries(mapsB)["198.18.0.70"] == nil } != nil)
        }
    }

    @Test(
        "fleet limits: a network a blocklist holds is left to it and installed once the list goes; a bucket that takes no value this large rejects the puts, said once and counted"
    )
    func fleetLimits() throws {
        try withFleet("I", hosts: 3) { _, server, hosts in
            let (a, b, c) = (hosts[0], hosts[1], hosts[2])
            // c's bucket, made first, takes values of 16 bytes at most (a ban's is about 80).
            let created = try server.create(bucket: "tiny", maxValueSize: 16)
            try #require(created == nil, "\(created ?? "")")
            try a.files.write(fleetConfiguration(host: "a", server: server))
            try b.files.write(fleetConfiguration(host: "b", server: server))
            let (daemonA, outputA) = try startHost(a)
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            let (daemonB, outputB) = try startHost(b)
            let mapsA = try BanMaps.open(pinnedIn: a.pins.pins)
            // A blocklist on a holds 198.18.0.40; b bans it: a leaves it to the list, then, the list
            // unloaded, installs it as fleet/b.
            let list = a.files.directory + "/list.txt"
            try "198.18.0.40\n".write(toFile: list, atomically: true, encoding: .utf8)
            #expect(try a.local(["blocklist", "load", "held", list]).status == 0)
            #expect(try b.cli(["ban", "198.18.0.40"]).status == 0)
            #expect(try secondsUntil(10) { (try a.fleetStatus()["received"] as? Int ?? 0) >= 1 } != nil)
            #expect(try originEntries(mapsA, prefix: "list:")["198.18.0.40"] == "list:held")
            #expect(try fleetEntries(mapsA)["198.18.0.40"] == nil)
            #expect(try a.local(["blocklist", "unload", "held"]).status == 0)
            let taken = try secondsUntil(10) { try fleetEntries(mapsA)["198.18.0.40"] == "fleet/b" }
            print(
                "fleet: a network a list held installed \(taken.map { String(format: "%.2f", $0) } ?? "never") s after the list went"
            )
            #expect(taken != nil)
            _ = stopDaemon(daemonB, outputB)
            // c bans 20 into the tiny bucket: every put rejected, counted, said once; c bans on.
            try c.files.write(fleetConfiguration(host: "c", server: server, ["bucket = \"tiny\""]))
            let (daemonC, outputC) = try startHost(c)
            let more = (1...20).map { "198.18.40.\($0)" }
            #expect(try c.cli(["ban"] + more).status == 0)
            let settled = try secondsUntil(30) {
                let status = try c.fleetStatus()
                return status["queued"] as? Int == 0 && status["dropped"] as? Int == 20
            }
            let status = try c.fleetStatus()
            #expect(settled != nil && status["published"] as? Int == 0, "\(status)")
            let log = stopDaemon(daemonC, outputC)
            printFleetLines(c, log)
            let lines = log.split(separator: "\n").filter { $0.contains("the server rejected") }
            #expect(lines.count == 1 && !log.contains("the server refused"), "\(log)")
        }
    }

    @Test(
        "fleet: a ban that outlasts the bucket's max age (an operator's for good, max_age 10 s) is put again before its key ages out: a host joining after 13 s still gets it"
    )
    func fleetLongBans() throws {
        try withFleet("J", hosts: 2) { _, server, hosts in
            let (a, c) = (hosts[0], hosts[1])
            try a.files.write(fleetConfiguration(host: "a", server: server, ["max_age = 10"]))
            try c.files.write(fleetConfiguration(host: "c", server: server, ["max_age = 10"]))
            let (daemonA, outputA) = try startHost(a)
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            // For good, and a jail's ban of 600 s: both outlast the 10 s the bucket keeps a key.
            #expect(try a.cli(["ban", "198.18.0.50"]).status == 0)
            try a.files.append(Array(repeating: "failed from 198.18.0.51", count: 3))
            #expect(try secondsUntil(10) { (try a.fleetStatus()["published"] as? Int ?? 0) >= 2 } != nil)
            // Past the max age of the first puts: only the puts every 5 s keep the keys.
            usleep(13_000_000)
            #expect(try eventually(within: 10) { (try a.fleetStatus()["republished"] as? Int ?? 0) >= 4 })
            let (daemonC, outputC) = try startHost(c)
            defer { if daemonC.isRunning { printFleetLines(c, stopDaemon(daemonC, outputC)) } }
            let mapsC = try BanMaps.open(pinnedIn: c.pins.pins)
            let got = try secondsUntil(10) {
                let entries = try fleetEntries(mapsC)
                return entries["198.18.0.50"] == "fleet/a" && entries["198.18.0.51"] == "fleet/a"
            }
            let held = try fleetEntries(mapsC)
            #expect(got != nil, "c joining after the max age lacks a's long bans: \(held)")
        }
    }
}

extension FleetProcessTests {
    @Test(
        "fleet policy (N2): host b's 0.0.0.0/0, ::/0, fe80::1, 224.0.0.1 and a flood past max_keys_per_host change nothing on a but its skip counters; a's operator lifts b's entries with unban, blocklist unload and fleet ignore (kept over a restart); a started without [fleet] removes them"
    )
    func fleetPolicy() throws {
        try withFleet("P", hosts: 2) { _, server, hosts in
            let a = hosts[0]
            let limit = 1000
            let configuration = fleetConfiguration(host: "a", server: server, ["max_keys_per_host = \(limit)"])
            try a.files.write(configuration)
            var (daemonA, outputA) = try startHost(a, metrics: true)
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            let mapsA = try BanMaps.open(pinnedIn: a.pins.pins)
            try #require(try secondsUntil(10) { try a.fleetStatus()["connected"] as? Bool == true } != nil)
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let value = "{\"end\":\(now + 600_000),\"at\":\(now),\"jail\":\"app\",\"host\":\"b\",\"level\":0}"
            // As any client of the server could (what a host taken over can): the whole Internet,
            // never-bannable addresses, one ordinary address, then more keys than a takes of a host.
            let hostile = ["b.0.0.0.0/0", "b.__/0", "b.0.0.0.0/1", "b.fe80__1", "b.224.0.0.1", "b.240.0.0.1"]
            let flood = (0..<(limit + 100)).map { "b.198.19.\($0 / 250).\($0 % 250 + 1)" }
            let failed = try server.put(
                bucket: "portcullis-bans", entries: (hostile + ["b.198.18.0.80"] + flood).map { ($0, value) })
            try #require(failed == nil, "\(failed ?? "")")
            func skipped(_ reason: String) throws -> Double {
                sample(
                    try scrape(in: a.namespace, ready: a.ready), "portcullis_fleet_skipped_total{reason=\"\(reason)\"}")
                    ?? -1
            }
            let counted = try secondsUntil(30) {
                try skipped("too_wide") == 3 && skipped("never_bannable") == 3 && skipped("over_limit") == 101
            }
            let metrics = try scrape(in: a.namespace, ready: a.ready)
            #expect(counted != nil, "\(metrics)")
            var entries = try fleetEntries(mapsA)
            for network in ["0.0.0.0/0", "::/0", "0.0.0.0/1", "fe80::1", "224.0.0.1", "240.0.0.1"] {
                #expect(entries[network] == nil, "\(network) installed from b")
            }
            #expect(entries.count == limit && entries["198.18.0.80"] == "fleet/b", "\(entries.count) entries of b")

            // One of b's bans lifted here by an unban, all of them by an unload.
            let unban = try a.cli(["unban", "198.18.0.80"])
            #expect(unban.status == 0 && unban.stderr.contains("lifted fleet/b"), "\(unban.stdout) \(unban.stderr)")
            #expect(try fleetEntries(mapsA)["198.18.0.80"] == nil)
            let unload = try a.local(["blocklist", "unload", "fleet/b"])
            #expect(unload.status == 0, "\(unload.stderr)")
            #expect(try fleetEntries(mapsA).isEmpty)

            // fleet unignore/ignore: b's bans in again (a whole read), then out for good, over a restart too.
            #expect(try a.control(["fleet", "unignore", "b"]).status == 0)
            #expect(try secondsUntil(15) { try fleetEntries(mapsA).count == limit } != nil)
            func resyncs() throws -> Double {
                sample(try scrape(in: a.namespace, ready: a.ready), "portcullis_fleet_resyncs_total") ?? -1
            }
            let readsBefore = try resyncs()
            let ignore = try a.control(["fleet", "ignore", "b"])
            #expect(ignore.status == 0 && ignore.stdout.contains("\(limit) of its entries lifted"), "\(ignore.stdout)")
            #expect(try fleetEntries(mapsA).isEmpty)
            // Once the bucket is read again (a whole read does not count its skips again), a new key of b is skipped.
            #expect(try secondsUntil(10) { try resyncs() > readsBefore } != nil)
            try #require(try server.put(bucket: "portcullis-bans", key: "b.198.18.0.81", value: value) == nil)
            #expect(try secondsUntil(10) { try skipped("ignored") >= 1 } != nil)
            printFleetLines(a, stopDaemon(daemonA, outputA))
            (daemonA, outputA) = try startHost(a, metrics: true)
            #expect(try secondsUntil(15) { try a.fleetStatus()["connected"] as? Bool == true } != nil)
            #expect(try secondsUntil(10) { try skipped("ignored") >= Double(limit) } != nil)
            #expect(try fleetEntries(mapsA).isEmpty)

            // b's bans back, then a started without [fleet]: they go, said in one line.
            #expect(try a.control(["fleet", "unignore", "b"]).status == 0)
            #expect(try secondsUntil(15) { try fleetEntries(mapsA).count == limit } != nil)
            _ = stopDaemon(daemonA, outputA)
            try a.files.write(String(configuration[..<configuration.range(of: "[fleet]")!.lowerBound]))
            (daemonA, outputA) = try startHost(a)
            #expect(try fleetEntries(mapsA).isEmpty)
            let log = stopDaemon(daemonA, outputA)
            #expect(log.contains("no [fleet]: \(limit) entries of other hosts' bans removed"), "\(log)")
        }
    }
}
