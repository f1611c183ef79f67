// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import XDPFirewall

/// Which decisions a bouncer enforces: the usual bouncer filters.
public struct DecisionFilter: Sendable, Equatable {
    /// `scopes`: of `ip` and `range` (others cannot be enforced by address).
    public var scopes: Set<Decision.Scope> = [.ip, .range]
    /// `origins`: empty, every one; else only these (`crowdsec`, `cscli`, `CAPI`, `lists`...).
    public var origins: [String] = []
    /// `scenarios_containing`: empty, every one; else a scenario must contain one of these.
    public var scenariosContaining: [String] = []
    /// `scenarios_not_containing`: a scenario containing one of these is skipped.
    public var scenariosNotContaining: [String] = []

    public init() {}
}

/// Why a decision of a pull was not enforced.
public enum SkipReason: String, Sendable, CaseIterable {
    /// Not `ban` (`captcha`, `throttle`...).
    case type
    /// A scope not enforced (`Country`, `AS`, `Username`, or one `scopes` leaves out).
    case scope
    /// An origin or scenario the filters leave out.
    case filtered
    /// A value that is not an address (or range) of its scope, or an entry that is not a decision.
    case malformed
    /// Inside the allowlist: never enforced.
    case allowlisted
    /// Already ended when it came.
    case ended
    /// A `Range` shorter than the floor of its family (`0.0.0.0/0` would drop everything).
    case tooWide = "too_wide"
    /// Touching a never-bannable range (loopback, link-local, multicast, reserved).
    case neverBannable = "never_bannable"
}

/// The origin names a set's entries carry, each held once with its count of entries (by scope),
/// and recycled when none carries it any more: a Local API may hold decisions of any number of
/// origins over time.
struct OriginTable: Sendable {
    private(set) var names: [String] = []
    private var index: [String: UInt32] = [:]
    private(set) var uses: [(ip: Int, range: Int)] = []
    private var free: [UInt32] = []

    mutating func retain(_ name: String, range: Bool) -> UInt32 {
        let slot: UInt32
        if let known = index[name] {
            slot = known
        } else if let reused = free.popLast() {
            slot = reused
            names[Int(slot)] = name
            index[name] = slot
        } else {
            slot = UInt32(names.count)
            names.append(name)
            uses.append((0, 0))
            index[name] = slot
        }
        if range { uses[Int(slot)].range += 1 } else { uses[Int(slot)].ip += 1 }
        return slot
    }

    mutating func release(_ slot: UInt32, range: Bool) {
        if range { uses[Int(slot)].range -= 1 } else { uses[Int(slot)].ip -= 1 }
        guard uses[Int(slot)] == (0, 0) else { return }
        index[names[Int(slot)]] = nil
        names[Int(slot)] = ""
        free.append(slot)
    }

    /// Names in use.
    var count: Int { index.count }
}

/// What a bouncer enforces: per network, one entry, the end of the longest decision the Local API
/// gave for it and that decision's origin, as the Local API itself reports a value (its stream
/// sends only a value's longest decision). A deletion lifts its value whatever decision it names,
/// as CrowdSec's own bouncers do: CrowdSec 1.4.6 reports a deleted decision only when it was its
/// value's longest, so a value whose decisions were deleted one after the other is reported
/// deleted once, by its last one (a deletion by id kept such a value dropped until the next full
/// pull). Times are `CLOCK_BOOTTIME` nanoseconds (what the XDP program compares an entry's end
/// with). About 140 bytes a network with the table's room and the heap of ends (13.7 MB for
/// 100,000, `portcullis-perf xdp --crowdsec-only`).
public struct DecisionSet: Sendable {
    public typealias Claim = ListClaim
    public typealias Change = ListChange

    struct Entry: Sendable {
        var end: UInt64
        var origin: UInt32
        /// The full pull that last gave it (`synchronise`; in the padding: 16 bytes all the same).
        var generation: UInt32 = 0
    }

