// SPDX-License-Identifier: Apache-2.0
import CPortcullis

/// A fail2ban filter as fail2ban's `FilterReader` resolves it: `[Init]` values, the reference's
/// arguments and `<tag>` substitutions applied, patterns not yet compiled.
public struct FilterDefinition: Sendable, Equatable {
    /// The reference as given (`sshd[mode=aggressive]`), or the inline pattern's text.
    public var reference: String
    /// The filter's own file (`filter.d/sshd.conf`, not the `common.conf` it includes); "(inline)" for
    /// a pattern given on the command line.
    public var file: String
    /// Every file read, in fail2ban's order (includes and `.local` files).
    public var files: [String]
    /// `prefregex`: matched first; `<F-CONTENT>` is what the failregexes then see.
    public var prefregex: String?
    /// `failregex`: one pattern per line of the value.
    public var failregex: [String]
    /// `ignoreregex`: one pattern per line of the value.
    public var ignoreregex: [String]
    /// `datepattern` (each line one template), or nil for fail2ban's default templates.
    public var datepattern: [String]?
    /// `maxlines` (1 = single-line).
    public var maxlines: Int
    /// `journalmatch`: one match expression per line.
    public var journalmatch: [String]
    /// `usedns` from the filter, when it sets one (jails usually do).
    public var usedns: String?
    /// Every option after substitution (the `[Definition]` keys fail2ban reads, `[Init]` values and
    /// the arguments).
    public var options: [String: String]
    /// Every value line of the files read, for naming the line a refused pattern is written on.
    public var sourceLines: [SourceLine]

    public init(
        reference: String, file: String, files: [String] = [], prefregex: String? = nil,
        failregex: [String], ignoreregex: [String] = [], datepattern: [String]? = nil, maxlines: Int = 1,
        journalmatch: [String] = [], usedns: String? = nil, options: [String: String] = [:],
        sourceLines: [SourceLine] = []
    ) {
        self.reference = reference
        self.file = file
        self.files = files
        self.prefregex = prefregex
        self.failregex = failregex
        self.ignoreregex = ignoreregex
        self.datepattern = datepattern
        self.maxlines = maxlines
        self.journalmatch = journalmatch
        self.usedns = usedns
        self.options = options
        self.sourceLines = sourceLines
    }

    /// Where `pattern` (a failregex or ignoreregex after interpolation and tag substitution) is
    /// written: the value line that contributes most of its literal text, among those that hold
    /// `form` (the refused text) when one is given. A line of `%(name)s` and `<tag>` references
    /// contributes only the text between them, so a pattern that came from `failregex = <cmnfailre>`
    /// is found on its line in `cmnfailre`. - Returns: the file and line; the filter's own file
    /// and no line when no line fits (a pattern the jail set).
    public func place(of pattern: String, form: String? = nil) -> (file: String, line: Int?) {
        var best: (line: SourceLine, score: Int)? = nil
        for candidate in sourceLines where form.map({ candidate.text.contains($0) }) ?? true {
            var score = 0
            var rest = Substring(pattern)
            for chunk in Self.literalChunks(candidate.text) where !chunk.isEmpty {
                guard let range = rest.firstRange(of: chunk) else {
                    score = -1
                    break
                }
                score += chunk.utf8.count
                rest = rest[range.upperBound...]
            }
            // Later lines override earlier ones (a .local over its .conf): ties go to the later.
            if score > 0 || (form != nil && score == 0), score >= (best?.score ?? 0) {
                best = (candidate, score)
            }
        }
        guard let best else { return (file, nil) }
        return (best.line.file, best.line.line)
    }

    /// `%(name)s` interpolations and `<tag>` substitutions: what a value line contributes to a
    /// pattern is the text between them.
    static func literalChunks(_ text: String) -> [String] {
        let bytes = Array(text.utf8)
        var chunks: [String] = []
        var last = 0
        for match in reference.allMatches(in: text) {
            chunks.append(String(decoding: bytes[last..<match.start], as: UTF8.self))
            last = match.end
        }
        chunks.append(String(decoding: bytes[last...], as: UTF8.self))
        return chunks
    }

    static let reference = fixedPattern(#"%\([^)]*\)s|<[^ <>]+>"#)

    /// A filter made of patterns given directly (`portcullis regex LOG 'pattern'`), as
    /// `fail2ban-regex` treats a pattern that is not a file.
    public static func inline(failregex: String, ignoreregex: String? = nil) -> FilterDefinition {
        FilterDefinition(
            reference: failregex, file: "(inline)", failregex: splitPatterns(failregex),
            ignoreregex: ignoreregex.map(splitPatterns) ?? [])
    }
}

/// A value split into patterns as fail2ban does: one per line, empty lines dropped.
func splitPatterns(_ value: String) -> [String] {
    value.split(separator: "\n", omittingEmptySubsequences: true).map(String.init).filter { !$0.isEmpty }
}

/// Reads fail2ban filters.
public enum FilterLoader {
    /// The `[Definition]` keys fail2ban's `FilterReader` takes from a filter.
    static let definitionKeys = [
        "usedns", "prefregex", "ignoreregex", "failregex", "maxlines", "datepattern", "journalmatch",
    ]

