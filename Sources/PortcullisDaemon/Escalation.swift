// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// Ban times that grow for repeat offenders, with fail2ban's names and arithmetic
/// (`bantime.increment` in `server/jail.py` and `server/observer.py`): a client banned `n` times
/// before (in this jail, or in every jail with `overalljails`) gets, instead of the jail's ban time
/// `t`,
///
/// - with `multipliers` `m`: `t * factor * m[min(n, m.count - 1)]`,
/// - else with the default formula: `max(t, t * 2^min(n, 20) * factor)`,
/// - or with the exponential one (jail.conf's alternative):
///   `max(t, t * exp((n + 1) * factor) / exp(factor))`,
///
/// then at most `maxTime`, then plus up to `randomTime` seconds at random. A first ban (n = 0) and
/// a ban for good are never changed, as in fail2ban.
public struct Escalation: Sendable, Equatable {
    public enum Growth: Sendable, Equatable {
        /// fail2ban's default `bantime.formula`: `ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor`.
        case doubling
        /// jail.conf's alternative: `ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)`.
        case exponential
        /// `bantime.multipliers`.
        case multipliers([Double])
    }

    public var growth = Growth.doubling
    /// `bantime.factor`.
    public var factor = 1.0
    /// `bantime.maxtime`, seconds.
    public var maxTime: UInt64?
    /// `bantime.rndtime`, seconds.
    public var randomTime: UInt64?
    /// `bantime.overalljails`: count the client's bans in every jail, not only this one.
    public var overallJails = false

    public init() {}

    /// For the start-up log.
    public var summary: String {
        var parts: [String]
        switch growth {
        case .doubling: parts = ["doubling"]
        case .exponential: parts = ["exponential"]
        case .multipliers(let values): parts = ["multipliers " + values.map { "\($0)" }.joined(separator: " ")]
        }
        if factor != 1 { parts.append("factor \(factor)") }
        if let maxTime { parts.append("at most \(maxTime) s") }
        if let randomTime { parts.append("plus up to \(randomTime) s at random") }
        if overallJails { parts.append("counting every jail's bans") }
        return parts.joined(separator: ", ")
    }

    /// The two formulas fail2ban's jail.conf documents, whitespace aside; any other is a Python
    /// expression this daemon does not evaluate.
    public static func growth(formula: String) -> Growth? {
        let compact = formula.filter { !$0.isWhitespace }
        if compact == "ban.Time*(1<<(ban.Countifban.Count<20else20))*banFactor" { return .doubling }
        if compact == "ban.Time*math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)" { return .exponential }
        return nil
    }

    func validate(jail: String) throws(DaemonError) {
        if !(factor > 0 && factor <= 1_000) {
            throw .invalidSetting("jail \(jail): bantime.factor \(factor) must be above 0 and at most 1000")
        }
        if case .multipliers(let values) = growth, values.isEmpty || values.contains(where: { !($0 >= 0) }) {
            throw .invalidSetting("jail \(jail): bantime.multipliers must be one or more numbers, none negative")
        }
    }

    /// The ban time of a client banned `previousBans` times before, for a jail ban time of `base`
    /// seconds (0: for good, kept).
    public func banSeconds(base: UInt64, previousBans: UInt32, random: Double = Double.random(in: 0..<1)) -> UInt64 {
        guard base > 0, previousBans > 0 else { return base }
        let time = Double(base)
        let count = Int(previousBans)
        var seconds: Double
        switch growth {
        case .doubling:
            seconds = max(time, time * Double(1 << min(count, 20)) * factor)
        case .exponential:
            seconds = max(time, time * exp(Double(count + 1) * factor) / exp(factor))
        case .multipliers(let values):
            seconds = time * factor * values[min(count, values.count - 1)]
        }
        if let maxTime { seconds = min(seconds, Double(maxTime)) }
        if let randomTime { seconds += random * Double(randomTime) }
        let longest = Double(DaemonConfiguration.maximumBanTime)
        // A multiplier of 0 would mean "for good" in the maps: a ban lasts a second at least.
        return seconds >= longest ? UInt64(longest) : max(UInt64(seconds.rounded()), 1)
    }
}

/// How often each client was banned, per jail: what escalation counts (fail2ban keeps this in its
/// SQLite database's `bips` table). Bounded as fail2ban purges `bips` (`_purge_bips`): a record is
/// forgotten once its last ban is older than `maximumAge` (`dbpurgeage`) *and* that ban has been
/// over for three times its length beyond it; a record of a ban for good is kept. Past `capacity`
/// clients the oldest go first. Kept across restarts in the state directory (`save`, `load`).
public final class BanHistory: Sendable {
    struct Record: Codable, Sendable {
        var jail: String
        var bans: UInt32
        /// Wall-clock seconds of the last ban (the file outlives boots).
        var last: UInt64
        /// How long that ban was, in seconds; 0: for good.
        var seconds: UInt64

        /// fail2ban's purge: `timeofban < now - age and bantime != -1 and timeofban + 3 * bantime < now - age`.
        func isOutdated(now: UInt64, maximumAge: UInt64) -> Bool {
            guard seconds > 0 else { return false }
            let horizon = now > maximumAge ? now - maximumAge : 0
            return last < horizon && last &+ 3 &* seconds < horizon
        }
    }

    private struct State {
        var records: [IPAddress: [Record]] = [:]
        var dirty = false
    }

    private let state = Mutex(State())
    public let capacity: Int
    public let maximumAge: UInt64
    /// Where it is kept; nil: in memory only.
    public let path: String?

