// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
@testable import XDPFirewall
import XDPTesting

/// The contract of `BanStore`, checked case by case against both stores the daemon runs on: the
/// XDP maps (root and a loaded object) and the store in memory its logic tests use.
struct BanStoreContract {
    let store: any BanStore
    let now = SystemClock.bootNanoseconds()
    var later: BanExpiry { .at(bootNanoseconds: now + 60_000_000_000) }
    var ended: BanExpiry { .at(bootNanoseconds: now - 1_000_000_000) }

    func check() throws {
        try neverShortens()
        try liftsOnlyEndedBans()
        try networksByPlace()
        try liftsOnlyEndedNetworks()
        try walksEveryBan()
        try namesOrigins()
        #expect(
            try store.replaceAllowlist([IPNetwork(parsing: "198.18.99.0/24"), IPNetwork(parsing: "2001:2::99/128")])
                == 2)
        #expect(try store.replaceAllowlist([]) == 0)
    }

    /// A ban ending later, or for good, is kept; a later one replaces an earlier one with its
    /// origin; a full family fails its own requests only.
    func neverShortens() throws {
        let short = IPAddress("198.18.12.1")!, long = IPAddress("198.18.12.2")!, new = IPAddress("2001:2::12:3")!
        try store.ban(short, .at(bootNanoseconds: now + 1_000_000_000), origin: 3)
        try store.ban(long, .permanent, origin: 0)
        let outcome = store.banKeepingLonger(batch: [
            BanRequest(short, later, origin: 5), BanRequest(long, later), BanRequest(new, later),
            BanRequest(new, .at(bootNanoseconds: now + 1_000_000_000)),
        ])
        #expect(Set(outcome.installed) == [0, 2] && outcome.kept == [1, 3] && outcome.failed.isEmpty, "\(outcome)")
        #expect(try store.lookup(short) == BanEntry(address: short, expiry: later, dropped: 0, origin: 5))
        #expect(try store.lookup(long)?.expiry == .permanent)
        #expect(try store.lookup(new)?.expiry == later)
        // 64 a family: 62 more IPv4 go in, the rest fail; the IPv6 one still goes in.
        let many = (0..<70).map { BanRequest(IPAddress(ipv4NetworkOrder: UInt32(0xC612_2000 + $0).bigEndian), later) }
        let full = store.banKeepingLonger(batch: many + [BanRequest(IPAddress("2001:2::12:5")!, later)])
        #expect(
            full.installed.count == 63 && full.failed.count == 8 && full.installed.contains(70),
            "\(full.installed.count) installed, \(full.failed.count) failed")
        #expect(throws: FirewallError.self) { try store.ban(IPAddress("198.18.13.1")!, later, origin: 0) }
        for entry in try store.entries() { _ = try store.unban(entry.address) }
        #expect(try store.entries().isEmpty)
    }

    /// `liftIfEnded` deletes an ended ban, finds a missing one absent and leaves one in force.
    func liftsOnlyEndedBans() throws {
        let gone = IPAddress("198.18.11.1")!, inForce = IPAddress("2001:2::11:2")!, absent = IPAddress("198.18.11.3")!
        try store.ban(gone, ended, origin: 2)
        try store.ban(inForce, .permanent, origin: 0)
        #expect(
            try store.liftIfEnded(gone, now: now)
                == .lifted(BanEntry(address: gone, expiry: ended, dropped: 0, origin: 2)))
        #expect(try store.lookup(gone) == nil)
        #expect(try store.liftIfEnded(absent, now: now) == .absent)
        #expect(
            try store.liftIfEnded(inForce, now: now)
                == .inForce(BanEntry(address: inForce, expiry: .permanent, dropped: 0)))
        #expect(try store.lookup(inForce)?.expiry == .permanent)
        #expect(try store.unban(inForce) && !(try store.unban(inForce)))
    }

    /// A network of a fixed length is a prefix ban, another a CIDR ban, a single address an exact
    /// ban; each is looked up and lifted exactly as it was made.
    func networksByPlace() throws {
        let lengths = try store.prefixLengths(.ipv6)
        let fixed = try #require(lengths.first)
        let prefix = IPNetwork(containing: IPAddress("2001:2:0:20::1")!, length: fixed)
        let cidr = try IPNetwork(parsing: "198.18.20.0/27")
        let single = try IPNetwork(parsing: "198.18.21.1/32")
        #expect(!(try store.prefixLengths(.ipv4)).contains(27))
        for network in [prefix, cidr, single] { try store.ban(network: network, later, origin: 4) }
        #expect(try store.lookup(network: prefix)?.place == .prefix)
        #expect(try store.lookup(network: cidr)?.place == .cidr)
        #expect(try store.lookup(network: single)?.place == .exact)
        #expect(try store.lookup(single.address)?.origin == 4)
        #expect(Set(try store.networkBans().map(\.network)) == [prefix, cidr], "exact bans are not network bans")
        // A CIDR ban is looked up as the trie does: the longest one covering the network asked for.
        #expect(
            try store.lookup(network: IPNetwork(containing: IPAddress("198.18.20.1")!, length: 28))?.expiry == later)
        #expect(try store.lookup(network: IPNetwork(containing: IPAddress("198.18.20.1")!, length: 26)) == nil)
        for network in [prefix, cidr, single] { #expect(try store.unban(network: network)) }
        #expect(!(try store.unban(network: cidr)))
        #expect(try store.networkBans().isEmpty && store.lookup(single.address) == nil)
    }

    /// `liftIfEnded(network:)` lifts an ended network ban and leaves one in force, in each place.
    func liftsOnlyEndedNetworks() throws {
        let fixed = try #require(try store.prefixLengths(.ipv6).first)
        let prefix = IPNetwork(containing: IPAddress("2001:2:0:30::1")!, length: fixed)
        let cidr = try IPNetwork(parsing: "198.18.30.0/27")
        let single = try IPNetwork(parsing: "2001:2::30:1/128")
        for network in [prefix, cidr, single] {
            try store.ban(network: network, ended, origin: 1)
            guard case .lifted(let entry) = try store.liftIfEnded(network: network, now: now) else {
                Issue.record("the ended ban of \(network) was not lifted")
                continue
            }
            #expect(entry.network == network && entry.expiry == ended && entry.origin == 1)
            #expect(try store.lookup(network: network) == nil)
            #expect(try store.liftIfEnded(network: network, now: now) == .absent)
            try store.ban(network: network, later, origin: 1)
            guard case .inForce = try store.liftIfEnded(network: network, now: now) else {
                Issue.record("the ban of \(network) in force was lifted")
                continue
            }
            #expect(try store.lookup(network: network)?.expiry == later, "\(network) in force stays as it was")
            #expect(try store.unban(network: network))
        }
    }

    /// The steps of a walk return every exact ban, and the walk ends back at its start.
    func walksEveryBan() throws {
        let addresses =
            (0..<20).map { IPAddress(ipv4NetworkOrder: UInt32(0xC612_2800 + $0).bigEndian) }
            + (0..<5).map { IPAddress("2001:2::28:\($0 + 1)")! }
        for address in addresses { try store.ban(address, later, origin: 0) }
        var walk = BanMaps.Walk()
        var seen: [IPAddress] = []
        for _ in 0..<100 {
            seen += try store.entries(walking: &walk, limit: 8).map(\.address)
            if !walk.position.started && !walk.ipv6 { break }
        }
        #expect(Set(seen) == Set(addresses) && seen.count == addresses.count)
        for address in addresses { _ = try store.unban(address) }
    }

    /// Names get slots from 1, distinct, and keep them.
    func namesOrigins() throws {
        let slots = try store.originSlots(for: ["sshd", "nginx"])
        #expect(Set(slots.keys) == ["sshd", "nginx"] && Set(slots.values).count == 2 && !slots.values.contains(0))
        let again = try store.originSlots(for: ["nginx", "postfix"])
        #expect(
            again["nginx"] == slots["nginx"] && again["postfix"] != nil && !slots.values.contains(again["postfix"]!))
    }
}

@Suite("The ban store's contract")
struct InMemoryBanStoreContractTests {
    @Test("the store in memory honours the ban store's contract")
    func inMemoryStore() throws {
        try BanStoreContract(store: InMemoryBanStore(capacity: 64)).check()
    }
}

@Suite("The ban store's contract on the maps", .enabled(if: Privileges.runnable), .serialized)
struct MapsBanStoreContractTests {
    @Test("the XDP maps honour the ban store's contract")
    func maps() throws {
        try Privileges.require()
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        defer { withExtendedLifetime(program) {} }
        try BanStoreContract(store: try #require(program.maps)).check()
    }
}
