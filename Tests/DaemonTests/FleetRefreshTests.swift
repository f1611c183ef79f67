// SPDX-License-Identifier: Apache-2.0
@testable import PortcullisFleet
import Foundation
import Testing

/// When a host puts its keys again: only those whose ban outlasts the bucket's max age, each at
/// its own age of half the max age plus up to a quarter.
@Suite("fleet refresh schedule")
struct FleetRefreshTests {
    static let second: UInt64 = 1000
    static let start: UInt64 = 1_800_000_000_000

    func ban(_ key: String, ending end: UInt64) -> FleetChange {
        FleetChange(key: key, end: end, at: Self.start, jail: "app", level: 0, isDelete: false)
    }

    @Test("only bans that outlast their key are scheduled: a 60 s ban on a 120 s bucket is put once")
    func onlyLongBans() {
        var schedule = RefreshSchedule(maxAgeMilliseconds: 120 * Self.second)
        let start = Self.start
        schedule.put(ban("a.198.18.0.1", ending: start + 60 * Self.second), at: start)
        schedule.put(ban("a.198.18.0.2", ending: start + 120 * Self.second), at: start)
        schedule.put(ban("a.198.18.0.3", ending: start + 600 * Self.second), at: start)
        schedule.put(ban("a.198.18.0.4", ending: 0), at: start)
        #expect(schedule.count == 2)
        #expect(schedule.entry("a.198.18.0.1") == nil && schedule.entry("a.198.18.0.2") == nil)
        // Nothing is due before half the max age; all are by three quarters.
        #expect(schedule.takeDue(now: start + 60 * Self.second - 1, limit: 100).isEmpty)
        let due = schedule.takeDue(now: start + 90 * Self.second, limit: 100)
        #expect(Set(due.map(\.key)) == ["a.198.18.0.3", "a.198.18.0.4"])
        // Taken but not put yet: still due (a failed batch is tried again), not taken twice.
        #expect(due.allSatisfy { schedule.isStillDue($0, now: start + 90 * Self.second) })
        #expect(schedule.takeDue(now: start + 90 * Self.second, limit: 100).isEmpty)
        // A delete forgets its key.
        schedule.put(.delete("a.198.18.0.4", at: start), at: start + 90 * Self.second)
        #expect(schedule.entry("a.198.18.0.4") == nil && schedule.count == 1)
    }

    @Test("a key put again is due again from that put; once its ban ends before its key would, it is forgotten")
    func dueFromLastPut() throws {
        var schedule = RefreshSchedule(maxAgeMilliseconds: 120 * Self.second)
        let start = Self.start
        let long = ban("a.198.18.0.9", ending: start + 200 * Self.second)
        schedule.put(long, at: start)
        let first = try #require(schedule.entry(long.key)).due
        #expect(first >= start + 60 * Self.second && first <= start + 90 * Self.second)
        #expect(schedule.takeDue(now: first, limit: 10).map(\.key) == [long.key])
        // Put again at `first`: its key now lasts until first + 120 s, past the ban's end.
        schedule.put(long, at: first)
        #expect(schedule.entry(long.key) == nil)
        #expect(schedule.takeDue(now: start + 400 * Self.second, limit: 10).isEmpty)
        // A ban for good stays scheduled, each time from its last put.
        let forGood = ban("a.198.18.0.10", ending: 0)
        schedule.put(forGood, at: start)
        let due = try #require(schedule.entry(forGood.key)).due
        schedule.put(forGood, at: due)
        let next = try #require(schedule.entry(forGood.key)).due
        #expect(next - due == due - start)
        // One that ended while due is not put.
        let ending = ban("a.198.18.0.11", ending: start + 130 * Self.second)
        schedule.put(ending, at: start)
        #expect(!schedule.takeDue(now: start + 131 * Self.second, limit: 10).contains { $0.key == ending.key })
        #expect(schedule.entry(ending.key) == nil)
    }

    @Test("a burst's keys are due spread over a quarter of the max age, never at one moment")
    func spread() {
        var schedule = RefreshSchedule(maxAgeMilliseconds: 120 * Self.second)
        let start = Self.start
        for index in 0..<10_000 { schedule.put(ban("a.198.18.\(index / 256).\(index % 256)", ending: 0), at: start) }
        var seconds: [UInt64: Int] = [:]
        var now = start + 60 * Self.second
        while now <= start + 90 * Self.second {
            for change in schedule.takeDue(now: now, limit: .max) {
                seconds[(now - start) / Self.second, default: 0] += 1
                schedule.put(change, at: now)
            }
            now += Self.second
        }
        #expect(seconds.values.reduce(0, +) == 10_000)
        // Each second of the 30 takes about a thirtieth (333): none more than twice that.
        #expect(seconds.count >= 30 && seconds.values.allSatisfy { $0 < 700 }, "\(seconds.sorted { $0.key < $1.key })")
    }

