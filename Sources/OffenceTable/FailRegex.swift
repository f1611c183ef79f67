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

/// An operator's fail2ban-style pattern: a PCRE2 regular expression in which `<HOST>` marks the
/// client address. Compiled once with JIT; every match runs under a match limit, so a hostile
/// line cannot make it backtrack without bound (it then counts as `matchLimit`).
///
/// Chosen over Hyperscan (the prototype's engine): Hyperscan reports where a match ends but has no
/// capture groups, so the address would need a second engine; PCRE2-JIT captures it in one pass,
/// and `portcullis-perf engine` measures it beside the hand scanner.
public final class FailRegex: @unchecked Sendable {
    /// The operator's text, as given.
    public let pattern: String
    let code: OpaquePointer
    let context: OpaquePointer
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
        let expanded = parts.joined(separator: Self.hostGroup)
        var errorCode: Int32 = 0
        var errorOffset: Int = 0
        let compiled = expanded.withCString { text in
            pcre2_compile_8(
                UnsafeRawPointer(text).assumingMemoryBound(to: UInt8.self), expanded.utf8.count,
                0, &errorCode, &errorOffset, nil)
        }
        guard let compiled else {
            var message = [UInt8](repeating: 0, count: 256)
            pcre2_get_error_message_8(errorCode, &message, message.count)
            // Report the offset in the operator's text, not in the expansion of <HOST>.
            let hostAt = parts[0].utf8.count
            let offset = errorOffset <= hostAt ? errorOffset : max(hostAt, errorOffset - Self.hostGroup.utf8.count + 6)
            throw .compile(
                pattern: pattern, offset: offset,
                message: String(decoding: message.prefix { $0 != 0 }, as: UTF8.self))
        }
        code = compiled
        // JIT where the platform has it; the interpreter (same results, slower) otherwise.
        _ = pcre2_jit_compile_8(code, UInt32(PCRE2_JIT_COMPLETE))
        context = pcre2_match_context_create_8(nil)
        pcre2_set_match_limit_8(context, matchLimit)
        pcre2_set_depth_limit_8(context, 10_000)
    }

    deinit {
        pcre2_match_context_free_8(context)
        pcre2_code_free_8(code)
    }

    /// Per-thread match state (PCRE2 match data), allocated once per worker.
    public final class Matcher {
        let regex: FailRegex
        let data: OpaquePointer
        let hostGroup: Int32

        public init(_ regex: FailRegex) {
            self.regex = regex
            data = pcre2_match_data_create_from_pattern_8(regex.code, nil)
            hostGroup = "host".withCString {
                pcre2_substring_number_from_name_8(regex.code, UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self))
            }
        }

        deinit { pcre2_match_data_free_8(data) }

        /// Matches `line`. - Returns: the outcome; `.notMatching` when the pattern does not match.
        public func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
            guard let base = line.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .notMatching }
            let result = pcre2_match_8(regex.code, base, line.count, 0, 0, data, regex.context)
            if result == PCRE2_ERROR_NOMATCH { return .notMatching }
            if result == PCRE2_ERROR_MATCHLIMIT || result == PCRE2_ERROR_DEPTHLIMIT
                || result == PCRE2_ERROR_JIT_STACKLIMIT
            {
                return .matchLimit
            }
            guard result > 0, let vector = pcre2_get_ovector_pointer_8(data) else { return .notMatching }
            let start = vector[2 * Int(hostGroup)]
            let end = vector[2 * Int(hostGroup) + 1]
            guard start <= end, end <= line.count else { return .invalidAddress }
            var key = IPAddress(high: 0, low: 0)
            guard IPAddress.parse(base + start, count: end - start, into: &key) else { return .invalidAddress }
            return .offence(key)
        }
    }
}
