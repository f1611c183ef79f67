// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
@testable import OffenceTable
import PortcullisCore

@Suite("Offence table")
struct OffenceTableTests {
    typealias Recorded = OffenceTable.Recorded

    @Test("concurrent increments are exact and each address crosses exactly once")
    func concurrentExactness() throws {
        let table = try OffenceTable(bins: 100_003, threshold: 3)
        let addresses = (0..<5000).map { IPAddress(ipv4: 198, 18, UInt8($0 / 256), UInt8($0 % 256)) }
        let perThread = 7  // each thread reports every address 7 times
        let crossings = CrossingCounter(count: addresses.count)
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for round in 0..<perThread {
                // Different orders per thread, so threads meet on the same bins.
                for step in 0..<addresses.count {
                    let index = (step + thread * 1237 + round * 7) % addresses.count  // a rotation: each once
                    if table.record(addresses[index], now: 1) == .crossed { crossings.add(index) }
                }
            }
        }
        #expect(crossings.values.allSatisfy { $0 == 1 }, "exactly one ban per address")
        for key in addresses { #expect(table.count(of: key) == UInt32(4 * perThread)) }
        #expect(table.occupied == UInt64(addresses.count))
    }

    @Test("a reset (ban expired) makes the next crossing ban again")
    func resetStartsOver() throws {
        let table = try OffenceTable(bins: 1009, threshold: 2)
        let key = IPAddress(ipv4: 198, 18, 0, 1)
        #expect(table.record(key, now: 0) == .counted(1))
        #expect(table.record(key, now: 0) == .crossed)
        #expect(table.record(key, now: 0) == .counted(3))
        table.reset(key)
        #expect(table.count(of: key) == 0)
        #expect(table.record(key, now: 5) == .counted(1))
        #expect(table.record(key, now: 5) == .crossed)
        table.markBanned(key, now: 6)
        #expect(table.record(key, now: 6) == .counted(3), "a ban found at start-up is not banned again")
    }

    @Test("a ban time after its crossing, offences count toward the next ban without waiting for the lift")
    func banEndRestartsTheCount() throws {
        let table = try OffenceTable(bins: 1009, threshold: 3, banTime: 30)
        let key = IPAddress(ipv4: 198, 18, 0, 3)
        for expected in [Recorded.counted(1), .counted(2), .crossed] {
            #expect(table.record(key, now: 100) == expected)
        }
        #expect(table.record(key, now: 110) == .counted(4), "lines in flight during the ban: no second ban")
        #expect(table.record(key, now: 130) == .counted(1), "the ban ended at 130: a new count")
        #expect(table.record(key, now: 131) == .counted(2))
        #expect(!table.resetEnded(key, endedAt: 130), "the lift, late, keeps the offences since the end")
        #expect(table.record(key, now: 131) == .crossed)
        #expect(!table.resetEnded(key, endedAt: 130), "nor does it wipe the new crossing")
        #expect(!table.resetEnded(key, endedAt: 131), "not even one in the second of the end")
        #expect(table.resetEnded(key, endedAt: 161), "the new ban ended and nothing came since: start over")
        #expect(table.count(of: key) == 0)
    }

    @Test("a ban an operator shortened resets its count when it ends, however short")
    func shortenedBanResets() throws {
        for banTime: UInt32 in [1, 2, 3600] {
            let table = try OffenceTable(bins: 1009, threshold: 2, banTime: banTime)
            let key = IPAddress(ipv4: 198, 18, 0, 6)
            #expect(table.record(key, now: 200) == .counted(1))
            #expect(table.record(key, now: 200) == .crossed)
            #expect(table.resetEnded(key, endedAt: 201), "ban time \(banTime)")
            #expect(table.record(key, now: 201) == .counted(1))
            #expect(table.record(key, now: 201) == .crossed, "banned again after two more offences")
        }
    }

    @Test("find time compares signed: a worker a second behind does not restart a fresh count")
    func findTimeSigned() throws {
        let table = try OffenceTable(bins: 1009, threshold: 3, findTime: 10)
        let key = IPAddress(ipv4: 198, 18, 0, 7)
        #expect(table.record(key, now: 50) == .counted(1))
        #expect(table.record(key, now: 49) == .counted(2), "a batch stamped one second earlier")
        #expect(table.record(key, now: 50) == .crossed)
    }