    /// Loads a filter as a jail (or `fail2ban-regex`) would.
    /// - Parameters:
    ///   - reference: `sshd`, `sshd[mode=aggressive]`, `name[a=b, c="d"]`, or a path to a `.conf` file
    ///     (with or without arguments).
    ///   - filterDirectory: where names are looked up (`/etc/fail2ban/filter.d`).
    ///   - jailOptions: the jail's resolved options: values for interpolation, and the filter keys
    ///     (`failregex`, `datepattern`, ...) a jail sets itself, which replace the filter's (as in
    ///     fail2ban). `backend` selects `logtype` (journal for systemd backends).
    /// - Throws: `Fail2banError` naming the file and key.
    ///   - arguments: further `[Init]` values, as if written in the reference's brackets (they
    ///     win over those).
    public static func load(
        _ reference: String, filterDirectory: String = "/etc/fail2ban/filter.d",
        jailOptions: [String: String] = [:], arguments extra: [String: String] = [:]
    ) throws(Fail2banError) -> FilterDefinition {
        try load(
            reference, filterDirectory: filterDirectory, jailOptions: jailOptions, arguments: extra, allOptions: false)
    }

    static func load(
        _ reference: String, filterDirectory: String, jailOptions: [String: String],
        arguments extra: [String: String], allOptions: Bool
    ) throws(Fail2banError) -> FilterDefinition {
        var (name, arguments) = try parseReference(reference)
        for (key, value) in extra { arguments[key.lowercased()] = value }
        let basename: String
        if name.hasSuffix(".conf") || name.hasSuffix(".local") {
            basename = String(name.prefix(upTo: name.lastIndex(of: ".")!))
        } else if name.contains("/") {
            basename = name
        } else {
            basename = joinPath(filterDirectory, name)
        }
        var configuration = Configuration()
        guard try configuration.read(basename: basename) else {
            if name.contains("/") { throw .missingFile(path: basename + ".conf", purpose: "filter '\(reference)'") }
            throw .unknownFilter(name: name, directory: filterDirectory)
        }
        return try resolve(
            configuration, reference: reference, arguments: arguments, jailOptions: jailOptions,
            allOptions: allOptions)
    }

    /// Splits `name[key=value, ...]` (fail2ban's `extractOptions`).
    public static func parseReference(
        _ reference: String
    ) throws(Fail2banError) -> (name: String, arguments: [String: String]) {
        guard let match = referenceShape.firstMatch(in: reference) else {
            throw .badFilterArguments(reference: reference, reason: "expected name or name[...]")
        }
        let name = match.group(1)!.trimmingWhitespace()
        var arguments: [String: String] = [:]
        if let list = match.group(2) {
            for item in argumentItem.allMatches(in: list) {
                if let wrong = item.group("wrngA") ?? item.group("wrngB") {
                    throw .badFilterArguments(reference: reference, reason: "unexpected '\(wrong.prefix(25))'")
                }
                guard let key = item.group(1) else { continue }
                let value = item.group(2) ?? item.group(3) ?? item.group(4) ?? ""
                arguments[key.trimmingWhitespace().lowercased()] = String(value.trimmingWhitespace())
            }
        }
        return (String(name), arguments)
    }

