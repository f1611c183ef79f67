// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem
import Synchronization
import Testing
import TestSupport
import XDPTesting
@_spi(Testing) import XDPFirewall

/// Drops are counted per CPU (`pc_pending`) and added to their entry when a CPU drops for another:
/// whatever the order, every drop is on its entry, as every reader shows it.
@Suite("Drops counted per CPU", .enabled(if: Privileges.runnable), .serialized)
struct PerCPUDropTests {
    let scratch = ScratchPinDirectory("per-cpu-drops")
    let server = IPAddress("198.18.255.254")!

    /// Runs each frame `repetitions` times on each CPU given, the CPUs at once.
    func runAtOnce(_ program: LoadedProgram, _ frames: [[UInt8]], cpus: [Int], repetitions: Int32) throws {
        let failures = Mutex<[String]>([])
        let start = DispatchGroup()
        start.enter()
        let threads = try cpus.map { cpu in
            try SystemThread.spawn {
                do {
                    try SystemThread.pinCurrent(to: cpu)
                    start.wait()
                    for frame in frames
                    where try program.testRun(frame: frame, repetitions: repetitions).verdict != .drop {
                        failures.withLock { $0.append("CPU \(cpu): a frame passed") }
                    }
                } catch {
                    failures.withLock { $0.append("CPU \(cpu): \(error)") }
                }
            }
        }
        start.leave()
        for thread in threads { thread.join() }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
    }

    @Test(
        "one source's drops on two CPUs at once, with other entries' drops in between, all on its entry: an exact ban, a prefix ban, a list's host; a re-ban keeps them, a batch re-ban restarts them"
    )
    func dropsAddUpOverCPUs() throws {
        try Privileges.require()
        defer { scratch.remove() }
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
        let maps = try #require(program.maps)
        let cpus = min(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        let exact = IPAddress("198.18.0.1")!
        let other = IPAddress("2001:2::1")!
        let prefix = try IPNetwork(parsing: "198.18.5.0/24")
        let host = try IPNetwork(parsing: "198.18.7.7")
        try maps.ban(exact, .permanent)
        try maps.ban(other, .permanent)
        try maps.ban(network: prefix, .permanent)
        _ = try maps.replaceList(origin: 200, with: [host])
        let frames = [
            TestFrame.udp(from: exact, to: server), TestFrame.udp(from: exact, to: server),
            TestFrame.udp(from: IPAddress("198.18.5.1")!, to: server),
            TestFrame.udp(from: IPAddress("198.18.5.200")!, to: server),
            TestFrame.udp(from: host.address, to: server),
            TestFrame.udp(from: other, to: IPAddress("2001:2::fffe")!),
        ]
        // Twice over: the second round's first drops of each entry meet what the first left pending.
        for _ in 0..<2 { try runAtOnce(program, frames, cpus: Array(0..<cpus), repetitions: 1000) }
        let perFrame = UInt64(2 * cpus * 1000)
        #expect(try maps.lookup(exact)?.dropped == 2 * perFrame)
        #expect(try maps.lookup(other)?.dropped == perFrame)
        #expect(try maps.lookup(network: prefix)?.dropped == 2 * perFrame)
        #expect(try maps.listEntries().first { $0.network == host }?.dropped == perFrame)
        let rows = Dictionary(uniqueKeysWithValues: try maps.listing().map { ($0.address, $0.dropped) })
        #expect(rows["198.18.0.1"] == 2 * perFrame && rows["198.18.5.0/24"] == 2 * perFrame)
        #expect(rows["198.18.7.7"] == perFrame && rows["2001:2::1"] == perFrame)
        #expect(try maps.counters().dropped.packets == 6 * perFrame)
        // A re-ban keeps the count, what CPUs hold included; a batch re-ban restarts it.
        try maps.ban(exact, try #require(BanExpiry.after(seconds: 60)))
        #expect(try maps.lookup(exact)?.dropped == 2 * perFrame)
        _ = try program.testRun(frame: frames[0], repetitions: 10)
        #expect(try maps.lookup(exact)?.dropped == 2 * perFrame + 10)
        try maps.ban(batch: [BanRequest(exact, .permanent)])
        #expect(try maps.lookup(exact)?.dropped == 0)
        _ = try program.testRun(frame: frames[0], repetitions: 10)
        #expect(try maps.lookup(exact)?.dropped == 10)
    }
}
