// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import Testing
import TestSupport
import XDPFirewall

extension CrowdSecProcessTests {
    @Test(
        "CrowdSec at scale (a stand-in Local API): 10,000 decisions of 10,000 origins and of lists, CAPI and cscli-import all enforced; a value whose decisions were deleted one after the other, and one deleted with an unreadable duration, lifted by one delta; a restart with the Local API away counts the last run's entries; 10,000 of 10,000 new origins in their place; a new list still loads"
    )
    func crowdsecOriginsAtScale() throws {
        try withTestNetwork("S") { network, scratch in
            let lapi = try StandInLAPI(namespace: network.receiver)
            defer { lapi.remove() }
            let files = try ConfigurationScratch()
            defer { files.remove() }
            func address(_ index: Int, base: Int = 18) -> String { "198.\(base).\(index / 250).\(index % 250 + 1)" }
            var first = (0..<10_000).map { StandInLAPI.decision($0 + 1, address($0), origin: "origin-\($0)") }
            for (index, origin) in ["lists", "CAPI", "cscli-import"].enumerated() {
                first.append(StandInLAPI.decision(20_001 + index, "198.19.0.\(index + 1)", origin: origin))
            }
            // A and B: the Local API sends only a value's longest decision.
            let (a, b) = ("198.19.0.9", "198.19.0.10")
            first += [StandInLAPI.decision(20_010, a, duration: "4h"), StandInLAPI.decision(20_011, b)]
            try lapi.setFull(new: first)
            try lapi.start()
            try files.write(
                """
                [jail.app]
                source = "file:LOG"

                [crowdsec]
                api_url = "\(lapi.url)"
                api_key = "stand-in"
                update_frequency = 1
                resync_frequency = 0
                """)
            let control = ControlScratch.path()
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                "--control", control,
            ]
            var (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try eventually(within: 60) { try crowdsecEntries(maps).count == 10_005 })
            var entries = try crowdsecEntries(maps)
            #expect(entries[address(0)] != nil && entries[address(9_999)] != nil && entries[a] == "crowdsec/cscli")
            let names = try maps.originNames().values.filter { $0.hasPrefix("crowdsec/") }
            #expect(names.count == 33 && names.contains("crowdsec/*"), "\(names.sorted())")

            // A's longer decision deleted: the Local API says nothing. Its shorter one deleted: the
            // delta names a decision the bouncer never saw, with an ended duration. B's deletion
            // comes with a duration that is none.
            let delta = try lapi.queueDelta(deleted: [
                StandInLAPI.decision(20_012, a, duration: "-21.168811ms"),
                StandInLAPI.decision(20_011, b, duration: "not a duration"),
            ])
            #expect(
                try eventually(within: 30) { try crowdsecEntries(maps)[a] == nil && crowdsecEntries(maps)[b] == nil })
            #expect(lapi.served.contains(delta) && lapi.served.filter { $0 == "full" }.count == 1, "\(lapi.served)")
            #expect(try crowdsecEntries(maps).count == 10_003)
            var text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")

            // A restart with the Local API away: the last run's entries drop on, and the status says so.
            lapi.stop()
            (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            // (The bouncer starts after the jails' readers: its line comes a little after "reading".)
            var status = ""
            #expect(
                try eventually(within: 30) {
                    status = try runProcess(Products.cli, ["status", "--control", control]).stdout
                    return status.contains("10003 networks enforced (kept from the last run until the first full pull)")
                }, "\(status)")
            // The Local API back, holding 10,000 decisions of 10,000 other origins only.
            try lapi.setFull(
                new: (0..<10_000).map { StandInLAPI.decision(40_001 + $0, address($0, base: 19), origin: "new-\($0)") })
            try lapi.start()
            #expect(
                try eventually(within: 60) {
                    let now = try crowdsecEntries(maps)
                    return now.count == 10_000 && now[address(9_999, base: 19)] != nil && now[address(0)] == nil
                })
            entries = try crowdsecEntries(maps)
            #expect(Set(entries.values).allSatisfy { $0 == "crowdsec/*" || $0.hasPrefix("crowdsec/new-") })
            #expect(try maps.originNames().values.filter { $0.hasPrefix("crowdsec/") }.count == 33)
            // A list of a new name still loads.
            let list = files.directory + "/new.list"
            try "203.0.113.0/24\n".write(toFile: list, atomically: true, encoding: .utf8)
            let load = try runProcess(Products.cli, ["blocklist", "load", "newlist", list, "--pin-dir", scratch.path])
            #expect(load.status == 0, "\(load.stderr)")
            text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(text.contains("10000 network(s) of 10000 origin(s) enforced"), "\(text.suffix(2000))")
        }
    }
}
