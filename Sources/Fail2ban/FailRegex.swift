// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

/// Why a failregex was refused.
public enum FailRegexError: Error, CustomStringConvertible, Equatable {
    case missingHost(pattern: String)
    case severalHosts(pattern: String)
    case compile(pattern: String, offset: Int, message: String)

    public var description: String {
        switch self {
        case .missingHost(let pattern):
            return "--failregex '\(pattern)' has no <HOST>; mark where the client address stands with <HOST>"
        case .severalHosts(let pattern):
            return "--failregex '\(pattern)' has more than one <HOST>; keep exactly one"
        case .compile(let pattern, let offset, let message):
            return "--failregex '\(pattern)' does not compile at offset \(offset): \(message)"
        }
    }
}

/// An operator's fail2ban-style pattern (`--failregex`): a PCRE2 regular expression in which
/// `<HOST>` marks the client address. A `Pattern` (compiled once with JIT, every match under a
/// match limit, so a hostile line cannot make it backtrack without bound: it then counts as
/// `matchLimit`), matched on raw bytes: no UTF-8 mode, no fail2ban prefix, no dates.
///
/// Chosen over Hyperscan (the prototype's engine): Hyperscan reports where a match ends but has no
/// capture groups, so the address would need a second engine; PCRE2-JIT captures it in one pass,
/// and `portcullis-perf engine` measures it beside the hand scanner.
public final class FailRegex: Sendable {
    /// The operator's text, as given.
    public let pattern: String
    let compiled: Pattern
    /// Steps one match may take by default (PCRE2's match limit): far above what an honest log
    /// line needs; ten times fewer than the former 100,000, at which the security review measured
    /// 0.74 ms of CPU for a hostile line (~1,350 lines/s).
    public static let defaultMatchLimit: UInt32 = 10_000
    /// This pattern's match limit.
    public let matchLimit: UInt32
    /// What `<HOST>` stands for: a run of the characters addresses are written with (the address
    /// parser then decides whether it is one).
    static let hostGroup = "(?<host>[0-9A-Fa-f:.]+(?:%[^\\s]*)?)"

    /// - Parameter matchLimit: steps one match may take (`--regex-match-limit`).
    public init(_ pattern: String, matchLimit: UInt32 = FailRegex.defaultMatchLimit) throws(FailRegexError) {
        self.pattern = pattern
        self.matchLimit = matchLimit
        let parts = pattern.split(separator: "<HOST>", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 1 { throw .missingHost(pattern: pattern) }
        if parts.count > 2 { throw .severalHosts(pattern: pattern) }
        do throws(Pattern.CompileError) {
            // Bytes, not UTF-8 (options 0): a line is matched as it came.
            compiled = try Pattern(
                parts.joined(separator: Self.hostGroup), options: 0, matchLimit: matchLimit, depthLimit: 10_000)
        } catch {
            // Report the offset in the operator's text, not in the expansion of <HOST>.
            let hostAt = parts[0].utf8.count
            let offset =
                error.offset <= hostAt ? error.offset : max(hostAt, error.offset - Self.hostGroup.utf8.count + 6)
            throw .compile(pattern: pattern, offset: offset, message: error.message)
        }
    }

    /// Per-thread match state (PCRE2 match data), allocated once per worker.
    public final class Matcher {
        let data: Pattern.MatchData
        let hostGroup: Int

        public init(_ regex: FailRegex) {
            data = Pattern.MatchData(regex.compiled)
            hostGroup = regex.compiled.groupNumber("host")!  // the expansion of <HOST> names it
        }

        /// Matches `line`. - Returns: the outcome; `.notMatching` when the pattern does not match.
        public func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
            guard let base = line.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .notMatching }
            let result = data.search(base, count: line.count)
            if result == PCRE2_ERROR_NOMATCH { return .notMatching }
            if result == PCRE2_ERROR_MATCHLIMIT || result == PCRE2_ERROR_DEPTHLIMIT
                || result == PCRE2_ERROR_JIT_STACKLIMIT
            {
                return .matchLimit
            }
            guard result > 0 else { return .notMatching }
            guard let host = data.range(hostGroup), host.end <= line.count else { return .invalidAddress }
            var key = IPAddress(high: 0, low: 0)
            guard IPAddress.parse(base + host.start, count: host.end - host.start, into: &key) else {
                return .invalidAddress
            }
            return .offence(key)
        }
    }
}