    private var entries: [IPNetwork: Entry] = [:]
    /// Of the last full pull taken (`synchronise`).
    private var generation: UInt32 = 0
    /// The networks the last full pull lacked (removed), until `synchronisedChanges`.
    private var removedBySynchronisation: [IPNetwork] = []
    private var origins = OriginTable()
    /// Each entry's end, earliest first (ends since replaced are skipped).
    private var ends = EndHeap<IPNetwork>()
    public var filter: DecisionFilter
    /// What a decision's network must pass: the floors, the never-bannable ranges, the allowlist.
    public var policy: ListPolicy
    public var allowlist: [IPNetwork] {
        get { policy.allowlist }
        set { policy.allowlist = newValue }
    }
    /// Decisions skipped since the start, by reason.
    public private(set) var skipped: [SkipReason: UInt64] = [:]

    public init(filter: DecisionFilter = DecisionFilter(), allowlist: [IPNetwork] = []) {
        self.init(filter: filter, policy: ListPolicy(allowlist: allowlist))
    }

    public init(filter: DecisionFilter, policy: ListPolicy) {
        self.filter = filter
        self.policy = policy
    }

    /// Networks enforced.
    public var networks: Int { entries.count }
    /// Distinct origins among them.
    public var originCount: Int { origins.count }

    /// Networks in force per origin, Ip and Range (for the metrics).
    public func census() -> [String: (ip: Int, range: Int)] {
        var census: [String: (ip: Int, range: Int)] = [:]
        for (slot, name) in origins.names.enumerated() where !name.isEmpty {
            census[name] = origins.uses[slot]
        }
        return census
    }

    /// What the maps hold for `network`.
    public func longest(_ network: IPNetwork) -> Claim? {
        entries[network].map { Claim(end: $0.end, origin: origins.names[Int($0.origin)]) }
    }

    /// Every network with its claim: what a full install writes.
    /// (Read as it is asked: no array of 100,000 claims is made.)
    public func wanted() -> some Collection<(IPNetwork, Claim)> {
        let names = origins.names
        return entries.lazy.map { ($0.key, Claim(end: $0.value.end, origin: names[Int($0.value.origin)])) }
    }

    /// Forgets everything (a full pull starts anew).
    public mutating func reset() {
        entries = [:]
        origins = OriginTable()
        ends = EndHeap()
    }

    /// The scope of a decision's `scope` field, if one enforced.
    private func scope(_ decision: Decision) -> Decision.Scope? {
        // The LAPI writes `Ip` and `Range`: compared as written first (no lowercased copy per
        // decision of a large pull).
        let scope: Decision.Scope? =
            switch decision.scope {
            case "Ip": .ip
            case "Range": .range
            default: Decision.Scope(rawValue: decision.scope.lowercased())
            }
        guard let scope, filter.scopes.contains(scope) else { return nil }
        return scope
    }

    private static func isBan(_ type: String) -> Bool { type == "ban" || type.lowercased() == "ban" }

    /// The network a decision names if it is to be enforced, else why not (counted).
    mutating func admit(_ decision: Decision) -> IPNetwork? {
        func skip(_ reason: SkipReason) -> IPNetwork? {
            skipped[reason, default: 0] += 1
            return nil
        }
        guard Self.isBan(decision.type) else { return skip(.type) }
        guard let scope = scope(decision) else { return skip(.scope) }
        if !filter.origins.isEmpty, !filter.origins.contains(where: { $0.lowercased() == decision.origin.lowercased() })
        {
            return skip(.filtered)
        }
        if !filter.scenariosContaining.isEmpty || !filter.scenariosNotContaining.isEmpty {
            let scenario = decision.scenario.lowercased()
            if !filter.scenariosContaining.isEmpty,
                !filter.scenariosContaining.contains(where: { scenario.contains($0.lowercased()) })
            {
                return skip(.filtered)
            }
            if filter.scenariosNotContaining.contains(where: { scenario.contains($0.lowercased()) }) {
                return skip(.filtered)
            }
        }
        guard let network = Decision.network(scope: scope, value: decision.value) else { return skip(.malformed) }
        switch policy.verdict(network) {
        case nil: break
        case .tooWide: return skip(.tooWide)
        case .neverBannable: return skip(.neverBannable)
        case .allowlisted: return skip(.allowlisted)
        }
        guard decision.seconds > 0 else { return skip(.ended) }
        return network
    }

    /// The network a deletion lifts: its value's, for a `ban` (or a deletion that does not say
    /// its type) of a scope enforced. Its duration, id and origin do not matter.
    func deletion(_ decision: Decision) -> IPNetwork? {
        guard decision.type.isEmpty || Self.isBan(decision.type), let scope = scope(decision) else { return nil }
        return Decision.network(scope: scope, value: decision.value)
    }

