// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import LogTransport
import OffenceTable
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// How long a crossing is banned, and what counts as one.
public struct BanPolicy: Sendable, Equatable {
    /// Offences that get a client banned (fail2ban's `maxretry`).
    public var threshold: UInt32 = 3
    /// Seconds a ban lasts; 0 bans for good (fail2ban's `bantime`, where -1 is for good).
    public var banTime: UInt64 = 30
    /// Offences further apart than this many seconds start a new count; 0: count until the ban ends.
    public var findTime: UInt32 = 0

    public init() {}

    /// The end of a ban of `seconds` made at `now` (boot nanoseconds); 0 seconds: for good.
    static func expiry(seconds: UInt64, now: UInt64) -> BanExpiry {
        seconds == 0 ? .permanent : BanExpiry.after(seconds: seconds, now: now) ?? .permanent
    }
}

/// What a jail's lines are matched with.
public enum JailFilter: Sendable, Equatable {
    /// The built-in line format (`LineScanner`).
    case builtIn
    /// `--failregex` patterns (`FailRegex`: `<HOST>` only).
    case failRegex([String])
    /// A fail2ban filter (from filter.d, or inline patterns of a configuration file), matched with
    /// fail2ban's semantics: its date cut first, prefregex, failregex, ignoreregex, multi-line.
    /// - Parameters: `useDNS`: the jail's `usedns` (names are never resolved); `detectsDates`:
    ///   false for sources whose lines carry no date.
    case fail2ban(FilterDefinition, useDNS: String?, detectsDates: Bool)

    /// For the start-up log.
    public var summary: String {
        switch self {
        case .builtIn: "built-in line format"
        case .failRegex(let patterns): "\(patterns.count) failregex pattern(s)"
        case .fail2ban(let definition, _, _):
            definition.files.isEmpty
                ? "\(definition.failregex.count) failregex, \(definition.ignoreregex.count) ignoreregex pattern(s)"
                : "\(definition.reference) from \(directory(of: definition.files.last ?? definition.file))"
        }
    }

    private func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    /// Whether a failure may need lines before it (fail2ban's `maxlines` above 1, or `<F-MLFID>`
    /// connections): such a filter must see its source's lines in order, on one thread.
    var needsLineOrder: Bool {
        guard case .fail2ban(let definition, _, _) = self else { return false }
        return definition.maxlines > 1
            || (definition.failregex + [definition.prefregex ?? ""]).contains {
                $0.contains("<F-MLFID>")
            }
    }
}

/// One jail as configured: a source of lines, a filter, and what a crossing costs. The daemon's
/// flags make one jail named `default`; a configuration file makes any number.
public struct JailConfiguration: Sendable, Equatable {
    /// The jail's name (`[jail.NAME]`, fail2ban's section name).
    public var name: String
    /// Where its lines come from (fail2ban's `logpath` may name several files). Jails with equal
    /// sources share one reader: a log is read once.
    public var sources: [TransportConfiguration]
    /// The first source (a jail of the flags or of a configuration file has one).
    public var source: TransportConfiguration {
        get { sources[0] }
        set { sources = [newValue] }
    }
    public var filter: JailFilter = .builtIn
    public var policy = BanPolicy()
    /// Ban times that grow for repeat offenders (fail2ban's `bantime.increment`); nil: fixed.
    public var escalation: Escalation?
    /// Networks this jail never bans (fail2ban's `ignoreip`), besides the daemon's allowlist.
    public var ignore = Allowlist.none
    /// Bins of the jail's offence table (the jail of the flags: `--table-bins`).
    public var tableBins = JailConfiguration.defaultTableBins
    /// The table of a jail of a configuration file, unless it says otherwise: 32 MB, room for a
    /// million clients at once (the flags' jail, which may face a flood of spoofed sources,
    /// defaults to 6,000,011).
    public static let defaultTableBins = 1_000_003
    /// Where the jail was defined, for the start-up log ("fail2ban jail.local, action replaced by
    /// XDP enforcement").
    public var origin = "command line"
    /// Bans of networks rather than addresses (`ipv6-prefix`, `aggregate-v4`, `aggregate-v6`).
    public var aggregation = Aggregation()

    public init(name: String, source: TransportConfiguration) {
        self.name = name
        sources = [source]
    }