    @Test("a resumed ban counts as ending when its own end comes, shorter or longer than the ban time")
    func resumedBanEnds() throws {
        let table = try OffenceTable(bins: 1009, threshold: 3, banTime: 30)
        let short = IPAddress(ipv4: 198, 18, 0, 4), long = IPAddress(ipv4: 198, 18, 0, 5)
        table.markBanned(short, now: 50, remaining: 5)
        table.markBanned(long, now: 50, remaining: 600)
        #expect(table.record(short, now: 54) == .counted(4))
        #expect(table.record(short, now: 55) == .counted(1), "its ban ended at 55")
        #expect(table.record(long, now: 100) == .counted(4), "an operator's 600 s ban is still in force")
        #expect(table.record(long, now: 650) == .counted(1))

        // A daemon that bans for good resumes an operator's timed ban: its lift still resets it.
        let forever = try OffenceTable(bins: 1009, threshold: 3, banTime: 0)
        forever.markBanned(short, now: 50, remaining: 5)
        #expect(forever.record(short, now: 54) == .counted(4))
        #expect(forever.resetEnded(short, endedAt: 55))
        #expect(forever.record(short, now: 55) == .counted(1))
    }

    @Test("find time: offences spread wider than the window start over")
    func findTime() throws {
        let table = try OffenceTable(bins: 1009, threshold: 3, findTime: 10)
        let key = IPAddress(ipv4: 198, 18, 0, 2)
        #expect(table.record(key, now: 100) == .counted(1))
        #expect(table.record(key, now: 105) == .counted(2))
        #expect(table.record(key, now: 120) == .counted(1), "the window passed")
        #expect(table.record(key, now: 121) == .counted(2))
        #expect(table.record(key, now: 122) == .crossed)
    }

    @Test("a table full of bans in force refuses and counts instead of crashing")
    func fullTable() throws {
        // Threshold 1, bans for good: every bin holds a ban in force, which is never given up.
        let table = try OffenceTable(bins: 16, threshold: 1, window: 16)
        var full = 0
        for index in 0..<200 where table.record(IPAddress(ipv4: 198, 18, 1, UInt8(index)), now: 0) == .full {
            full += 1
        }
        #expect(table.occupied == 16)
        #expect(full == 200 - 16)
        #expect(table.fullRefusals == UInt64(full))
        #expect(table.evictedLive == 0 && table.reclaimedStale == 0, "a ban in force is never given up")
        #expect(throws: SettingError.self) { _ = try OffenceTable(bins: 1, threshold: 3) }
        #expect(throws: SettingError.self) { _ = try OffenceTable(bins: 100, threshold: 0) }
    }
}

@Suite("Offence table aging")
struct OffenceTableAgingTests {
    typealias Recorded = OffenceTable.Recorded

    /// One-off sources: distinct addresses from 2001:2:0:f::/64 (never repeated).
    static func oneOff(_ index: Int) -> IPAddress {
        IPAddress(high: UInt64(0x2001_0002_0000_000f).bigEndian, low: UInt64(index + 1).bigEndian)
    }

    static func attacker(_ index: Int) -> IPAddress {
        IPAddress(ipv4: 198, 18, UInt8(index / 250), UInt8(index % 250 + 1))
    }

    @Test("a flood of one-off sources 20 times the table never stops an attacker from being banned")
    func floodCannotBlindTheTable() throws {
        let table = try OffenceTable(bins: 4099, threshold: 3, banTime: 60)
        var crossed = Set<Int>()
        var next = 0
        // All in one second of the table's clock; the stamp, as the daemon's, advances per batch
        // of 100 lines.
        func stamp() -> UInt32 { UInt32(next / 100) }
        for attacker in 0..<1000 {
            // 80 one-offs, then the attacker's 3 offences with 10 one-offs between each.
            for _ in 0..<80 {
                _ = table.record(Self.oneOff(next), now: 5, stamp: stamp())
                next += 1
            }
            for _ in 0..<3 {
                if table.record(Self.attacker(attacker), now: 5, stamp: stamp()) == .crossed {
                    crossed.insert(attacker)
                }
                for _ in 0..<10 {
                    _ = table.record(Self.oneOff(next), now: 5, stamp: stamp())
                    next += 1
                }
            }
        }
        #expect(next == 110_000)
        #expect(crossed.count == 1000, "every attacker banned")
        #expect(table.occupied <= 4099, "table use bounded by its bins")
        #expect(table.fullRefusals == 0, "nothing refused: one-offs give up their bins")
        #expect(table.evictedLive > 100_000 - 4099)
    }

