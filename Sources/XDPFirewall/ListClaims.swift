// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

/// What one source claims for a network of the list layer: until when, for which origin (the
/// name after the writer's prefix: `crowdsec/cscli`'s `cscli`, `fleet/web-2`'s `web-2`).
public struct ListClaim: Sendable, Equatable {
    /// `CLOCK_BOOTTIME` nanoseconds (what the XDP program compares an entry's end with); `.max`:
    /// never.
    public let end: UInt64
    public let origin: String

    public init(end: UInt64, origin: String) {
        self.end = end
        self.origin = origin
    }

    /// The same for the maps: one origin, ends within a second (sources that give a remaining
    /// time compute a slightly different end each time).
    public func isSame(as other: ListClaim) -> Bool {
        origin == other.origin && (end > other.end ? end - other.end : other.end - end) < 1_000_000_000
    }
}

/// What the maps must hold for a network now: its longest claim, or nothing.
public enum ListChange: Sendable, Equatable {
    case install(IPNetwork, ListClaim)
    case remove(IPNetwork)

    public var network: IPNetwork {
        switch self {
        case .install(let network, _), .remove(let network): network
        }
    }
}

/// The claims a writer of the list layer holds (a CrowdSec Local API's decisions by id, a fleet
/// bucket's bans by key), by network: per network the longest (its end and origin) is what the
/// maps show; when it goes, the next one holds. Removals by id are idempotent; a network whose
/// last claim goes is lifted. Ended claims leave by `purge`, earliest first.
public struct ListClaims<ID: Hashable & Sendable>: Sendable {
    /// The claims of one network: the first inline (most networks have one), others beside.
    struct Held: Sendable {
        var id: ID
        var claim: ListClaim
        var more: [ID: ListClaim]?

        var longest: ListClaim {
            guard let more else { return claim }
            return more.values.reduce(claim) { ($0.end, $0.origin) < ($1.end, $1.origin) ? $1 : $0 }
        }

        func forEach(_ body: (ListClaim) -> Void) {
            body(claim)
            for claim in (more ?? [:]).values { body(claim) }
        }

        func claim(_ id: ID) -> ListClaim? { id == self.id ? claim : more?[id] }

        mutating func set(_ id: ID, _ claim: ListClaim) {
            if id == self.id { self.claim = claim } else { more = (more ?? [:]).merging([id: claim]) { $1 } }
        }

        /// - Returns: whether none is left.
        mutating func remove(_ id: ID) -> Bool {
            if id == self.id {
                guard let (next, claim) = more?.first else { return true }
                self.id = next
                self.claim = claim
                more![next] = nil
            } else {
                more?[id] = nil
            }
            if more?.isEmpty == true { more = nil }
            return false
        }
    }

    private var held: [IPNetwork: Held] = [:]
    private var networkOf: [ID: IPNetwork] = [:]
    /// Each claim's end, earliest first (entries of claims since gone or changed are skipped).
    private var ends = EndHeap<ID>()

    public init() {}

    /// Claims held.
    public var count: Int { networkOf.count }
    /// Networks they name.
    public var networks: Int { held.count }

    /// Room for `more` claims (a large pull or a bucket's whole set grows them at once).
    public mutating func reserve(_ more: Int) {
        held.reserveCapacity(held.count + more)
        networkOf.reserveCapacity(networkOf.count + more)
    }

    /// The longest claim of `network`.
    public func longest(_ network: IPNetwork) -> ListClaim? { held[network]?.longest }

    /// What the maps must hold for `network` now.
    public func change(_ network: IPNetwork) -> ListChange {
        longest(network).map { .install(network, $0) } ?? .remove(network)
    }

    /// Every network with its longest claim: what a full install writes.
    public func wanted() -> [(IPNetwork, ListClaim)] {
        held.map { ($0.key, $0.value.longest) }
    }

    /// Every claim with its network (for counts by origin).
    public func forEachClaim(_ body: (IPNetwork, ListClaim) -> Void) {
        for (network, claims) in held { claims.forEach { body(network, $0) } }
    }

    /// Forgets everything.
    public mutating func reset() {
        held = [:]
        networkOf = [:]
        ends.removeAll()
    }

    /// Whether `id` claims a network.
    public func contains(_ id: ID) -> Bool { networkOf[id] != nil }