    /// Counts entries of an answer that were not decisions at all.
    mutating func countMalformed(_ count: Int) {
        if count > 0 { skipped[.malformed, default: 0] += UInt64(count) }
    }

    @discardableResult
    private mutating func remove(_ network: IPNetwork) -> Bool {
        guard let entry = entries.removeValue(forKey: network) else { return false }
        origins.release(entry.origin, range: !network.isSingleAddress)
        return true
    }

    private mutating func set(_ network: IPNetwork, end: UInt64, origin: String) {
        remove(network)
        entries[network] = Entry(end: end, origin: origins.retain(origin, range: !network.isSingleAddress))
        ends.push(end, network)
        // Ends of entries since replaced or removed are skipped when due; past twice the entries
        // (a long run of deltas), the heap is made again from what holds.
        if ends.count > 2 * entries.count + 4096 {
            ends.removeAll()
            for (network, entry) in entries { ends.push(entry.end, network) }
        }
    }

    /// Applies a pull: `deleted` first (each lifts its value), then `new` (a network keeps the
    /// longest end it was given), each ending at `now` + its remaining time.
    /// - Returns: per network touched, what the maps must now hold.
    public mutating func apply(_ stream: DecisionStream, now: UInt64) -> [Change] {
        countMalformed(stream.malformed)
        var touched = Set<IPNetwork>(minimumCapacity: stream.new.count + stream.deleted.count)
        reserve(stream.new.count)
        for decision in stream.deleted { delete(decision, &touched) }
        for decision in stream.new { add(decision, now: now, &touched) }
        return touched.map(change)
    }

    /// `apply` straight from an answer's bytes, each decision taken as it is read (no array of
    /// them: a pull of 100,000 holds only the set). - Returns: the networks it touched (what the
    /// maps must hold for them: `changes(of:)`, once the answer's bytes are gone), and the answer's
    /// counts of entries (for the statistics). - Throws: for an answer that is not one (the set as
    /// it was: the syntax is checked whole before any decision is handed over).
    public mutating func apply(
        json: UnsafeBufferPointer<UInt8>, now: UInt64
    ) throws(LAPIError)
        -> (touched: Set<IPNetwork>, counts: DecisionStream.Counts)
    {
        var touched = Set<IPNetwork>()
        let counts = try DecisionStream.forEach(
            bytes: json,
            reserve: { counts in
                touched.reserveCapacity(counts.new + counts.deleted)
                self.reserve(counts.new)
            },
            new: { self.add($0, now: now, &touched) }, deleted: { self.delete($0, &touched) })
        countMalformed(counts.malformed)
        return (touched, counts)
    }

    /// What the maps must hold for `networks` now.
    public func changes(of networks: Set<IPNetwork>) -> [Change] { networks.map(change) }

    /// `apply(json:)` over an array, with its changes (tests, benchmarks).
    public mutating func apply(json: [UInt8], now: UInt64) throws(LAPIError) -> ([Change], DecisionStream.Counts) {
        var result: Result<(touched: Set<IPNetwork>, counts: DecisionStream.Counts), LAPIError>!
        json.withUnsafeBufferPointer { bytes in
            result = Result { () throws(LAPIError) in try apply(json: bytes, now: now) }
        }
        let (touched, counts) = try result.get()
        return (changes(of: touched), counts)
    }

    /// Room for `more` entries (a pull of the community blocklist grows the set by tens of
    /// thousands at once).
    private mutating func reserve(_ more: Int) {
        entries.reserveCapacity(entries.count + more)
        ends.reserve(entries.count + more)
    }

    private mutating func delete(_ decision: Decision, _ touched: inout Set<IPNetwork>) {
        if let network = deletion(decision), remove(network) { touched.insert(network) }
    }

    private mutating func add(_ decision: Decision, now: UInt64, _ touched: inout Set<IPNetwork>) {
        guard let network = admit(decision) else { return }
        let end = now &+ UInt64(min(decision.seconds, 1e9) * 1e9)
        if let held = entries[network], held.end >= end { return }
        set(network, end: end, origin: decision.origin.isEmpty ? "unknown" : decision.origin)
        touched.insert(network)
    }

