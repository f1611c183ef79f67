// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

/// What one source claims for a network of the list layer: until when, for which origin (the
/// name after the writer's prefix: `crowdsec/cscli`'s `cscli`, `fleet/web-2`'s `web-2`).
public struct ListClaim: Sendable, Hashable {
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
public enum ListChange: Sendable, Hashable {
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

/// What a `ListInstaller` call did besides installing.
public struct ListInstallResult: Sendable {
    /// Networks another list's entry holds (that entry stays; tried again later).
    public var heldByOthers: [IPNetwork] = []
    /// Claims not installed because no origin slot could be had (every slot named by jails and
    /// lists), with their origin.
    public var refused: [(network: IPNetwork, origin: String)] = []
    /// Claims not installed because the list layer holds at most `BanMaps.listCapacity` hosts and
    /// as many networks per family (a full install's beyond those).
    public var overCapacity: [IPNetwork] = []
}

/// Writes a writer's claims into the XDP program's list layer, each with its origin slot
/// `PREFIXORIGIN` (`crowdsec/cscli`, `fleet/web-2`) and its end, replacing or removing only
/// entries of its own origins: another list's entry for a network stays.
///
/// The origins come from a remote party (any CrowdSec machine can create decisions of any
/// origin; a fleet has as many hosts as it has), so at most `namedOrigins` of them get a slot of
/// their own (named on first use; at a full install, those that had one, then the largest); the
/// others share the slot `PREFIX*`. Slots of the prefix that no wanted claim names any more are
/// freed at each full install. No count of origins keeps an entry out, and the slots left for
/// jails and lists never run out because of them.
public final class ListInstaller {
    private let maps: BanMaps
    /// The origins' common prefix (`crowdsec/`, `fleet/`).
    public let prefix: String
    /// Origins that get a slot of their own, at most.
    public let namedOrigins: Int
    /// Slot by origin (an origin past `namedOrigins` has the shared slot).
    private var slots: [String: UInt32] = [:]
    /// Every slot of the prefix (its entries are this writer's to replace and remove).
    private var owned = Set<UInt32>()
    /// The shared slot, once named.
    private var shared: UInt32?
    private var loaded = false

    /// The shared origin's name after the prefix.
    public static let sharedOrigin = "*"

    public init(maps: BanMaps, prefix: String, namedOrigins: Int = 32) {
        self.maps = maps
        self.prefix = prefix
        self.namedOrigins = max(namedOrigins, 0)
    }

    /// The slots of the prefix already named (an earlier run's, or another installer's of the
    /// same prefix that this one replaces): owned from the first call on.
    private func load(_ names: [UInt32: String]) {
        guard !loaded else { return }
        loaded = true
        adopt(names)
    }

    private func adopt(_ names: [UInt32: String]) {
        for (slot, name) in names where name.hasPrefix(prefix) {
            owned.insert(slot)
            let origin = String(name.dropFirst(prefix.count))
            if origin == Self.sharedOrigin { shared = slot } else { slots[origin] = slot }
        }
    }

    /// The slot for claims of `origin`: its own, a new one while fewer than `namedOrigins` are
    /// named, else the shared one; nil when not even that can be named.
    private func slot(_ origin: String) throws(FirewallError) -> UInt32? {
        if let slot = slots[origin] { return slot }
        if !loaded { load(try maps.originNames()) }
        if let slot = slots[origin] { return slot }
        let named = Set(slots.values).subtracting(shared.map { [$0] } ?? []).count
        if named < namedOrigins, origin != Self.sharedOrigin {
            let name = prefix + origin
            if let slot = try maps.originSlots(for: [name])[name] {
                slots[origin] = slot
                owned.insert(slot)
                return slot
            }
        }
        if shared == nil {
            let name = prefix + Self.sharedOrigin
            shared = try maps.originSlots(for: [name])[name]
            if let shared { owned.insert(shared) }
        }
        if let shared { slots[origin] = shared }
        return shared
    }

    /// Entries in force of this writer's origins (an earlier run's, before the first full install).
    public func entriesInForce() throws(FirewallError) -> Int {
        let mine = Set(try maps.originNames().filter { $0.value.hasPrefix(prefix) }.keys)
        guard !mine.isEmpty else { return 0 }
        return try maps.listEntries().count(where: { mine.contains($0.origin) })
    }

    /// `wanted` in place of every entry of a `PREFIX` origin (also those of an earlier run), in
    /// one swap per family; the prefix's slots are given anew (see the type) and those no claim
    /// names are freed, under one hold of the writers' lock.
    public func replaceAll(
        _ wanted: some Collection<(IPNetwork, ListClaim)>
    ) throws(FirewallError)
        -> ListInstallResult
    {
        // Past the layer's capacity (never with a real Local API): an array to trim. Else the
        // claims are read as they are, twice (their origins, then the entries).
        guard wanted.count <= BanMaps.listCapacity else {
            var trimmed = Array(wanted)
            let over = Self.trim(&trimmed)
            var result = try replacingAll(trimmed)
            result.overCapacity = over
            return result
        }
        return try replacingAll(wanted)
    }

