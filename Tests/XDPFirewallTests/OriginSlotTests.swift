// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore
import Testing
import TestSupport
import XDPTesting

@testable import XDPFirewall

/// Origin slots (`pc_origins`): no count of CrowdSec origins, fleet hosts or lists keeps an entry
/// out, and slots no entry carries come back (issue 28).
@Suite("Origin slots", .enabled(if: Privileges.runnable), .serialized)
struct OriginSlotTests {
    let scratch = ScratchPinDirectory("origins")
    let server4 = IPAddress("198.18.255.254")!

    func withFilter(_ body: (LoadedProgram, BanMaps) throws -> Void) throws {
        try Privileges.require()
        defer { scratch.remove() }
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins, mapEntries: 1024)
        try body(program, try #require(program.maps))
    }

    /// `count` claims of `count` distinct origins named `prefix0...`, one address each from `first`.
    func claims(_ count: Int, origin prefix: String, from first: Int = 0) -> [(IPNetwork, ListClaim)] {
        (0..<count).map { index in
            let value = first + index
            let address = IPAddress("198.18.\(value / 250).\(value % 250 + 1)")!
            return (IPNetwork(containing: address, length: 32), ListClaim(end: .max, origin: "\(prefix)\(index)"))
        }
    }

    func crowdsecNames(_ maps: BanMaps) throws -> [String] {
        try maps.originNames().values.filter { $0.hasPrefix("crowdsec/") }.sorted()
    }

