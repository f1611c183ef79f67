import PortcullisCore

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
}

/// The decisions a bouncer holds, by network, and what the maps must show for them: per network
/// the longest of its decisions (its end and origin). Deletions by id are idempotent; a network
/// whose last decision goes is lifted. Times are `CLOCK_BOOTTIME` nanoseconds (what the XDP program
/// compares a ban's end with).
public struct DecisionSet: Sendable {
    public struct Claim: Sendable, Equatable {
        public let end: UInt64
        public let origin: String
    }

    /// What the maps should hold for a network now: its longest claim, or nothing.
    public enum Change: Sendable, Equatable {
        case install(IPNetwork, Claim)
        case remove(IPNetwork)

        public var network: IPNetwork {
            switch self {
            case .install(let network, _), .remove(let network): network
            }
        }
    }

    /// The decisions of one network: the first inline (most networks have one), others beside.
    struct Held: Sendable {
        var id: Int
        var claim: Claim
        var more: [Int: Claim]?

        var longest: Claim {
            guard let more else { return claim }
            return more.values.reduce(claim) { ($0.end, $0.origin) < ($1.end, $1.origin) ? $1 : $0 }
        }

        func forEach(_ body: (Int, Claim) -> Void) {
            body(id, claim)
            for (id, claim) in more ?? [:] { body(id, claim) }
        }

        func claim(_ id: Int) -> Claim? { id == self.id ? claim : more?[id] }

        mutating func set(_ id: Int, _ claim: Claim) {
            if id == self.id { self.claim = claim } else { more = (more ?? [:]).merging([id: claim]) { $1 } }
        }

