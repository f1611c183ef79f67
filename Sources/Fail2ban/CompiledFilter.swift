// SPDX-License-Identifier: Apache-2.0
import CPortcullis

/// A filter compiled for matching: its patterns as PCRE2 (JIT) and its date templates. Immutable
/// and shared by every worker thread; each thread matches through its own `FilterMatcher`.
public final class CompiledFilter: @unchecked Sendable {
    /// What was compiled.
    public let definition: FilterDefinition
    /// Longest line scanned; longer ones are `.tooLong`.
    public let maxLineLength: Int
    /// Steps one PCRE2 match may take (see `FailRegex.defaultMatchLimit`).
    public let matchLimit: UInt32
    /// Whether dates are looked for and cut (false for journal lines, which carry no date).
    public let detectsDates: Bool

    let prefix: CompiledRegex?
    let failures: [CompiledRegex]
    let ignores: [CompiledRegex]
    let dates: [CompiledDate]
    let maxlines: Int

    /// Compiles `definition`.
    /// - Parameters:
    ///   - useDNS: fail2ban's `usedns`; with "no" `<HOST>` matches addresses only (as fail2ban). No
    ///     name is ever resolved: a host that is a name scans as `.invalidAddress`.
    ///   - detectsDates: false for lines that carry no date (journal), as fail2ban's systemd backend.
    /// - Throws: `Fail2banError.regexCompile` naming the file, key, pattern and offset;
    ///   `.unsupported` for a feature this matcher does not implement.
    public init(
        _ definition: FilterDefinition, useDNS: String? = nil, maxLineLength: Int = 4096,
        matchLimit: UInt32 = 10_000, detectsDates: Bool = true
    ) throws(Fail2banError) {
        self.definition = definition
        self.maxLineLength = maxLineLength
        self.matchLimit = matchLimit
        self.detectsDates = detectsDates
        maxlines = max(1, definition.maxlines)
        let dns = useDNS ?? definition.usedns ?? "warn"
        let multiLine = maxlines > 1
        if definition.failregex.isEmpty {
            throw .badValue(file: definition.file, key: "failregex", value: "", expected: "at least one pattern")
        }
        func compile(_ source: String, key: String) throws(Fail2banError) -> CompiledRegex {
            try CompiledRegex(
                source, key: key, place: { definition.place(of: source, form: $0) }, useDNS: dns,
                multiLine: multiLine, matchLimit: matchLimit)
        }
        prefix = try definition.prefregex.map { (source) throws(Fail2banError) in try compile(source, key: "prefregex")
        }
        var failures: [CompiledRegex] = []
        for source in definition.failregex { failures.append(try compile(source, key: "failregex")) }
        // As fail2ban ("No failure-id group": fid, ip4, ip6, dns or mlfid): a failregex (or the prefregex) says where the
        // client stands, else the jail matches lines and can never ban.
        let identifies = { (regex: CompiledRegex) in
            [FailField.ip4, .ip6, .dns, .fid, .mlfid].contains { regex.groups[$0.rawValue] != 0 }
        }
        for (source, regex) in zip(definition.failregex, failures)
        where !identifies(regex) && !(prefix.map(identifies) ?? false) {
            throw .badValue(
                file: definition.place(of: source).file, key: "failregex", value: source,
                expected:
                    "a pattern that marks the client: put <HOST> (or <ADDR>, <IP4>, <IP6>, <F-ID>) where its address stands"
            )
        }
        var ignores: [CompiledRegex] = []
        for source in definition.ignoreregex { ignores.append(try compile(source, key: "ignoreregex")) }
        self.failures = failures
        self.ignores = ignores
        var dates: [CompiledDate] = []
        if detectsDates {
            for template in try DateTemplates.templates(for: definition.datepattern) {
                let written = template.pattern ?? template.regex
                let source: String
                do throws(PythonRegex.Refusal) {
                    source = try PythonRegex.translate(template.regex)
                } catch {
                    let place = definition.place(of: written, form: error.form)
                    throw .pythonRegex(
                        file: place.file, line: place.line, key: "datepattern", form: error.form, reason: error.reason)
                }
                do {
                    dates.append(CompiledDate(template: template, pattern: try Pattern(source, matchLimit: matchLimit)))
                } catch {
                    let place = definition.place(of: written)
                    throw .regexCompile(
                        file: place.file, line: place.line, key: "datepattern", pattern: written,
                        offset: error.offset, message: error.message)
                }
            }
        }
        self.dates = dates
    }
}

