// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import Testing

@testable import PortcullisCrowdSec

@Suite("CrowdSec decisions")
struct DecisionTests {
    @Test(
        "Go durations as the LAPI writes them",
        arguments: [
            ("3h59m58.123456789s", 14_398.123456789), ("1m59.032151752s", 119.032151752), ("-9.545317ms", -0.009545317),
            ("0s", 0), ("0", 0), ("4h", 14_400), ("1.5h", 5400), ("250us", 0.00025), ("250µs", 0.00025), ("7ns", 7e-9),
        ])
    func goDurations(text: String, seconds: Double) {
        #expect(abs((GoDuration.seconds(text) ?? .nan) - seconds) < 1e-9, "\(text)")
    }

    @Test("text that is no Go duration", arguments: ["", "s", "10", "1.2.3s", "5d", "1h x", "--1s", "h1"])
    func notGoDurations(text: String) {
        #expect(GoDuration.seconds(text) == nil, "\(text)")
    }
}

@Suite("CrowdSec decision set")
struct DecisionSetTests {
    func decision(
        _ id: Int, _ value: String, scope: String = "Ip", type: String = "ban", origin: String = "cscli",
        scenario: String = "manual", seconds: Double = 120
    ) -> Decision {
        Decision(id: id, origin: origin, type: type, scope: scope, value: value, scenario: scenario, seconds: seconds)
    }

    func network(_ text: String) throws -> IPNetwork { try IPNetwork(parsing: text) }

    @Test("a stream answer: new and deleted, null lists, entries that are not decisions counted and skipped")
    func parsing() throws {
        let text = """
            {"deleted":null,"new":[
              {"duration":"1m59.03s","id":1,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"198.18.0.7"},
              {"duration":"forever","id":2,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"198.18.0.8"},
              {"id":3,"scope":"Ip","type":"ban","value":"198.18.0.9"},
              "not an object",
              {"duration":"4h","id":"5","scope":"Ip","type":"ban","value":"198.18.0.10"}
            ]}
            """
        let stream = try DecisionStream(json: Array(text.utf8))
        #expect(stream.new.map(\.id) == [1] && stream.deleted.isEmpty && stream.malformed == 4)
        #expect(abs(stream.new[0].seconds - 119.03) < 1e-9)
        for bad in ["[]", "{\"new\": 5}", "not json", ""] {
            #expect(throws: LAPIError.self, "\(bad)") { try DecisionStream(json: Array(bad.utf8)) }
        }
    }

    @Test("values: IPv4-mapped IPv6 is IPv4, a range's host bits are cleared, an Ip with a length must be whole")
    func values() throws {
        #expect(Decision.network(scope: .ip, value: "::ffff:198.18.0.7") == (try network("198.18.0.7")))
        #expect(Decision.network(scope: .range, value: "::ffff:198.18.1.0/120") == (try network("198.18.1.0/24")))
        #expect(Decision.network(scope: .range, value: "198.18.1.9/24") == (try network("198.18.1.0/24")))
        #expect(Decision.network(scope: .range, value: "2001:2:0:a::/64") == (try network("2001:2:0:a::/64")))
        #expect(Decision.network(scope: .ip, value: "198.18.0.7/32") == (try network("198.18.0.7")))
        for (scope, bad) in [
            (Decision.Scope.ip, "198.18.0.7/24"), (.ip, "nonsense"), (.range, "198.18.1.0"), (.range, "198.18.1.0/33"),
            (.range, "::ffff:198.18.1.0/90"), (.ip, ""),
        ] {
            #expect(Decision.network(scope: scope, value: bad) == nil, "\(bad)")
        }
    }