    @Test("the bucket's max age read after binding replaces this host's: keys due again from it")
    func bucketMaxAge() throws {
        // This host would keep keys 600 s; the bucket another host made keeps them 120 s.
        var schedule = RefreshSchedule(maxAgeMilliseconds: 600 * Self.second)
        let start = Self.start
        schedule.put(ban("a.198.18.0.1", ending: 0), at: start)
        #expect(try #require(schedule.entry("a.198.18.0.1")).due >= start + 300 * Self.second)
        schedule.setMaxAge(milliseconds: 120 * Self.second)
        let due = try #require(schedule.entry("a.198.18.0.1")).due
        #expect(due >= start + 60 * Self.second && due <= start + 90 * Self.second)
        #expect(schedule.takeDue(now: due, limit: 10).count == 1)
        // A bucket without max age: nothing is put again.
        schedule.setMaxAge(milliseconds: 0)
        #expect(schedule.count == 0)
        schedule.put(ban("a.198.18.0.2", ending: 0), at: start)
        #expect(schedule.count == 0)
    }

    @Test("a key of an earlier run read in the bucket is scheduled from its put, unless this run put it")
    func learned() throws {
        var schedule = RefreshSchedule(maxAgeMilliseconds: 120 * Self.second)
        let start = Self.start
        schedule.learn(ban("a.198.18.0.1", ending: 0), putAt: start - 100 * Self.second)
        // Put 100 s ago: due already (its key ages out in 20 s).
        #expect(schedule.takeDue(now: start, limit: 10).map(\.key) == ["a.198.18.0.1"])
        schedule.put(ban("a.198.18.0.2", ending: 0), at: start)
        schedule.learn(ban("a.198.18.0.2", ending: 0), putAt: start - 100 * Self.second)
        #expect(try #require(schedule.entry("a.198.18.0.2")).putAt == start)
    }

    @Test("the line saying the bucket differs names both max ages and replicas, and how to change them")
    func limitsLine() {
        let line = FleetNode.limitsLine(
            bucket: "portcullis-bans", has: BucketLimits(maxAgeSeconds: 120, replicas: 1),
            wanted: BucketLimits(maxAgeSeconds: 600, replicas: 3))
        #expect(line.contains("keeps keys 120 s with 1 replica(s)") && line.contains("600 s with 3"), "\(line)")
        #expect(line.contains("nats stream edit KV_portcullis-bans --max-age 600s --replicas 3"), "\(line)")
    }
}

/// A key's value written and read by hand, as Foundation's JSON coders would.
@Suite("fleet value codec")
struct FleetValueCodecTests {
    static let values = [
        FleetValue(end: 1_764_650_000_123, at: 1_764_646_400_123, jail: "sshd", host: "web-1", level: 2),
        FleetValue(end: 0, at: 1, jail: "crowdsec/CAPI", host: "a", level: 0, refresh: true),
        FleetValue(end: 5, at: 4, jail: "odd \"jail\" \\ \u{1}é", host: "b_2", level: UInt32.max),
    ]

    @Test("what it writes JSONDecoder reads as the same value, and so does it")
    func roundTrip() throws {
        for value in Self.values {
            let bytes = value.bytes
            #expect(
                try JSONDecoder().decode(FleetValue.self, from: Data(bytes)) == value,
                "\(String(decoding: bytes, as: UTF8.self))")
            let read = bytes.withUnsafeBytes { FleetValue.read($0, decoder: JSONDecoder()) }
            #expect(read == value)
        }
        // Without escapes it reads its own form at once.
        #expect(Self.values[0].bytes.withUnsafeBytes { FleetValue.readPlain($0) } == Self.values[0])
        #expect(Self.values[1].bytes.withUnsafeBytes { FleetValue.readPlain($0) } == Self.values[1])
    }

    @Test(
        "another writer's JSON (JSONEncoder's escapes, spacing, order) is read through JSONDecoder; garbage is not a value"
    )
    func otherWriters() throws {
        for value in Self.values {
            let encoded = try JSONEncoder().encode(value)
            #expect(Array(encoded).withUnsafeBytes { FleetValue.read($0, decoder: JSONDecoder()) } == value)
        }
        let spaced = Array(#"{ "host": "a", "jail": "x", "level": 1, "at": 2, "end": 3 }"#.utf8)
        #expect(
            spaced.withUnsafeBytes { FleetValue.read($0, decoder: JSONDecoder()) }
                == FleetValue(end: 3, at: 2, jail: "x", host: "a", level: 1))
        for bad in [#"{"end":1"#, #"{"end":99999999999999999999999,"at":1,"jail":"a","host":"b","level":0}"#, "", "[]"]
        {
            #expect(Array(bad.utf8).withUnsafeBytes { FleetValue.read($0, decoder: JSONDecoder()) } == nil, "\(bad)")
        }
    }
}