    public init(path: String?, capacity: Int = 100_000, maximumAge: UInt64 = 86_400) {
        self.path = path
        self.capacity = max(capacity, 1)
        self.maximumAge = maximumAge
    }

    /// Clients with a history.
    public var count: Int { state.withLock { $0.records.count } }

    /// Bans of `addresses` before now, in `jail` (nil: in every jail), not older than `maximumAge`.
    func previousBans(_ addresses: [IPAddress], jail: String?, wallSeconds: UInt64) -> [UInt32] {
        state.withLock { state in
            addresses.map { address in
                guard let records = state.records[address] else { return 0 }
                return records.reduce(0) { sum, record in
                    (jail == nil || record.jail == jail) && !record.isOutdated(now: wallSeconds, maximumAge: maximumAge)
                        ? sum &+ record.bans : sum
                }
            }
        }
    }

    /// Records one more ban of each of `addresses` in `jail` at `wallSeconds`, lasting `seconds`
    /// (in `addresses` order; 0: for good).
    func record(_ addresses: [IPAddress], seconds: [UInt64], jail: String, wallSeconds: UInt64) {
        guard !addresses.isEmpty else { return }
        state.withLock { state in
            for (position, address) in addresses.enumerated() {
                var records = state.records[address] ?? []
                // Outdated records count no more: the count starts over, as after fail2ban's purge.
                records.removeAll { $0.isOutdated(now: wallSeconds, maximumAge: maximumAge) }
                let length = position < seconds.count ? seconds[position] : 0
                if let index = records.firstIndex(where: { $0.jail == jail }) {
                    records[index].bans &+= 1
                    records[index].last = wallSeconds
                    records[index].seconds = length
                } else {
                    records.append(Record(jail: jail, bans: 1, last: wallSeconds, seconds: length))
                }
                state.records[address] = records
            }
            state.dirty = true
            if state.records.count > capacity {
                Self.trim(&state, to: capacity, maximumAge: maximumAge, now: wallSeconds)
            }
        }
    }

    /// Forgets the outdated, then the oldest, until at most 90% of `capacity` remain (so that
    /// trimming, O(n log n), happens once per tenth of the capacity at most).
    private static func trim(_ state: inout State, to capacity: Int, maximumAge: UInt64, now: UInt64) {
        state.records = state.records.filter { $0.value.contains { !$0.isOutdated(now: now, maximumAge: maximumAge) } }
        let keep = capacity - capacity / 10
        guard state.records.count > keep else { return }
        let newest = state.records.map { ($0.key, $0.value.map(\.last).max() ?? 0) }.sorted { $0.1 > $1.1 }
        state.records = Dictionary(
            uniqueKeysWithValues: newest.prefix(keep).map { ($0.0, state.records[$0.0] ?? []) })
    }

    /// The file's layout: one entry per client and jail.
    struct Stored: Codable {
        var version = 1
        var entries: [Entry]

        struct Entry: Codable {
            var address: String
            var jail: String
            var bans: UInt32
            var last: UInt64
            var seconds: UInt64
        }
    }

    /// Writes the history to `path` (atomically) if it changed since the last save.
    public func save() throws(Errno) {
        guard let path else { return }
        let snapshot: [IPAddress: [Record]]? = state.withLock { state in
            guard state.dirty else { return nil }
            state.dirty = false
            return state.records
        }
        guard let snapshot else { return }
        var entries: [Stored.Entry] = []
        entries.reserveCapacity(snapshot.count)
        for (address, records) in snapshot {
            for record in records {
                entries.append(
                    .init(
                        address: address.description, jail: record.jail, bans: record.bans, last: record.last,
                        seconds: record.seconds))
            }
        }
        do throws(Errno) {
            try JSONOutput.write(Stored(entries: entries), to: path)
        } catch {
            state.withLock { $0.dirty = true }
            throw error
        }
    }

    /// Reads the history saved at `path`; a missing file is an empty history. A file that cannot
    /// be read (cut short by a crash, say) is moved aside to `PATH.bad` and the history starts over:
    /// a cache of counts must not keep the daemon from protecting the host.
    /// - Returns: what was wrong with the file, if something was (for the start-up log).
    @discardableResult
    public func load(wallSeconds: UInt64) -> String? {
        guard let path else { return nil }
        let stored: Stored
        do throws(StateFile.Problem) {
            // No link followed, no FIFO waited for: a state file that is not one is moved aside.
            guard let bytes = try StateFile.read(path, limit: 1 << 30) else { return nil }
            guard let decoded = try? JSONDecoder().decode(Stored.self, from: Data(bytes)) else {
                throw StateFile.Problem("is not a ban history (not its JSON; cut short by a crash?)")
            }
            stored = decoded
        } catch {
            guard let aside = StateFile.setAside(path) else {
                return "the ban history \(path) \(error) and cannot be moved aside (\(Errno(errno))); the history "
                    + "starts over: remove it"
            }
            return "the ban history \(path) \(error); moved to \(aside), the history starts over"
        }
        state.withLock { state in
            for entry in stored.entries {
                let record = Record(jail: entry.jail, bans: entry.bans, last: entry.last, seconds: entry.seconds)
                guard !record.isOutdated(now: wallSeconds, maximumAge: maximumAge), let key = IPAddress(entry.address)
                else { continue }
                state.records[key, default: []].append(record)
            }
            if state.records.count > capacity {
                Self.trim(&state, to: capacity, maximumAge: maximumAge, now: wallSeconds)
            }
        }
        return nil
    }
}
