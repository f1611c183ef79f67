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

/// The decisions a bouncer holds, by network, and what the maps must show for them: per network
/// the longest of its decisions (its end and origin). Deletions by id are idempotent; a network
/// whose last decision goes is lifted. Times are `CLOCK_BOOTTIME` nanoseconds (what the XDP program
/// compares a ban's end with).
public struct DecisionSet: Sendable {
    public typealias Claim = ListClaim
    public typealias Change = ListChange

    /// The decisions by id, each on its network.
    private var claims = ListClaims<Int>()
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

    public var count: Int { claims.count }
    public var networks: Int { claims.networks }

    /// In force per origin and scope (for the metrics).
    public func census() -> [String: (ip: Int, range: Int)] {
        var census: [String: (ip: Int, range: Int)] = [:]
        claims.forEachClaim { network, claim in
            var entry = census[claim.origin] ?? (0, 0)
            if network.isSingleAddress { entry.ip += 1 } else { entry.range += 1 }
            census[claim.origin] = entry
        }
        return census
    }

    /// The longest claim of `network`.
    public func longest(_ network: IPNetwork) -> Claim? { claims.longest(network) }

    /// Every network with its longest claim: what a resync installs.
    public func wanted() -> [(IPNetwork, Claim)] { claims.wanted() }

    /// Forgets everything (a full pull starts anew).
    public mutating func reset() { claims.reset() }

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
        switch policy.verdict(network) {
        case nil: break
        case .tooWide: return skip(.tooWide)
        case .neverBannable: return skip(.neverBannable)
        case .allowlisted: return skip(.allowlisted)
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
        claims.reserve(stream.new.count)
        for decision in stream.deleted {
            if let network = claims.remove(decision.id) { touched.insert(network) }
        }
        for decision in stream.new {
            // A decision that comes again (same id) replaces what it was.
            if let network = claims.remove(decision.id) { touched.insert(network) }
            guard let network = admit(decision) else { continue }
            let end = now &+ UInt64(min(decision.seconds, 1e9) * 1e9)
            claims.set(
                decision.id, network, Claim(end: end, origin: decision.origin.isEmpty ? "unknown" : decision.origin))
            touched.insert(network)
        }
        return touched.map { claims.change($0) }
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
        return claims.changes(since: before)
    }

    /// Drops the claims ended by `now`, earliest first. - Returns: the networks whose longest claim
    /// changed.
    public mutating func purge(now: UInt64) -> [Change] { claims.purge(now: now) }
}