        /// - Returns: whether none is left.
        mutating func remove(_ id: Int) -> Bool {
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
    private var networkOf: [Int: IPNetwork] = [:]
    /// Each decision's end, earliest first (entries of decisions since gone are skipped).
    private var ends = EndHeap<Int>()
    public var filter: DecisionFilter
    public var allowlist: [IPNetwork]
    /// Decisions skipped since the start, by reason.
    public private(set) var skipped: [SkipReason: UInt64] = [:]

    public init(filter: DecisionFilter = DecisionFilter(), allowlist: [IPNetwork] = []) {
        self.filter = filter
        self.allowlist = allowlist
    }

    public var count: Int { networkOf.count }
    public var networks: Int { held.count }

    /// In force per origin and scope (for the metrics).
    public func census() -> [String: (ip: Int, range: Int)] {
        var census: [String: (ip: Int, range: Int)] = [:]
        for (network, decisions) in held {
            decisions.forEach { _, claim in
                var entry = census[claim.origin] ?? (0, 0)
                if network.isSingleAddress { entry.ip += 1 } else { entry.range += 1 }
                census[claim.origin] = entry
            }
        }
        return census
    }

    /// The longest claim of `network`.
    public func longest(_ network: IPNetwork) -> Claim? { held[network]?.longest }

    /// Every network with its longest claim: what a resync installs.
    public func wanted() -> [(IPNetwork, Claim)] {
        held.map { ($0.key, $0.value.longest) }
    }

    /// Forgets everything (a full pull starts anew).
    public mutating func reset() {
        held = [:]
        networkOf = [:]
        ends.removeAll()
    }

    /// The network a decision names if it is to be enforced, else why not (counted).
    mutating func admit(_ decision: Decision) -> IPNetwork? {
        func skip(_ reason: SkipReason) -> IPNetwork? {
            skipped[reason, default: 0] += 1
            return nil
        }
        // The LAPI writes `ban`, `Ip` and `Range`: compared as written first (no lowercased copy
        // per decision of a large pull).
        guard decision.type == "ban" || decision.type.lowercased() == "ban" else { return skip(.type) }
        let scope: Decision.Scope? =
            switch decision.scope {
            case "Ip": .ip
            case "Range": .range
            default: Decision.Scope(rawValue: decision.scope.lowercased())
            }
        guard let scope, filter.scopes.contains(scope) else { return skip(.scope) }
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
        if allowlist.contains(where: {
            $0.family == network.family && $0.length <= network.length && $0.contains(network.address)
        }) {
            return skip(.allowlisted)
        }
        guard decision.seconds > 0 else { return skip(.ended) }
        return network
    }

    /// Counts entries of an answer that were not decisions at all.
    mutating func countMalformed(_ count: Int) {
        if count > 0 { skipped[.malformed, default: 0] += UInt64(count) }
    }

    /// Applies a pull: `deleted` first, then `new`, each ending at `now` + its remaining time.
    /// - Returns: per network touched, what the maps must now hold.
    public mutating func apply(_ stream: DecisionStream, now: UInt64) -> [Change] {
        countMalformed(stream.malformed)
        // Room first: a pull of the community blocklist grows them by tens of thousands at once.
        var touched = Set<IPNetwork>(minimumCapacity: stream.new.count + stream.deleted.count)
        held.reserveCapacity(held.count + stream.new.count)
        networkOf.reserveCapacity(networkOf.count + stream.new.count)
        for decision in stream.deleted {
            if let network = remove(id: decision.id) { touched.insert(network) }
        }
        for decision in stream.new {
            // A decision that comes again (same id) replaces what it was.
            if let network = remove(id: decision.id) { touched.insert(network) }
            guard let network = admit(decision) else { continue }
            let end = now &+ UInt64(min(decision.seconds, 1e9) * 1e9)
            let claim = Claim(end: end, origin: decision.origin.isEmpty ? "unknown" : decision.origin)
            if held[network] == nil {
                held[network] = Held(id: decision.id, claim: claim)
            } else {
                held[network]!.set(decision.id, claim)
            }
            networkOf[decision.id] = network
            ends.push(end, decision.id)
            touched.insert(network)
        }
        return touched.map { network in longest(network).map { .install(network, $0) } ?? .remove(network) }
    }

    /// Replaces the whole set by a full pull's (`startup=true`) and returns what differs: the
    /// networks whose longest claim changed, came or went. Skips are not counted again (the
    /// decisions were counted when they came).
    public mutating func resync(_ stream: DecisionStream, now: UInt64) -> [Change] {
        let before = Dictionary(uniqueKeysWithValues: wanted())
        let counted = skipped
        reset()
        _ = apply(stream, now: now)
        skipped = counted
        var changes: [Change] = []
        for (network, claim) in wanted() where before[network].map({ !Self.same($0, claim) }) ?? true {
            changes.append(.install(network, claim))
        }
        for network in before.keys where held[network] == nil { changes.append(.remove(network)) }
        return changes
    }

    /// The same claim for the maps: one origin, ends within a second (each pull computes an end
    /// from the remaining time it is given).
    static func same(_ a: Claim, _ b: Claim) -> Bool {
        a.origin == b.origin && (a.end > b.end ? a.end - b.end : b.end - a.end) < 1_000_000_000
    }

    /// Drops the claims ended by `now`, earliest first. - Returns: the networks whose longest claim
    /// changed.
    public mutating func purge(now: UInt64) -> [Change] {
        var touched = Set<IPNetwork>()
        while let first = ends.first, first.end <= now {
            ends.popFirst()
            // A decision deleted, or replaced by one with a later end, since: not due.
            guard let network = networkOf[first.key], held[network]?.claim(first.key)?.end == first.end else {
                continue
            }
            _ = remove(id: first.key)
            touched.insert(network)
        }
        return touched.map { network in longest(network).map { .install(network, $0) } ?? .remove(network) }
    }

    private mutating func remove(id: Int) -> IPNetwork? {
        guard let network = networkOf.removeValue(forKey: id) else { return nil }
        if held[network]?.remove(id) == true { held[network] = nil }
        return network
    }
}