    private func change(_ network: IPNetwork) -> Change {
        longest(network).map { .install(network, $0) } ?? .remove(network)
    }

    /// Replaces the whole set by a full pull's (`startup=true`) and returns what differs: the
    /// networks whose entry changed (its origin, or its end by a second or more), came or went.
    /// Skips are not counted again (the decisions were counted when they came).
    public mutating func resync(_ stream: DecisionStream, now: UInt64) -> [Change] {
        let counted = begin(answer: stream.new.count)
        for decision in stream.new { take(decision, now: now) }
        finish(skipped: counted)
        return synchronisedChanges()
    }

    /// The whole set replaced by a full pull's, straight from its bytes and in place: a decision
    /// that gives a network what it holds (within a second) leaves it as it is, a network the
    /// answer does not give goes. So a full pull of 100,000 over a set of 100,000 holds one set,
    /// not two, and nothing beside: what changed is marked in the entries (`synchronisedChanges`
    /// lists it, once the answer's bytes are gone). The answer's `deleted` need not be read: what
    /// it does not hold goes. Skips are counted on the first (`countingSkips`) only.
    /// - Throws: for an answer that is not one (the set as it was: the syntax is checked first).
    public mutating func synchronise(
        json: UnsafeBufferPointer<UInt8>, now: UInt64, countingSkips: Bool
    ) throws(LAPIError) -> DecisionStream.Counts {
        var counted: [SkipReason: UInt64] = [:]
        let counts = try DecisionStream.forEach(
            bytes: json, reserve: { counted = self.begin(answer: $0.new) }, new: { self.take($0, now: now) },
            deleted: { _ in })
        countMalformed(counts.malformed)
        finish(skipped: countingSkips ? skipped : counted)
        return counts
    }

    /// The mark of an entry the last full pull changed (or added), beside its generation.
    private static let changedMark: UInt32 = 1 << 31

    /// - Returns: the skips counted before it.
    private mutating func begin(answer: Int) -> [SkipReason: UInt64] {
        generation = (generation &+ 1) & ~Self.changedMark
        removedBySynchronisation = []
        // Room for the answer's networks, not for both: most are those held.
        reserve(max(answer - entries.count, 0))
        return skipped
    }

    private mutating func take(_ decision: Decision, now: UInt64) {
        guard let network = admit(decision) else { return }
        let end = now &+ UInt64(min(decision.seconds, 1e9) * 1e9)
        let origin = decision.origin.isEmpty ? "unknown" : decision.origin
        if let held = entries[network] {
            if held.generation & ~Self.changedMark == generation {
                // A network this answer gave already: its longest decision holds.
                guard held.end < end else { return }
            } else if Claim(end: held.end, origin: origins.names[Int(held.origin)])
                .isSame(as: Claim(end: end, origin: origin))
            {
                entries[network]!.generation = generation
                return
            }
        }
        set(network, end: end, origin: origin)
        entries[network]!.generation = generation | Self.changedMark
    }

    private mutating func finish(skipped counted: [SkipReason: UInt64]) {
        skipped = counted
        let current = generation
        let gone = entries.compactMap { $0.value.generation & ~Self.changedMark == current ? nil : $0.key }
        for network in gone { remove(network) }
        removedBySynchronisation = gone
    }

    /// What the last full pull changed: networks it added or gave another entry, and those it lacked.
    public mutating func synchronisedChanges() -> [Change] {
        var changes: [Change] = []
        for (network, entry) in entries where entry.generation == generation | Self.changedMark {
            changes.append(.install(network, Claim(end: entry.end, origin: origins.names[Int(entry.origin)])))
        }
        changes += removedBySynchronisation.map { .remove($0) }
        removedBySynchronisation = []
        return changes
    }

    /// Drops the entries ended by `now`, earliest first. - Returns: the networks lifted.
    public mutating func purge(now: UInt64) -> [Change] {
        var lifted: [Change] = []
        while let first = ends.first, first.end <= now {
            ends.popFirst()
            // Removed, or given another end, since: not due.
            guard entries[first.key]?.end == first.end else { continue }
            remove(first.key)
            lifted.append(.remove(first.key))
        }
        return lifted
    }
}
