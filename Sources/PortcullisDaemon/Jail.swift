import OffenceTable
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// How long a crossing is banned, and what counts as one.
public struct BanPolicy: Sendable, Equatable {
    /// Offences that get a client banned.
    public var threshold: UInt32 = 3
    /// Seconds a ban lasts; 0 bans for good.
    public var banTime: UInt64 = 30
    /// Offences further apart than this many seconds start a new count; 0: count until the ban ends.
    public var findTime: UInt32 = 0

    public init() {}

    /// The end of a ban made at `now` (boot nanoseconds).
    func expiry(now: UInt64) -> BanExpiry {
        banTime == 0 ? .permanent : BanExpiry.after(seconds: banTime, now: now) ?? .permanent
    }
}

/// What turns one service's lines into bans: its filter (the built-in line format, or failregex
/// patterns), the networks it never bans, its offence table and its ban policy. The daemon runs
/// one jail today, made from its flags; each jail of a configuration file will be one more.
final class Jail: Sendable {
    let name: String
    let policy: BanPolicy
    let allowlist: Allowlist
    /// This host's own addresses and default gateways, as found at start (in `allowlist`).
    let hostAddresses: Allowlist
    let table: OffenceTable
    let maxLineLength: Int
    /// Compiled once; each worker makes its own matchers (PCRE2 match data is per thread).
    let regexes: [FailRegex]

    init(name: String, configuration: DaemonConfiguration, numaNode: Int?) throws(DaemonError) {
        self.name = name
        policy = configuration.policy
        var hostAddresses = Allowlist.none
        if configuration.protectHost {
            for address in HostAddresses.current() { try? hostAddresses.add("\(address)") }
        }
        allowlist = configuration.allowlist.adding(hostAddresses)
        self.hostAddresses = hostAddresses
        maxLineLength = configuration.maxLineLength
        do throws(SettingError) {
            table = try OffenceTable(
                bins: configuration.tableBins, threshold: policy.threshold,
                findTime: policy.findTime, banTime: UInt32(clamping: policy.banTime),
                numaNode: numaNode)
        } catch {
            throw .invalidSetting(error.description)
        }
        do throws(FailRegexError) {
            regexes = try configuration.failRegexes.map { (pattern) throws(FailRegexError) in
                try FailRegex(pattern, matchLimit: configuration.regexMatchLimit)
            }
        } catch {
            throw .invalidSetting(error.description)
        }
    }

    /// A filter for one worker thread.
    func makeFilter() -> LineFilter {
        LineFilter(scanner: LineScanner(maxLineLength: maxLineLength), matchers: regexes.map { FailRegex.Matcher($0) })
    }
}

/// A jail's filter as one worker runs it: the built-in scanner, or the failregexes in turn.
struct LineFilter {
    let scanner: LineScanner
    let matchers: [FailRegex.Matcher]

    @inline(__always)
    func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
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