    static let referenceShape = fixedPattern(#"^([^\[]+)(?:\[(.*)\])?\s*$"#, options: UInt32(PCRE2_DOTALL))
    static let argumentItem = fixedPattern(
        #"\s*([\w\-_\.]+)=(?:"([^"]*)"|'([^']*)'|([^,\]]*))(?:,|\]\s*\[|$|(?P<wrngA>.+))|,?\s*$|(?P<wrngB>.+)"#,
        options: UInt32(PCRE2_DOTALL))
    static let conditionalName = fixedPattern(#"^(\w+)(\?.+)$"#)

    /// fail2ban's `DefinitionInitConfigReader.getOptions` + `getCombined` + `FilterReader.convert`.
    static func resolve(
        _ configuration: Configuration, reference: String, arguments: [String: String],
        jailOptions: [String: String], allOptions: Bool = false
    ) throws(Fail2banError) -> FilterDefinition {
        let file = configuration.ownFiles.first ?? configuration.files.first ?? reference
        var initOptions = arguments
        // applyAutoOptions: a systemd backend reads journal lines (no date, short prefix).
        if let backend = jailOptions["backend"], initOptions["logtype"] == nil,
            configuration.sections["Definition"]?["logtype"] == nil
        {
            initOptions["logtype"] = backend.hasPrefix("systemd") ? "journal" : "file"
        }
        var parserVars = jailOptions
        for (key, value) in initOptions { parserVars[key] = value }
        var definition: [String: String] = [:]
        if configuration.hasSection("Definition") {
            for key in definitionKeys where parserVars[key] == nil {
                if let value = try configuration.value("Definition", key, vars: parserVars) { definition[key] = value }
            }
        }
        if configuration.hasSection("Init") {
            for key in configuration.ownKeys("Init") {
                let value = try configuration.value("Init", key) ?? ""
                if !key.hasPrefix("known/") { initOptions["known/" + key] = value }
                if initOptions[key] == nil { initOptions[key] = value }
            }
        }
        if allOptions, configuration.hasSection("Definition") {
            // getOptions(all=True): every [Definition] option (and default), for the jail's known/...
            let keys = Set(configuration.ownKeys("Definition")).union(configuration.defaults.keys)
            for key in keys where definition[key] == nil && !definitionKeys.contains(key) {
                if let value = try? configuration.value("Definition", key, vars: parserVars) { definition[key] = value }
            }
        }
        var combined = definition
        for (key, value) in initOptions { combined[key] = value }
        var ignore = Set<String>()
        for key in combined.keys {
            if let match = conditionalName.firstMatch(in: key) { ignore.insert(match.group(1)!) }
        }
        let substituted = try TagSubstitution.substitute(combined, ignore: ignore, file: file) {
            (tag) throws(Fail2banError) in
            guard configuration.hasSection("Definition") else { return nil }
            return try? configuration.valueEx("Definition", tag, vars: parserVars)
        }
        // Keys the jail sets itself replace the filter's (fail2ban sends the jail's after the filter's).
        func pick(_ key: String) -> String? { jailOptions[key] ?? substituted[key] }
        var maxlines = 1
        if let text = pick("maxlines") {
            guard let value = Int(text.trimmingWhitespace()), value >= 1 else {
                throw .badValue(
                    file: file, key: "maxlines", value: text, expected: "a whole number of lines, 1 or more")
            }
            maxlines = value
        }
        let datepattern = pick("datepattern").map { value in
            value.split(separator: "\n").map { String($0.trimmingWhitespace()) }.filter { !$0.isEmpty }
        }
        let prefregex = pick("prefregex").flatMap { $0.trimmingWhitespace().isEmpty ? nil : $0 }
        return FilterDefinition(
            reference: reference, file: file, files: configuration.files, prefregex: prefregex,
            failregex: splitPatterns(pick("failregex") ?? ""), ignoreregex: splitPatterns(pick("ignoreregex") ?? ""),
            datepattern: datepattern, maxlines: maxlines,
            journalmatch: splitPatterns(pick("journalmatch") ?? ""), usedns: pick("usedns"), options: substituted,
            sourceLines: configuration.sourceLines)
    }
}

/// fail2ban's `substituteRecursiveTags`: `<tag>` in a value is replaced by the option `tag` (or by
/// what `fallback` finds, e.g. `<lt_file/datepattern>`), repeatedly, until no more can be; tags
/// that name nothing (`<HOST>`, `<F-USER>`) stay.
enum TagSubstitution {
    static let tag = fixedPattern(#"<([^ <>]+)>"#)
    /// fail2ban's MAX_TAG_REPLACE_COUNT: how often one tag may be replaced inside one value.
    static let maximumReplacements = 25

    static func substitute(
        _ input: [String: String], ignore: Set<String>, file: String,
        fallback: (String) throws(Fail2banError) -> String?
    ) throws(Fail2banError) -> [String: String] {
        var tags = input
        var done = Set<String>()
        var counts: [String: [String: Int]] = [:]
        var fallbackCache: [String: String?] = [:]
        while true {
            var repeatAgain = false
            for name in tags.keys.sorted() {
                if ignore.contains(name) || done.contains(name) { continue }
                let original = tags[name]!
                var value = original
                var replaced = counts[name] ?? [:]
                var searchFrom = 0
                while let match = tag.firstMatch(in: value, from: searchFrom) {
                    let referenced = match.group(1)!
                    if ignore.contains(referenced) {
                        searchFrom = match.end
                        continue
                    }
                    if referenced == name || (replaced[referenced] ?? 1) > maximumReplacements {
                        throw .interpolationLoop(file: file, section: "Definition", key: name)
                    }
                    var replacement = tags[referenced]
                    if replacement == nil {
                        if let cached = fallbackCache[referenced] {
                            replacement = cached
                        } else {
                            replacement = try fallback(referenced)
                            fallbackCache[referenced] = replacement
                        }
                    }
                    guard let replacement else {
                        searchFrom = match.end
                        continue
                    }
                    value = value.replacingOccurrences(of: "<\(referenced)>", with: replacement)
                    if value.utf8.count > Configuration.maximumValueBytes {
                        throw .tooLarge(
                            file: file, section: "Definition", key: name,
                            detail:
                                "its <tag> substitution grows past \(Configuration.maximumValueBytes) bytes (<\(referenced)> "
                                + "repeated within repeated tags); write the pattern out shorter")
                    }
                    replaced[referenced, default: 0] += 1
                    searchFrom = match.start
                }
                if value != original {
                    if tag.matches(value) {
                        counts[name] = replaced
                        repeatAgain = true
                    }
                    tags[name] = value
                }
                if !value.contains("<") { done.insert(name) }
            }
            if !repeatAgain { break }
        }
        return tags
    }
}

extension String {
    /// Every occurrence of `target` replaced (without Foundation).
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        result += rest
        return result
    }
}