    @Test(
        "10,000 decisions of 10,000 origins all enforced (32 origins named, the rest under crowdsec/*); then 10,000 of 10,000 new origins in their place, the old names freed; a new list still loads"
    )
    func tenThousandOrigins() throws {
        try withFilter { program, maps in
            let installer = ListInstaller(maps: maps, prefix: "crowdsec/")
            var wanted = claims(10_000, origin: "scenario-")
            // The usual origins come too, and are among the largest.
            for (index, origin) in ["crowdsec", "cscli", "CAPI", "lists", "cscli-import"].enumerated() {
                for offset in 0..<20 {
                    let address = IPAddress("198.19.\(index).\(offset + 1)")!
                    wanted.append((IPNetwork(containing: address, length: 32), ListClaim(end: .max, origin: origin)))
                }
            }
            let result = try installer.replaceAll(wanted)
            #expect(result.refused.isEmpty && result.heldByOthers.isEmpty)
            #expect(try maps.listEntries().count == 10_100)
            let names = try crowdsecNames(maps)
            #expect(names.count == 33 && names.contains("crowdsec/*"), "\(names)")
            for origin in ["crowdsec", "cscli", "CAPI", "lists", "cscli-import"] {
                #expect(names.contains("crowdsec/" + origin), "the largest origins have their own slot: \(origin)")
            }
            // Every entry drops, whatever its slot.
            for source in ["198.18.0.1", "198.18.39.250", "198.19.2.20"] {
                #expect(
                    try program.testRun(frame: TestFrame.udp(from: IPAddress(source)!, to: server4)).verdict == .drop)
            }
            // A delta of 100 decisions of new origins: the shared slot, nothing refused.
            let delta = claims(100, origin: "late-", from: 10_000).map { ListChange.install($0.0, $0.1) }
            #expect(try installer.apply(delta).refused.isEmpty)
            #expect(try maps.listEntries().count == 10_200 && (try crowdsecNames(maps)).count == 33)

            // The Local API's set is now 10,000 decisions of 10,000 other origins (a restart: a new installer).
            let next = ListInstaller(maps: maps, prefix: "crowdsec/")
            #expect(try next.replaceAll(claims(10_000, origin: "other-", from: 20_000)).refused.isEmpty)
            let entries = try maps.listEntries()
            #expect(entries.count == 10_000 && !entries.contains { $0.network.address == IPAddress("198.18.0.1")! })
            let after = try crowdsecNames(maps)
            #expect(after.count == 33 && after.allSatisfy { $0 == "crowdsec/*" || $0.hasPrefix("crowdsec/other-") })
            // A list of a new name loads beside them.
            try maps.loadList("spamhaus", [try IPNetwork(parsing: "198.51.100.0/24")])
            #expect(try maps.originNames().values.contains("list:spamhaus"))
        }
    }

    @Test(
        "slots held by jails and lists but one: every decision shares the last slot; none free: each is refused with its value, and nothing else changes; the message names who holds the slots"
    )
    func slotsHeldByLists() throws {
        try withFilter { _, maps in
            // 50 lists of one network each, and 204 jails: one slot left.
            for index in 0..<50 {
                try maps.loadList("list\(index)", [IPNetwork(containing: IPAddress("2001:2:\(index)::")!, length: 48)])
            }
            #expect(try maps.originSlots(for: (0..<204).map { "jail\($0)" }).count == 204)
            let installer = ListInstaller(maps: maps, prefix: "crowdsec/")
            let result = try installer.replaceAll(claims(40, origin: "o"))
            #expect(result.refused.isEmpty)
            #expect(try crowdsecNames(maps) == ["crowdsec/*"])
            #expect(try maps.listEntries().count == 90)
            // A list more is refused in one line naming who holds the slots.
            #expect(
                throws: FirewallError.originSlotsFull(
                    name: "list:late", holders: "1 CrowdSec origins, 204 jails, 50 lists")
            ) {
                try maps.loadList("late", [try IPNetwork(parsing: "203.0.113.0/24")])
            }
            let message = "\(FirewallError.originSlotsFull(name: "list:late", holders: "4 jails"))"
            #expect(
                message.hasPrefix("no origin slot is free for list:late: all 255 are named (4 jails); unload a list"))
            // A fleet writer finds no slot at all: each claim refused, with its value.
            let fleet = ListInstaller(maps: maps, prefix: "fleet/")
            let refused = try fleet.replaceAll(claims(3, origin: "host", from: 500)).refused
            #expect(refused.map(\.network.description) == ["198.18.2.1", "198.18.2.2", "198.18.2.3"])
            #expect(try maps.listEntries().count == 90, "the lists and the decisions stay")
            // Unloading a list frees its slot: the fleet's claims go in.
            #expect(try maps.unloadList("list0") == 1)
            #expect(try fleet.replaceAll(claims(3, origin: "host", from: 500)).refused.isEmpty)
            #expect(try maps.unloadList("list0") == nil, "unloaded already")
        }
    }

    @Test(
        "a restart frees the slots no entry carries (but the jails it names again); a freed slot's drops start from zero when named again"
    )
    func recycling() throws {
        try withFilter { program, maps in
            let slots = try maps.originSlots(for: ["sshd", "gone-jail", "crowdsec/cscli", "crowdsec/old"])
            let banned = IPAddress("198.18.0.31")!
            try maps.ban(banned, .permanent, origin: try #require(slots["sshd"]))
            try maps.loadList("tor", [try IPNetwork(parsing: "198.18.7.0/24")])
            try maps.loadList("old", [try IPNetwork(parsing: "198.18.8.0/24")])
            let installer = ListInstaller(maps: maps, prefix: "crowdsec/")
            _ = try installer.replaceAll([
                (IPNetwork(containing: IPAddress("198.18.0.32")!, length: 32), ListClaim(end: .max, origin: "cscli"))
            ])
            #expect(!(try maps.originNames().values.contains("crowdsec/old")), "a full install frees its prefix's")
            // Drops of list:old, then unloaded: its slot is free, with no drops left on it.
            _ = try program.testRun(frame: TestFrame.udp(from: IPAddress("198.18.8.9")!, to: server4), repetitions: 4)
            let oldSlot = try #require(try maps.originNames().first { $0.value == "list:old" }?.key)
            #expect(try maps.dropSlots()[Int(oldSlot) * 2].packets == 4)
            #expect(try maps.unloadList("old") == 1)
            #expect(try maps.dropSlots()[Int(oldSlot) * 2].packets == 0)
            // The daemon starts with jails sshd and web: gone-jail goes, web's name is kept free for it.
            let freed = try maps.recycleOriginSlots(keeping: ["sshd", "web"])
            #expect(freed == ["gone-jail"])
            let names = Set(try maps.originNames().values)
            #expect(names == ["sshd", "list:tor", "crowdsec/cscli"])
            #expect(try maps.lookup(banned)?.origin == slots["sshd"])
        }
    }

    @Test(
        "a full install past the list layer's capacity: the hosts of a family beyond it are returned, every other claim kept"
    )
    func trimmedToCapacity() throws {
        let capacity = BanMaps.listCapacity
        func host(_ index: Int) -> IPNetwork {
            let address = IPAddress(ipv4: 10, UInt8(index >> 16 & 0xFF), UInt8(index >> 8 & 0xFF), UInt8(index & 0xFF))
            return IPNetwork(containing: address, length: 32)
        }
        let claim = ListClaim(end: .max, origin: "x")
        var wanted: [(IPNetwork, ListClaim)] = (0..<(capacity + 3)).map { (host($0), claim) }
        wanted.append((try IPNetwork(parsing: "198.51.100.0/24"), claim))
        wanted.append((try IPNetwork(parsing: "2001:2::1/128"), claim))
        let over = ListInstaller.trim(&wanted)
        #expect(over.count == 3 && wanted.count == capacity + 2)
        #expect(
            over.first == IPNetwork(containing: IPAddress(ipv4: 10, UInt8(capacity >> 16 & 0xFF), 0, 0), length: 32))
    }
}