    /// Checks the jail's own settings without creating anything.
    func validate(regexMatchLimit: UInt32, maxLineLength: Int) throws(DaemonError) {
        let label = "jail \(name):"
        if name.isEmpty || name.utf8.count > Self.longestName
            || !name.utf8.allSatisfy({
                $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0 | 0x20)
            })
        {
            throw .invalidSetting(
                "jail name '\(name)': use 1-\(Self.longestName) letters, digits, '-', '_' or '.'")
        }
        if policy.threshold < 1 || policy.threshold > OffenceTable.highestCount {
            throw .invalidSetting("\(label) maxretry (--threshold) must be 1...\(OffenceTable.highestCount)")
        }
        if policy.banTime > DaemonConfiguration.maximumBanTime {
            throw .invalidSetting(
                "\(label) bantime \(policy.banTime) s is too long: at most \(DaemonConfiguration.maximumBanTime) "
                    + "seconds (about 100 years); use 0 (fail2ban: -1) for bans that never end")
        }
        // OffenceTable's range, refused here so that --check-config refuses it too.
        if tableBins < 16 || tableBins > 1 << 31 {
            throw .invalidSetting("\(label) table-bins must be 16...2147483648")
        }
        try escalation?.validate(jail: name)
        if sources.isEmpty { throw .invalidSetting("\(label) has no source of lines") }
        for source in sources {
            do {
                try source.validate()
            } catch {
                throw .invalidSetting("\(label) source: \(error)")
            }
        }
        if case .fail2ban(let definition, let useDNS, let detectsDates) = filter {
            do {
                _ = try CompiledFilter(
                    definition, useDNS: useDNS, maxLineLength: maxLineLength, matchLimit: regexMatchLimit,
                    detectsDates: detectsDates)
            } catch {
                throw .invalidSetting("\(label) \(error)")
            }
        }
        if case .failRegex(let patterns) = filter {
            for pattern in patterns {
                do {
                    _ = try FailRegex(pattern, matchLimit: regexMatchLimit)
                } catch {
                    throw .invalidSetting("\(label) \(error)")
                }
            }
        }
    }

    /// One line for the start-up log and --check-config: where it reads, what it matches, what a
    /// crossing costs.
    public var description: String {
        let where_ = sources.map { source in
            switch source.kind {
            case .file: "file \(source.file.path)"
            case .shm: "shm \(source.shm.name)"
            case .socket: "socket \(source.socket.directory)"
            case .journal:
                "journal"
                    + (source.journal.directory.map { " in \($0)" } ?? "")
                    + (source.journal.match.isEmpty ? "" : " matching \(source.journal.match)")
            case .syslog:
                "syslog \(source.syslog.path)" + (source.syslog.udp.map { " and udp \($0)" } ?? "")
                    + (source.syslog.tags.isEmpty ? "" : " tagged \(source.syslog.tags.joined(separator: ","))")
            }
        }.joined(separator: ", ")
        var line =
            "jail \(name) (\(origin)): \(where_), filter \(filter.summary), maxretry \(policy.threshold)"
            + (policy.findTime > 0 ? " within \(policy.findTime) s" : "")
            + ", bantime \(policy.banTime == 0 ? "forever" : "\(policy.banTime) s")"
        if let escalation { line += ", escalating (\(escalation.summary))" }
        if let prefix = aggregation.ipv6Prefix { line += ", IPv6 counted and banned by /\(prefix)" }
        for (family, rule) in [("IPv4", aggregation.ipv4), ("IPv6", aggregation.ipv6)] {
            if let rule { line += ", \(rule.count) \(family) bans in a /\(rule.length) ban it" }
        }
        if !ignore.isEmpty { line += ", ignoreip " + ignore.descriptions.joined(separator: " ") }
        return line
    }

    /// Longest jail name (it is written in the ban log and shown by `portcullis list`).
    public static let longestName = 32
}

/// What turns one service's lines into bans: its filter, the networks it never bans, its offence
/// table (its own namespace of counts: a client can be at 2 of 5 in one jail and 1 of 3 in
/// another) and its ban policy.
final class Jail: Sendable {
    let configuration: JailConfiguration
    var name: String { configuration.name }
    var policy: BanPolicy { configuration.policy }
    /// Everything this jail never bans: the daemon's allowlist, this host's addresses, `ignoreip`.
    let allowlist: Allowlist
    let table: OffenceTable
    let maxLineLength: Int
    /// Compiled once; each worker makes its own matchers (PCRE2 match data is per thread).
    let regexes: [FailRegex]
    let fail2banFilter: CompiledFilter?
    /// The ban times of repeat offenders, if they grow.
    let escalation: Escalation?
    /// The origin its bans carry in the maps (`BanMaps.originSlots`): `portcullis list` names the
    /// jail with it.
    let origin: UInt32
    /// Where bans are counted for escalation: the daemon's one history, given to every jail when
    /// any jail escalates (`overalljails` counts the bans of all), nil otherwise.
    let history: BanHistory?
    /// Its recent bans by prefix (`aggregate-v4`/`-v6`); nil when it aggregates nothing.
    let aggregator: BanAggregator?

