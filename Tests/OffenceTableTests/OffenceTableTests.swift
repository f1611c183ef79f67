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

    @Test("a full table refuses and counts instead of crashing")
    func fullTable() throws {
        let table = try OffenceTable(bins: 16, threshold: 3)
        var full = 0
        for index in 0..<200 where table.record(IPAddress(ipv4: 198, 18, 1, UInt8(index)), now: 0) == .full {
            full += 1
        }
        #expect(table.occupied == 16)
        #expect(full == 200 - 16)
        #expect(table.fullRefusals == UInt64(full))
        #expect(throws: SettingError.self) { _ = try OffenceTable(bins: 1, threshold: 3) }
        #expect(throws: SettingError.self) { _ = try OffenceTable(bins: 100, threshold: 0) }
    }
}

final class CrossingCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [Int]
    init(count: Int) { counts = Array(repeating: 0, count: count) }
    func add(_ index: Int) { lock.withLock { counts[index] += 1 } }
    var values: [Int] { lock.withLock { counts } }
}