    @Test("with several workers each attacker crosses exactly once, under a flood that keeps every window full")
    func floodWithWorkers() throws {
        let table = try OffenceTable(bins: 2003, threshold: 3, banTime: 60)
        let crossings = CrossingCounter(count: 500)
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for attacker in 0..<500 {
                for round in 0..<3 {
                    for filler in 0..<20 {
                        _ = table.record(Self.oneOff(thread << 24 | attacker * 64 + round * 20 + filler), now: 9)
                    }
                    if table.record(Self.attacker(attacker), now: 9) == .crossed { crossings.add(attacker) }
                }
            }
        }
        // Each attacker sent 12 offences (3 per worker): every count reached the threshold once.
        #expect(crossings.values.allSatisfy { $0 <= 1 }, "never two bans for one crossing")
        #expect(crossings.values.filter { $0 == 1 }.count >= 490, "nearly all crossed despite the flood")
        #expect(table.occupied <= 2003)
    }

    @Test("stale counts give their bins up first: past the find time, or the idle horizon with find time 0")
    func staleBinsGoFirst() throws {
        for (findTime, horizon) in [(UInt32(10), UInt32(86_400)), (0, 30)] {
            let table = try OffenceTable(bins: 64, threshold: 3, findTime: findTime, idleHorizon: horizon, window: 64)
            let old = (0..<64).map { Self.oneOff($0) }
            for address in old { _ = table.record(address, now: 100) }
            #expect(table.occupied == 64)
            let later = UInt32(100 + Int(findTime > 0 ? findTime : horizon) + 1)
            let fresh = (0..<64).map { Self.attacker($0) }
            for address in fresh { #expect(table.record(address, now: later) == .counted(1)) }
            #expect(table.reclaimedStale == 64 && table.evictedLive == 0, "find time \(findTime)")
            #expect(old.allSatisfy { table.count(of: $0) == nil })
        }
    }

    @Test("a live count goes lowest first, then oldest; a ban in force never goes")
    func evictionOrder() throws {
        let table = try OffenceTable(bins: 32, threshold: 3, banTime: 0, window: 32)
        let banned = (0..<16).map { Self.attacker($0) }
        for address in banned { for _ in 0..<3 { _ = table.record(address, now: 1) } }
        let twice = (0..<8).map { Self.oneOff(1000 + $0) }
        for address in twice { for _ in 0..<2 { _ = table.record(address, now: 2) } }
        let onceOld = (0..<4).map { Self.oneOff(2000 + $0) }
        for address in onceOld { _ = table.record(address, now: 3) }
        let onceNew = (0..<4).map { Self.oneOff(3000 + $0) }
        for address in onceNew { _ = table.record(address, now: 4) }
        #expect(table.occupied == 32)
        for index in 0..<4 { #expect(table.record(Self.oneOff(4000 + index), now: 5) == .counted(1)) }
        #expect(onceOld.allSatisfy { table.count(of: $0) == nil }, "the oldest single offences went first")
        #expect(onceNew.allSatisfy { table.count(of: $0) == 1 })
        #expect(twice.allSatisfy { table.count(of: $0) == 2 })
        #expect(banned.allSatisfy { table.count(of: $0) == 3 }, "bans in force stay")
        for index in 0..<16 { _ = table.record(Self.oneOff(5000 + index), now: 6) }
        #expect(banned.allSatisfy { table.count(of: $0) == 3 }, "even when every other bin has gone")
    }
}

final class CrossingCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [Int]
    init(count: Int) { counts = Array(repeating: 0, count: count) }
    func add(_ index: Int) { lock.withLock { counts[index] += 1 } }
    var values: [Int] { lock.withLock { counts } }
}