    /// - Parameter table: the offence table of the same jail in the daemon this one replaces (a
    ///   reload), whose counts go on; nil: a new one.
    init(
        _ configuration: JailConfiguration, daemon: DaemonConfiguration, allowlist daemonAllowlist: Allowlist,
        history: BanHistory?, numaNode: Int?, origin: UInt32, keeping table: OffenceTable? = nil
    ) throws(DaemonError) {
        self.configuration = configuration
        self.origin = origin
        allowlist = daemonAllowlist.adding(configuration.ignore)
        maxLineLength = daemon.maxLineLength
        escalation = configuration.escalation
        self.history = history
        let policy = configuration.policy
        aggregator = BanAggregator(configuration.aggregation, findTimeSeconds: policy.findTime)
        if let table {
            self.table = table
        } else {
            do throws(SettingError) {
                self.table = try OffenceTable(
                    bins: configuration.tableBins, threshold: policy.threshold,
                    findTime: policy.findTime, banTime: UInt32(clamping: policy.banTime),
                    idleHorizon: daemon.idleHorizon, numaNode: numaNode)
            } catch {
                throw .invalidSetting("jail \(configuration.name): \(error.description)")
            }
        }
        switch configuration.filter {
        case .builtIn:
            regexes = []
            fail2banFilter = nil
        case .fail2ban(let definition, let useDNS, let detectsDates):
            regexes = []
            do throws(Fail2banError) {
                fail2banFilter = try CompiledFilter(
                    definition, useDNS: useDNS, maxLineLength: daemon.maxLineLength,
                    matchLimit: daemon.regexMatchLimit, detectsDates: detectsDates)
            } catch {
                throw .invalidSetting("jail \(configuration.name): \(error.description)")
            }
        case .failRegex(let patterns):
            fail2banFilter = nil
            do throws(FailRegexError) {
                regexes = try patterns.map { (pattern) throws(FailRegexError) in
                    try FailRegex(pattern, matchLimit: daemon.regexMatchLimit)
                }
            } catch {
                throw .invalidSetting("jail \(configuration.name): \(error.description)")
            }
        }
    }

    /// A filter for one worker thread (reading a syslog source: with the jail's route on it).
    func makeFilter(route: SyslogRoute? = nil) -> LineFilter {
        LineFilter(
            scanner: LineScanner(maxLineLength: maxLineLength), matchers: regexes.map { FailRegex.Matcher($0) },
            fail2ban: fail2banFilter.map { FilterMatcher($0) }, route: route)
    }

    /// How long each of `addresses` is banned now, in seconds (0: for good): the jail's ban time,
    /// grown for repeat offenders by its escalation; and each one's level (the bans the history
    /// counts before this one; empty without escalation: all 0).
    func banSeconds(for addresses: [IPAddress], wallSeconds: UInt64) -> (seconds: [UInt64], levels: [UInt32]) {
        guard let escalation, let history else {
            return ([UInt64](repeating: policy.banTime, count: addresses.count), [])
        }
        let banTime = policy.banTime
        let levels = history.previousBans(
            addresses, jail: escalation.overallJails ? nil : name, wallSeconds: wallSeconds)
        return (levels.map { escalation.banSeconds(base: banTime, previousBans: $0) }, levels)
    }

    /// Adds bans that went in (lasting `seconds` each) to the history escalation counts (when a
    /// jail escalates).
    func recordBans(_ addresses: [IPAddress], seconds: [UInt64], wallSeconds: UInt64) {
        history?.record(addresses, seconds: seconds, jail: name, wallSeconds: wallSeconds)
    }
}

/// A jail's filter as one worker runs it: the built-in scanner, the failregexes in turn, or a
/// fail2ban filter.
struct LineFilter {
    let scanner: LineScanner
    let matchers: [FailRegex.Matcher]
    /// Holds the multi-line state of its filter (per thread).
    let fail2ban: FilterMatcher?
    /// A syslog source's lines: which are the jail's, and what of them its filter reads.
    var route: SyslogRoute? = nil

    @inline(__always)
    func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
        if let fail2ban { return fail2ban.scan(line) }
        if matchers.isEmpty { return scanner.scan(line) }
        if line.count > scanner.maxLineLength { return .tooLong }
        var outcome = ScanOutcome.notMatching
        for matcher in matchers {
            outcome = matcher.scan(line)
            if outcome != .notMatching { break }
        }
        return outcome
    }
}