    /// Keeps at most `BanMaps.listCapacity` hosts and as many networks of each family (the layer's
    /// maps hold no more): the rest is returned, the others installed.
    static func trim(_ wanted: inout [(IPNetwork, ListClaim)]) -> [IPNetwork] {
        var counts = [0, 0, 0, 0]
        var over: [IPNetwork] = []
        wanted.removeAll { network, _ in
            let kind = (network.family == .ipv4 ? 0 : 2) + (network.isSingleAddress ? 0 : 1)
            counts[kind] += 1
            guard counts[kind] > BanMaps.listCapacity else { return false }
            over.append(network)
            return true
        }
        return over
    }

    private func replacingAll(
        _ wanted: some Collection<(IPNetwork, ListClaim)>
    ) throws(FirewallError)
        -> ListInstallResult
    {
        try maps.withWritersLock { () throws(FirewallError) -> ListInstallResult in
            let names = try maps.originNames()
            let mine = names.filter { $0.value.hasPrefix(prefix) }
            loaded = true
            var counts: [String: Int] = [:]
            for (_, claim) in wanted { counts[claim.origin, default: 0] += 1 }
            // Those that had a slot first (their names and drop counts stay), then the largest.
            let had = Set(mine.values)
            let ranked = counts.sorted { a, b in
                let (hadA, hadB) = (had.contains(prefix + a.key), had.contains(prefix + b.key))
                if hadA != hadB { return hadA }
                return a.value != b.value ? a.value > b.value : a.key < b.key
            }.map(\.key).filter { $0 != Self.sharedOrigin }
            // Slots this writer can have: its own and the free ones. When they are fewer than its
            // origins, the last one is the shared one: every claim finds a slot while one is free.
            let available = Int(PC_MAX_ORIGINS) - 1 - names.count + mine.count
            var named = ranked.prefix(namedOrigins).map { prefix + $0 }
            if named.count + (ranked.count > named.count ? 1 : 0) > available {
                named = Array(named.prefix(max(available - 1, 0)))
            }
            let sharedName = prefix + Self.sharedOrigin
            let needsShared = ranked.count > named.count || counts[Self.sharedOrigin] != nil
            // The prefix's slots no claim needs: freed (their entries go in this swap, as every
            // entry of the prefix does).
            let keep = Set(named + (needsShared ? [sharedName] : []))
            try maps.freeOriginSlots(mine.filter { !keep.contains($0.value) }.keys)
            // The shared slot first: with every other slot named, it is what all claims can share.
            var given = needsShared ? try maps.assignOriginSlots(for: [sharedName]) : [:]
            given.merge(try maps.assignOriginSlots(for: named)) { $1 }
            slots = [:]
            owned = []
            shared = nil
            adopt(Dictionary(given.map { ($0.value, $0.key) }, uniquingKeysWith: { $1 }))
            // A named origin that found no slot (jails and lists hold all) takes the shared one.
            if counts.keys.contains(where: { slots[$0] == nil }), shared == nil {
                shared = try maps.assignOriginSlots(for: [sharedName])[sharedName]
                if let shared { owned.insert(shared) }
            }
            for origin in counts.keys where slots[origin] == nil { slots[origin] = shared }
            var result = ListInstallResult()
            let slotOf = slots
            if shared == nil, counts.keys.contains(where: { slotOf[$0] == nil }) {
                result.refused = wanted.filter { slotOf[$0.1.origin] == nil }.map { ($0.0, $0.1.origin) }
            }
            // Made once (the swap reads them several times per family; `wanted` may be a lazy view).
            var entries: [ListEntry] = []
            entries.reserveCapacity(wanted.count)
            for (network, claim) in wanted {
                if let slot = slotOf[claim.origin] { entries.append(Self.entry(network, claim, slot)) }
            }
            let replacing = owned.union(mine.keys)
            result.heldByOthers = try maps.swapLists(replacing: { replacing.contains($0) }, with: entries).heldByOthers
            return result
        }
    }

    private static func entry(_ network: IPNetwork, _ claim: ListClaim, _ slot: UInt32) -> ListEntry {
        ListEntry(
            network: network, expiry: claim.end == .max ? .permanent : .at(bootNanoseconds: claim.end), origin: slot)
    }

    /// `changes` in place, batched.
    public func apply(_ changes: [ListChange]) throws(FirewallError) -> ListInstallResult {
        var result = ListInstallResult()
        var adding: [ListEntry] = []
        var removing: [IPNetwork] = []
        adding.reserveCapacity(changes.count)
        for change in changes {
            switch change {
            case .install(let network, let claim):
                guard let slot = try slot(claim.origin) else {
                    result.refused.append((network, claim.origin))
                    continue
                }
                adding.append(Self.entry(network, claim, slot))
            case .remove(let network): removing.append(network)
            }
        }
        if !loaded { load(try maps.originNames()) }
        let owned = self.owned
        result.heldByOthers =
            try maps.updateListEntries(owned: { owned.contains($0) }, adding: adding, removing: removing).heldByOthers
        return result
    }
}
