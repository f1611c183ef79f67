// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
@_spi(Testing) @testable import PortcullisDaemon
import PortcullisCore
import PortcullisSystem
import Synchronization
import Testing
import TestSupport
import XDPFirewall
import XDPTesting

/// The sweep's lift of ended network bans (a jail's `ipv6-prefix`, aggregates, an operator's
/// prefixes) against a re-ban of the same network made while it runs: the re-ban stays.
@Suite("Lifting ended network bans", .enabled(if: Privileges.runnable), .serialized)
struct NetworkLiftTests {
    /// Whether `network`'s ban in `maps` is in force now.
    static func inForce(_ network: IPNetwork, _ maps: BanMaps) throws -> Bool {
        guard let entry = try maps.lookup(network: network) else { return false }
        return !entry.isExpired(now: SystemClock.bootNanoseconds())
    }

    /// Runs `body` with a daemon (not started: the test drives the sweep) whose one jail bans IPv6
    /// clients by /64 for 600 s, over private maps holding an ended ban of `network`.
    func withEndedPrefixBan(
        _ network: IPNetwork, _ body: (_ daemon: Daemon, _ maps: BanMaps) throws -> Void
    ) throws {
        try Privileges.require()
        let scratch = TransportScratch()
        defer { unlink(scratch.filePath) }
        FileManager.default.createFile(atPath: scratch.filePath, contents: nil)
        var source = TransportConfiguration(kind: .file)
        source.file.path = scratch.filePath
        var configuration = DaemonConfiguration(transport: source)
        var jail = JailConfiguration(name: "app", source: source)
        jail.policy.threshold = 1
        jail.policy.banTime = 600
        jail.aggregation.ipv6Prefix = 64
        configuration.jails = [jail]
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        let maps = try #require(program.maps)
        let daemon = try Daemon(configuration: configuration, maps: maps)
        defer { daemon.stop() }
        try maps.ban(network: network, .at(bootNanoseconds: SystemClock.bootNanoseconds() - 1_000_000_000))
        let endedBan = try maps.lookup(network: network)
        #expect(endedBan != nil && endedBan?.isExpired(now: SystemClock.bootNanoseconds()) == true)
        try body(daemon, maps)
    }

    @Test("a jail's re-ban of a /64 made while the sweep lifts the /64's ended ban stays in force")
    func jailReBanDuringTheSweep() throws {
        let network = try IPNetwork(parsing: "2001:2:0:7::/64")
        try withEndedPrefixBan(network) { daemon, maps in
            final class Steps: Sendable {
                let paused = Atomic<Bool>(false)
                let reBanned = Atomic<Bool>(false)
            }
            let steps = Steps()
            // The sweep, between its read and its deletes, waits for the jail's re-ban (or, when the
            // re-ban must wait for the sweep, 2 s).
            daemon.enforcement.networkLiftPause = {
                steps.paused.store(true, ordering: .releasing)
                let deadline = SystemClock.monotonicNanoseconds() + 2_000_000_000
                while !steps.reBanned.load(ordering: .acquiring) && SystemClock.monotonicNanoseconds() < deadline {
                    SystemClock.sleep(nanoseconds: 1_000_000)
                }
            }
            let lifter = daemon.lifter
            let clock = daemon.clock
            let sweep = try SystemThread.spawn { lifter.liftEndedNetworks(now: clock.bootNow) }
            while !steps.paused.load(ordering: .acquiring) { SystemClock.sleep(nanoseconds: 1_000_000) }
            let installed = daemon.enforcement.install(
                [IPAddress("2001:2:0:7::")!], jail: daemon.jail, clock: daemon.clock)
            steps.reBanned.store(true, ordering: .releasing)
            sweep.join()
            #expect(installed.banned.count == 1)
            let survived = try Self.inForce(network, maps)
            #expect(survived, "the jail's fresh ban of \(network) survives the sweep")
        }
    }

    @Test("an operator's ban of a /64 written into the maps while the sweep lifts its ended ban stays in force")
    func operatorReBanDuringTheSweep() throws {
        let network = try IPNetwork(parsing: "2001:2:0:8::/64")
        try withEndedPrefixBan(network) { daemon, maps in
            // `portcullis ban` writes the maps directly, without the daemon's lock: in the window.
            daemon.enforcement.networkLiftPause = {
                try? maps.ban(network: network, .at(bootNanoseconds: SystemClock.bootNanoseconds() + 600_000_000_000))
            }
            daemon.lifter.liftEndedNetworks(now: daemon.clock.bootNow)
            let survived = try Self.inForce(network, maps)
            #expect(survived, "the operator's fresh ban of \(network) survives the sweep")
        }
    }

    @Test("the sweep lifts ended network bans and leaves those in force")
    func sweepLiftsEndedNetworkBans() throws {
        let ended = try IPNetwork(parsing: "2001:2:0:9::/64")
        let live = try IPNetwork(parsing: "198.18.40.0/24")
        try withEndedPrefixBan(ended) { daemon, maps in
            try maps.ban(network: live, .at(bootNanoseconds: SystemClock.bootNanoseconds() + 600_000_000_000))
            daemon.lifter.liftEndedNetworks(now: daemon.clock.bootNow)
            #expect(try maps.lookup(network: ended) == nil)
            let liveStays = try Self.inForce(live, maps)
            #expect(liveStays)
            #expect(daemon.status.sweptUnbans == 1)
        }
    }
}