    /// `id` claims `network` (in place of what it claimed before).
    /// - Returns: the network it claimed before, when another.
    @discardableResult
    public mutating func set(_ id: ID, _ network: IPNetwork, _ claim: ListClaim) -> IPNetwork? {
        var before: IPNetwork?
        if let old = networkOf[id], old != network { before = remove(id) }
        if held[network] == nil {
            held[network] = Held(id: id, claim: claim)
        } else {
            held[network]!.set(id, claim)
        }
        networkOf[id] = network
        ends.push(claim.end, id)
        return before
    }

    /// `id`'s claim goes. - Returns: its network (nil: it held none).
    @discardableResult
    public mutating func remove(_ id: ID) -> IPNetwork? {
        guard let network = networkOf.removeValue(forKey: id) else { return nil }
        if held[network]?.remove(id) == true { held[network] = nil }
        return network
    }

    /// Drops the claims ended by `now`, earliest first. - Returns: what changed for the maps.
    public mutating func purge(now: UInt64) -> [ListChange] {
        var touched = Set<IPNetwork>()
        while let first = ends.first, first.end <= now {
            ends.popFirst()
            // A claim removed, or replaced by one with another end, since: not due.
            guard let network = networkOf[first.key], held[network]?.claim(first.key)?.end == first.end else {
                continue
            }
            remove(first.key)
            touched.insert(network)
        }
        return touched.map { change($0) }
    }

    /// What differs for the maps between `before` (an earlier `wanted()`) and now: networks whose
    /// longest claim changed, came or went (what a resynchronisation writes in place).
    public func changes(since before: [IPNetwork: ListClaim]) -> [ListChange] {
        var changes: [ListChange] = []
        for (network, claims) in held {
            let claim = claims.longest
            if let old = before[network], old.isSame(as: claim) { continue }
            changes.append(.install(network, claim))
        }
        for network in before.keys where held[network] == nil { changes.append(.remove(network)) }
        return changes
    }
}

/// Writes a writer's claims into the XDP program's list layer, each with its origin slot
/// `PREFIXORIGIN` (named on first use: `crowdsec/cscli`, `fleet/web-2`) and its end, replacing or
/// removing only entries of its own origins: another list's entry for a network stays.
public final class ListInstaller {
    private let maps: BanMaps
    /// The origins' common prefix (`crowdsec/`, `fleet/`).
    public let prefix: String
    private var slots: [String: UInt32] = [:]
    private var owned = Set<UInt32>()

    public init(maps: BanMaps, prefix: String) {
        self.maps = maps
        self.prefix = prefix
    }

    /// The slot of `PREFIXORIGIN`.
    private func slot(_ origin: String) throws(FirewallError) -> UInt32 {
        if let slot = slots[origin] { return slot }
        let name = prefix + origin
        guard let slot = try maps.originSlots(for: [name])[name] else {
            throw .invalidAddress(
                "no origin slot is free for \(name): all \(PC_MAX_ORIGINS - 1) are named (jails, lists, CrowdSec "
                    + "origins, fleet hosts); unload a list (portcullis blocklist unload NAME) or give fewer jails")
        }
        slots[origin] = slot
        owned.insert(slot)
        return slot
    }

    private func entry(_ network: IPNetwork, _ claim: ListClaim) throws(FirewallError) -> ListEntry {
        ListEntry(
            network: network, expiry: claim.end == .max ? .permanent : .at(bootNanoseconds: claim.end),
            origin: try slot(claim.origin))
    }

    /// `wanted` in place of every entry of a `PREFIX` origin (also those of an earlier run), in
    /// one swap per family. - Returns: networks another list holds (not installed).
    public func replaceAll(_ wanted: [(IPNetwork, ListClaim)]) throws(FirewallError) -> [IPNetwork] {
        for (slot, name) in try maps.originNames() where name.hasPrefix(prefix) {
            owned.insert(slot)
            slots[String(name.dropFirst(prefix.count))] = slot
        }
        var entries: [ListEntry] = []
        entries.reserveCapacity(wanted.count)
        for (network, claim) in wanted { entries.append(try entry(network, claim)) }
        let owned = self.owned
        return try maps.replaceListEntries(owned: { owned.contains($0) }, with: entries).heldByOthers
    }

    /// `changes` in place, batched. - Returns: networks another list holds (not installed).
    public func apply(_ changes: [ListChange]) throws(FirewallError) -> [IPNetwork] {
        var adding: [ListEntry] = []
        var removing: [IPNetwork] = []
        for change in changes {
            switch change {
            case .install(let network, let claim): adding.append(try entry(network, claim))
            case .remove(let network): removing.append(network)
            }
        }
        let owned = self.owned
        return try maps.updateListEntries(owned: { owned.contains($0) }, adding: adding, removing: removing)
            .heldByOthers
    }
}
