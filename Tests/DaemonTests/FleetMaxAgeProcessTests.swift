// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall

extension FleetProcessTests {
    @Test(
        "fleet: host a banning 600 s on a bucket host b made keeping keys 10 s says so and puts its long bans again from the bucket's max age: after three rounds (past the first puts' age) host c started then holds them; b counts those puts apart from its propagations"
    )
    func fleetBucketMaxAge() throws {
        try withFleet("M", hosts: 3) { _, server, hosts in
            let (a, b, c) = (hosts[0], hosts[1], hosts[2])
            try b.files.write(fleetConfiguration(host: "b", server: server, ["max_age = 10"]))
            try a.files.write(fleetConfiguration(host: "a", server: server))
            try c.files.write(fleetConfiguration(host: "c", server: server))
            // b makes the bucket: its keys age out after 10 s.
            let (daemonB, outputB) = try startHost(b, metrics: true)
            defer { if daemonB.isRunning { printFleetLines(b, stopDaemon(daemonB, outputB)) } }
            #expect(try secondsUntil(30) { try (b.fleetStatus()["connected"] as? Bool) == true } != nil)
            let (daemonA, outputA) = try startHost(a)
            var logA = ""
            defer { if daemonA.isRunning { printFleetLines(a, stopDaemon(daemonA, outputA)) } }
            #expect(try secondsUntil(30) { try (a.fleetStatus()["connected"] as? Bool) == true } != nil)
            // For good and two of 600 s (they outlast the bucket's 10 s), one of 1 s (it does not).
            #expect(try a.cli(["ban", "198.18.0.60"]).status == 0)
            try a.files.append(
                ["failed from 198.18.0.61", "failed from 198.18.0.62", "brief from 198.18.0.63"].flatMap {
                    Array(repeating: $0, count: 3)
                })
            #expect(try secondsUntil(30) { (try a.fleetStatus()["published"] as? Int ?? 0) >= 4 } != nil)
            // Each put again at 5 to 7.5 s of its last: nine puts again of three keys take three rounds,
            // 15 s at least, past the 10 s the bucket kept the first puts.
            let again = try secondsUntil(90) { (try a.fleetStatus()["republished"] as? Int ?? 0) >= 9 }
            let status = try a.fleetStatus()
            try #require(again != nil, "a did not put its long bans again: \(status)")
            let (daemonC, outputC) = try startHost(c)
            defer { if daemonC.isRunning { printFleetLines(c, stopDaemon(daemonC, outputC)) } }
            let mapsC = try BanMaps.open(pinnedIn: c.pins.pins)
            let long = ["198.18.0.60", "198.18.0.61", "198.18.0.62"]
            let got = try secondsUntil(30) {
                let entries = try fleetEntries(mapsC)
                return long.allSatisfy { entries[$0] == "fleet/a" }
            }
            let held = try fleetEntries(mapsC)
            #expect(got != nil, "c, started after the bucket's max age, lacks a's long bans: \(held)")
            #expect(held["198.18.0.63"] == nil, "\(held)")
            // b: four new bans propagated; the puts again counted apart, not as propagations.
            let metrics = try scrape(in: b.namespace, ready: b.ready)
            #expect(sample(metrics, "portcullis_fleet_propagations_total") == 4, "\(metrics)")
            #expect((sample(metrics, "portcullis_fleet_refreshed_total") ?? 0) >= 6, "\(metrics)")
            #expect(sample(metrics, "portcullis_fleet_bucket_max_age_seconds") == 10, "\(metrics)")
            #expect(sample(metrics, "portcullis_fleet_last_propagation_age_seconds") != nil, "\(metrics)")
            logA = stopDaemon(daemonA, outputA)
            printFleetLines(a, logA)
            let said = logA.split(separator: "\n").filter { $0.contains("keeps keys 10 s with 1 replica(s)") }
            #expect(said.count == 1 && said[0].contains("keep them 600 s with 1"), "\(logA.suffix(3000))")
        }
    }
}