/// One failregex, ignoreregex or prefregex, compiled, with the numbers of the groups fail2ban reads.
final class CompiledRegex: @unchecked Sendable {
    let pattern: Pattern
    /// The group number of each `FailField` (0 = the pattern has no such group).
    let groups: [Int]
    /// `alt_NAME[_N]` groups: (group, field) pairs that fill a field the pattern left empty.
    let alternatives: [(group: Int, field: FailField)]
    let content: Int
    /// `<SKIPLINES>` groups: lines they cover stay in the multi-line buffer after a match.
    let skipLineGroups: [Int]

    /// - Parameter place: where the pattern is written (file and line), given the text refused.
    init(
        _ source: String, key: String, place: (_ form: String?) -> (file: String, line: Int?), useDNS: String,
        multiLine: Bool, matchLimit: UInt32
    ) throws(Fail2banError) {
        // fail2ban bans the whole subnet of <SUBNET>/<CIDR>; a ScanOutcome carries one address, so
        // such a pattern is refused rather than silently banning less.
        for tag in ["<CIDR>", "<SUBNET>", "<F-CIDR/>", "<F-SUBNET/>"] where source.contains(tag) {
            let (file, line) = place(tag)
            throw .unsupported(feature: "the subnet tag \(tag)", file: file, line: line, key: key)
        }
        let expanded: String
        do throws(PythonRegex.Refusal) {
            expanded = try RegexTags.expand(source, useDNS: useDNS)
        } catch {
            let (file, line) = place(error.form)
            throw .pythonRegex(file: file, line: line, key: key, form: error.form, reason: error.reason)
        }
        if expanded.trimmingWhitespace().isEmpty {
            throw .badValue(file: place(nil).file, key: key, value: source, expected: "a non-empty pattern")
        }
        let options = Pattern.unicodeOptions | (multiLine ? UInt32(PCRE2_MULTILINE) : 0)
        let pattern: Pattern
        do {
            pattern = try Pattern(expanded, options: options, matchLimit: matchLimit)
        } catch {
            // The offset is in the translated pattern: PCRE2's message names what it refused.
            let (file, line) = place(nil)
            throw .regexCompile(
                file: file, line: line, key: key, pattern: source, offset: error.offset, message: error.message)
        }
        self.pattern = pattern
        groups = FailField.allCases.map { pattern.groupNumber($0.groupName) ?? 0 }
        var alternatives: [(Int, FailField)] = []
        for (name, number) in pattern.namedGroups {
            guard name.hasPrefix("alt_") else { continue }
            var base = Substring(name.dropFirst(4))
            if let underscore = base.lastIndex(of: "_"), base[base.index(after: underscore)...].allSatisfy(\.isNumber),
                base.index(after: underscore) < base.endIndex
            {
                base = base[..<underscore]
            }
            if let field = FailField.allCases.first(where: { $0.groupName == RegexTags.groupName(String(base)) }) {
                alternatives.append((number, field))
            }
        }
        self.alternatives = alternatives.sorted { $0.0 < $1.0 }
        content = pattern.groupNumber("content") ?? 0
        skipLineGroups = pattern.namedGroups.filter { $0.name.hasPrefix("skiplines") }.map(\.number)
    }
}

/// A date template compiled.
struct CompiledDate: @unchecked Sendable {
    let template: DateTemplate
    let pattern: Pattern
}

/// The match groups fail2ban's `findFailure` reads.
enum FailField: Int, CaseIterable {
    case ip4, ip6, dns, fid, cidr, user, nofail, mlfforget, mlfgained, mlfid

    var groupName: String {
        switch self {
        case .ip4: return "ip4"
        case .ip6: return "ip6"
        case .dns: return "dns"
        case .fid: return "fid"
        case .cidr: return "cidr"
        case .user: return "user"
        case .nofail: return "nofail"
        case .mlfforget: return "mlfforget"
        case .mlfgained: return "mlfgained"
        case .mlfid: return "mlfid"
        }
    }
}
