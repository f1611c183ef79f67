// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisCrowdSec
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall
import XDPTesting

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec by client certificate alone (no api_key, no password): the bouncer's (OU bouncer-ou) pulls the decisions, the machine's (OU agent-ou) pushes a jail's ban whose decision comes back; a certificate of another OU is refused in one line naming the certificate, not the api_key"
    )
    func crowdsecCertificateOnly() throws {
        try withLocalAPI("K") { network, scratch, lapi, files in
            #expect(try lapi.cscli(["decisions", "add", "-i", "198.18.0.70", "-d", "10m"]).status == 0)
            let bouncer = try lapi.clientCertificate("portcullis-bouncer", unit: CrowdSecLAPI.bouncerOU)
            let agent = try lapi.clientCertificate("portcullis-agent", unit: CrowdSecLAPI.agentOU)
            let stranger = try lapi.clientCertificate("portcullis-stranger", unit: "other-ou")
            lapi.stop()
            try lapi.serveTLS()
            try lapi.verifyClientCertificates()
            try lapi.start()
            let maps = { () throws -> BanMaps in try BanMaps.open(pinnedIn: scratch.pins) }
            let control = files.directory + "/control"
            func run(_ keys: [String], _ body: () throws -> Void) throws -> String {
                try files.write(
                    crowdsecConfiguration(
                        lapi, ["ca_cert_path = \"\(lapi.certificate)\"", "update_frequency = 1"] + keys))
                let (daemon, output) = try startDaemon(
                    network,
                    [
                        "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                        "--control", control,
                    ], waitUntilReading: true)
                defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
                try body()
                let text = stopDaemon(daemon, output)
                #expect(daemon.terminationStatus == 0, "\(text)")
                // The next run starts from nothing: what this one installed goes.
                _ = try ListInstaller(maps: try maps(), prefix: "crowdsec/").replaceAll([])
                return text
            }
            let accepted = try run(
                [
                    "cert_path = \"\(bouncer.cert)\"", "key_path = \"\(bouncer.key)\"",
                    "alert_cert_path = \"\(agent.cert)\"", "alert_key_path = \"\(agent.key)\"",
                ]
            ) {
                #expect(
                    try eventually(within: 15) { try crowdsecEntries(try maps())["198.18.0.70"] == "crowdsec/cscli" },
                    "the bouncer's certificate pulls")
                try files.append(Array(repeating: "failed from 198.18.0.71", count: 3))
                // The alert, made a 4 h ban by the default profile, comes back through the bouncer.
                #expect(
                    try eventually(within: 30) {
                        try crowdsecEntries(try maps())["198.18.0.71"] == "crowdsec/crowdsec"
                    }, "the machine's certificate logs in and pushes")
            }
            #expect(accepted.contains("as the client certificate \(agent.cert)"), "\(accepted)")
            #expect(linkLines(accepted, containing: "refused the").isEmpty, "\(accepted)")
            // The Local API made both from the certificates' CNs.
            let bouncers = try lapi.cscli(["bouncers", "list", "-o", "json"]).stdout
            #expect(bouncers.contains("portcullis-bouncer@127.0.0.1"), "\(bouncers)")
            let machines = try lapi.cscli(["machines", "list", "-o", "json"]).stdout
            #expect(machines.contains("portcullis-agent@127.0.0.1"), "\(machines)")

            let refused = try run(
                [
                    "cert_path = \"\(stranger.cert)\"", "key_path = \"\(stranger.key)\"",
                    "alert_cert_path = \"\(stranger.cert)\"", "alert_key_path = \"\(stranger.key)\"",
                ]
            ) {
                try files.append(Array(repeating: "failed from 198.18.0.72", count: 3))
                let both = try eventually(within: 20) {
                    let status = try runProcess(Products.cli, ["status", "--control", control]).stdout
                    return status.components(separatedBy: "refused the client certificate \(stranger.cert)").count == 3
                }
                #expect(both, "the bouncer and the machine both refused")
                #expect(try crowdsecEntries(try maps()).isEmpty)
            }
            let bouncerLines = linkLines(
                refused, containing: "refused the client certificate \(stranger.cert) (HTTP 403")
            #expect(bouncerLines.count == 2, "one line each, not one per retry: \(refused)")
            #expect(bouncerLines.contains { $0.contains("bouncers_allowed_ou") }, "\(refused)")
            #expect(bouncerLines.contains { $0.contains("agents_allowed_ou") }, "\(refused)")
            #expect(!refused.contains("api_key"), "\(refused)")
        }
    }

    @Test(
        "CrowdSec alerts across a restart: with the Local API away, 5 bans and alert_queue = 2 drop 3, said in a line; the 2 queued are kept in the state directory at the stop and pushed by the next start once the Local API is back"
    )
    func crowdsecAlertsKept() throws {
        try withLocalAPI("L") { network, scratch, lapi, files in
            try lapi.addMachine("portcullis-test", password: "test-password-0123456789")
            try files.write(
                crowdsecConfiguration(
                    lapi,
                    ["login = \"portcullis-test\"", "password = \"test-password-0123456789\"", "alert_queue = 2"]))
            let state = files.directory + "/state"
            let kept = state + "/crowdsec-alerts.json"
            let ready = files.directory + "/ready.json"
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", state, "--metrics", "127.0.0.1:0",
                "--ready-file", ready,
            ]
            let addresses = (80..<85).map { "198.18.0.\($0)" }
            lapi.stop()
            var (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            for address in addresses {
                try files.append(Array(repeating: "failed from \(address)", count: 3))
                #expect(try eventually(within: 10) { try maps.lookup(IPAddress(address)!) != nil })
            }
            #expect(
                try eventually(within: 10) {
                    let text = try scrape(network, ready: ready)
                    return sample(text, #"portcullis_crowdsec_alerts_dropped_total{reason="queue_full"}"#) == 3
                        && sample(text, "portcullis_crowdsec_alert_queue") == 2
                })
            let first = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(first)")
            let full = linkLines(first, containing: "alert queue is")
            #expect(full.first?.contains("the alert queue is full (alert_queue = 2;") == true, "\(first)")
            #expect(full.last?.contains("3 since the start") == true, "\(first)")
            #expect(full.count <= 2, "the first at once, the rest at most once a minute (and at the stop): \(full)")
            #expect(first.contains("crowdsec: 2 queued alert(s) kept in \(kept) for the next start"), "\(first)")
            #expect(FileManager.default.fileExists(atPath: kept))

            try lapi.start()
            (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            func alerted() throws -> [String] {
                guard let alerts = try lapi.json(["alerts", "list"]) as? [[String: Any]] else { return [] }
                return alerts.filter { ($0["scenario"] as? String) == "portcullis/app" }.compactMap {
                    ($0["source"] as? [String: Any])?["value"] as? String
                }
            }
            #expect(try eventually(within: 30) { try alerted().count == 2 }, "the kept alerts are pushed")
            #expect(Set(try alerted()).isSubset(of: Set(addresses)))
            #expect(!FileManager.default.fileExists(atPath: kept), "read once")
            let second = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(second)")
            #expect(second.contains("crowdsec: 2 alert(s) kept at the last stop queued again"), "\(second)")
            #expect(!second.contains("queued alert(s) kept in"), "nothing left at this stop: \(second)")
        }
    }
}