    @Test(
        "the longest decision of a value holds; other types, scopes, origins, allowlisted and ended ones are counted and skipped; ends pass"
    )
    func set() throws {
        var filter = DecisionFilter()
        filter.scenariosNotContaining = ["test"]
        var set = DecisionSet(filter: filter, allowlist: [try network("198.18.3.0/24")])
        let now: UInt64 = 1_000_000_000_000
        let target = try network("198.18.0.7")
        var stream = DecisionStream()
        stream.new = [
            decision(1, "198.18.0.7", seconds: 120), decision(2, "::ffff:198.18.0.7", origin: "CAPI", seconds: 600),
            decision(3, "198.18.1.0/24", scope: "Range"), decision(4, "198.18.2.1", type: "captcha"),
            decision(5, "FR", scope: "Country"), decision(6, "198.18.3.3"), decision(7, "198.18.4.4", seconds: -0.5),
            decision(8, "198.18.5.5", scenario: "a test scenario"), decision(9, "not-an-address"),
        ]
        let changes = set.apply(stream, now: now)
        #expect(Set(changes.map(\.network)) == [target, try network("198.18.1.0/24")])
        #expect(set.longest(target) == .init(end: now + 600_000_000_000, origin: "CAPI"))
        #expect(set.networks == 2 && set.originCount == 2)
        #expect(
            set.skipped == [.type: 1, .scope: 1, .allowlisted: 1, .ended: 1, .filtered: 1, .malformed: 1],
            "\(set.skipped)")
        #expect(set.census()["CAPI"]! == (1, 0) && set.census()["cscli"]! == (0, 1))
        // A shorter decision for a value changes nothing; a longer one holds from then on.
        stream = DecisionStream()
        stream.new = [decision(10, "198.18.0.7", seconds: 60)]
        #expect(set.apply(stream, now: now).isEmpty)
        stream.new = [decision(11, "198.18.0.7", origin: "cscli", seconds: 900)]
        #expect(set.apply(stream, now: now) == [.install(target, .init(end: now + 900_000_000_000, origin: "cscli"))])
        #expect(set.census()["CAPI"] == nil, "an origin no entry carries is forgotten")
        // Ends pass: the range's decision ends at 120 s, the value's at 900 s.
        #expect(set.purge(now: now + 119_000_000_000).isEmpty)
        #expect(set.purge(now: now + 120_000_000_000) == [.remove(try network("198.18.1.0/24"))])
        #expect(set.purge(now: now + 900_000_000_000) == [.remove(target)])
        #expect(set.networks == 0 && set.originCount == 0 && set.census().isEmpty)
    }

    @Test(
        "a deletion lifts its value whatever decision it names, as CrowdSec 1.4.6 reports them: the longer of two deleted first (not reported), then the shorter (reported) lifts the value in that pull"
    )
    func deletionByValue() throws {
        var set = DecisionSet()
        let now: UInt64 = 1_000_000_000_000
        let target = try network("198.18.0.9")
        var stream = DecisionStream()
        // The LAPI's new decisions: only a value's longest is sent.
        stream.new = [decision(1, "198.18.0.9", seconds: 14_400)]
        _ = set.apply(stream, now: now)
        // Decision 1 (4 h) deleted: the LAPI's delta says nothing. Decision 2 (1 h) deleted: the
        // delta names 2, a decision this set never saw, with an ended duration.
        stream = DecisionStream()
        stream.deleted = [decision(2, "198.18.0.9", seconds: -0.02)]
        #expect(set.apply(stream, now: now) == [.remove(target)])
        #expect(set.networks == 0)
        // Again: nothing. A deletion of another type lifts nothing; one that does not say its type does.
        #expect(set.apply(stream, now: now).isEmpty)
        stream = DecisionStream()
        stream.new = [decision(3, "198.18.0.9"), decision(4, "198.18.1.0/24", scope: "Range")]
        _ = set.apply(stream, now: now)
        stream = DecisionStream()
        stream.deleted = [
            decision(5, "198.18.0.9", type: "captcha"), decision(6, "198.18.1.0/24", scope: "Range", type: ""),
        ]
        #expect(set.apply(stream, now: now) == [.remove(try network("198.18.1.0/24"))])
        // Deleted and given again in one pull: deletions first, so the new decision holds.
        stream = DecisionStream()
        stream.deleted = [decision(3, "198.18.0.9")]
        stream.new = [decision(7, "198.18.0.9", origin: "CAPI", seconds: 30)]
        #expect(set.apply(stream, now: now) == [.install(target, .init(end: now + 30_000_000_000, origin: "CAPI"))])
    }

    @Test("a full pull over the set: what the deltas missed or kept is the difference; the same claims change nothing")
    func resync() throws {
        var set = DecisionSet()
        let now: UInt64 = 1_000_000_000_000
        var stream = DecisionStream()
        stream.new = [decision(1, "198.18.0.1"), decision(2, "198.18.0.2"), decision(3, "198.18.0.3")]
        _ = set.apply(stream, now: now)
        // The LAPI's whole set: 1 as it was (its remaining time a little less), 2 gone, 4 missed.
        stream.new = [
            decision(1, "198.18.0.1", seconds: 119.5), decision(3, "198.18.0.3", origin: "CAPI"),
            decision(4, "198.18.0.4"),
        ]
        let changes = set.resync(stream, now: now)
        let differing: Set<IPNetwork> = [
            try network("198.18.0.2"), try network("198.18.0.3"), try network("198.18.0.4"),
        ]
        #expect(Set(changes.map(\.network)) == differing, "\(changes)")
        let gone = DecisionSet.Change.remove(try network("198.18.0.2"))
        #expect(changes.contains(gone))
        let changed = try network("198.18.0.3")
        #expect(set.networks == 3 && set.longest(changed)?.origin == "CAPI")
        #expect(set.resync(stream, now: now).isEmpty)
        // A value whose longer decision was deleted unreported: the full pull gives its shorter end.
        stream.new = [
            decision(1, "198.18.0.1", seconds: 30), decision(3, "198.18.0.3", origin: "CAPI"),
            decision(4, "198.18.0.4"),
        ]
        #expect(
            set.resync(stream, now: now) == [
                .install(try network("198.18.0.1"), .init(end: now + 30_000_000_000, origin: "cscli"))
            ])
    }

    @Test(
        "a full pull from the answer's bytes, in place: the same entries kept as they are, a shorter end taken, what it lacks gone; an answer that is none leaves the set as it was"
    )
    func synchroniseInPlace() throws {
        var set = DecisionSet()
        let now: UInt64 = 1_000_000_000_000
        var stream = DecisionStream()
        stream.new = [decision(1, "198.18.0.1"), decision(2, "198.18.0.2", seconds: 14_400), decision(3, "198.18.0.3")]
        _ = set.apply(stream, now: now)
        func answer(_ items: [String]) -> [UInt8] {
            Array(("{\"deleted\":null,\"new\":[" + items.joined(separator: ",") + "]}").utf8)
        }
        func item(_ id: Int, _ value: String, _ duration: String, origin: String = "cscli") -> String {
            #"{"duration":"\#(duration)","id":\#(id),"origin":"\#(origin)","scenario":"s","scope":"Ip","type":"ban","value":"\#(value)"}"#
        }
        // 1 the same (a little less left), 2 shorter (its longer decision deleted unreported), 3
        // gone, 4 new and given twice (the longer holds).
        let json = answer([
            item(1, "198.18.0.1", "1m59.5s"), item(5, "198.18.0.2", "1h"), item(6, "198.18.0.4", "10m"),
            item(7, "198.18.0.4", "20m", origin: "CAPI"),
        ])
        let counts = try json.withUnsafeBufferPointer { bytes in
            try set.synchronise(json: bytes, now: now, countingSkips: false)
        }
        let changes = set.synchronisedChanges()
        #expect(counts == .init(new: 4, deleted: 0, malformed: 0))
        let expected: Set<DecisionSet.Change> = [
            .install(try network("198.18.0.2"), .init(end: now + 3_600_000_000_000, origin: "cscli")),
            .remove(try network("198.18.0.3")),
            .install(try network("198.18.0.4"), .init(end: now + 1_200_000_000_000, origin: "CAPI")),
        ]
        #expect(Set(changes) == expected, "\(changes)")
        let first = try network("198.18.0.1")
        #expect(set.networks == 3 && set.longest(first)?.end == now + 120_000_000_000)
        // The same set again, as the Local API sends it (a value's longest decision only): nothing
        // changes. (A value given twice whose first decision differs is installed again: harmless.)
        let same = answer([
            item(1, "198.18.0.1", "1m59.5s"), item(5, "198.18.0.2", "1h"), item(7, "198.18.0.4", "20m", origin: "CAPI"),
        ])
        _ = try same.withUnsafeBufferPointer { bytes in
            try set.synchronise(json: bytes, now: now, countingSkips: false)
        }
        #expect(set.synchronisedChanges().isEmpty && set.networks == 3)
        let broken = Array("{\"new\":[{\"id\":1,".utf8)
        #expect(throws: LAPIError.self) {
            try broken.withUnsafeBufferPointer { bytes in
                try set.synchronise(json: bytes, now: now, countingSkips: false)
            }
        }
        #expect(set.networks == 3 && set.census()["CAPI"]! == (1, 0))
    }

    @Test("ends pass in order: an end replaced by a later one is skipped; ten thousand origins come and go, none kept")
    func ends() throws {
        var set = DecisionSet()
        let now: UInt64 = 1_000_000_000_000
        let second: UInt64 = 1_000_000_000
        let target = try network("198.18.0.7")
        var stream = DecisionStream()
        stream.new = [
            decision(1, "198.18.0.7", seconds: 10), decision(2, "198.18.0.7", origin: "CAPI", seconds: 20),
            decision(3, "198.18.0.8", seconds: 5),
        ]
        _ = set.apply(stream, now: now)
        #expect(set.longest(target)?.origin == "CAPI")
        // Decision 3 comes again, longer: its first end is not its end any more.
        stream.new = [decision(3, "198.18.0.8", seconds: 30)]
        _ = set.apply(stream, now: now)
        #expect(set.purge(now: now + 6 * second).isEmpty)
        #expect(set.purge(now: now + 10 * second).isEmpty)
        #expect(set.purge(now: now + 20 * second) == [.remove(target)])
        let other = try network("198.18.0.8")
        #expect(set.networks == 1 && set.purge(now: now + 30 * second) == [.remove(other)])
        #expect(set.networks == 0)
        stream.new = (0..<10_000).map {
            decision($0, "198.18.\($0 / 250).\($0 % 250 + 1)", origin: "o\($0)", seconds: 40)
        }
        _ = set.apply(stream, now: now)
        #expect(set.networks == 10_000 && set.originCount == 10_000)
        #expect(set.purge(now: now + 40 * second).count == 10_000)
        #expect(set.originCount == 0 && set.census().isEmpty)
    }

    @Test("the stream's query carries the filters, escaped")
    func query() {
        var settings = BouncerSettings(connection: LAPIConnectionSettings(url: "http://127.0.0.1:8080"), apiKey: "k")
        #expect(settings.connection.url == "http://127.0.0.1:8080/")
        #expect(settings.query == "scopes=ip,range")
        settings.filter.origins = ["crowdsec", "CAPI"]
        settings.filter.scenariosContaining = ["ssh bf"]
        settings.filter.scenariosNotContaining = ["a&b"]
        #expect(
            settings.query
                == "scopes=ip,range&origins=crowdsec,CAPI&scenarios_containing=ssh%20bf&scenarios_not_containing=a%26b")
    }
}
