// SPDX-License-Identifier: Apache-2.0
/// Several configuration files merged as fail2ban merges them (`SafeConfigParserWithIncludes`):
/// each file's `[INCLUDES] before`/`after` are read around it (paths relative to its directory,
/// each with its `.local` beside it), later files override earlier ones key by key, and the value a
/// key had before an override stays reachable as `%(known/key)s`. Values are interpolated on
/// demand with Python's `%(name)s` syntax plus fail2ban's `%(section/name)s`, `%(known/name)s` and
/// `%(default/name)s`.
struct Configuration {
    private(set) var defaults = OrderedOptions()
    private(set) var sections: [String: OrderedOptions] = [:]
    private(set) var sectionOrder: [String] = []
    /// The files read, in order (with their includes), for errors and `portcullis regex`.
    private(set) var files: [String] = []
    /// The files `read(basename:)` was asked for (`filter.d/sshd.conf`, `sshd.local`), without the
    /// files they include: what errors about the filter name.
    private(set) var ownFiles: [String] = []
    /// Every value line of every file read, in the order read (`ConfigFile.sourceLines`).
    private(set) var sourceLines: [SourceLine] = []

    /// The deepest chain of `%(...)s` references followed (Python's MAX_INTERPOLATION_DEPTH).
    static let maximumInterpolationDepth = 10
    /// The deepest chain of `[INCLUDES]` followed.
    static let maximumIncludeDepth = 16
    /// Files read for one configuration, includes counted each time (a jail.conf and its .d and
    /// .local files, or a filter and its includes, are a few dozen): an `[INCLUDES]` fan-out (a
    /// file naming the next one 10 times, 10 levels deep) stops here instead of reading 10^10.
    static let maximumFilesRead = 1_000
    /// Longest value after interpolation or tag substitution (a pattern is a few KiB): a fan-out
    /// of `%(name)s` or `<tag>` references stops here instead of growing to gigabytes.
    static let maximumValueBytes = 1 << 20
    /// `%(name)s` references followed for one value (a fan-out of empty values costs time, not size).
    static let maximumReferences = 100_000

    init() {}

    /// Reads `basename.conf`, `basename.d/*.conf`, `basename.local`, `basename.d/*.local` (those that
    /// exist), as fail2ban's `ConfigReader.read`. - Returns: false when none exists.
    mutating func read(basename: String) throws(Fail2banError) -> Bool {
        var candidates = [basename + ".conf"]
        candidates += sortedFiles(in: basename + ".d", suffix: ".conf")
        candidates.append(basename + ".local")
        candidates += sortedFiles(in: basename + ".d", suffix: ".local")
        let existing = candidates.filter(fileExists)
        if existing.isEmpty { return false }
        ownFiles += existing
        var budget = Self.maximumFilesRead
        for path in try Self.withIncludes(existing, seen: [], depth: 0, budget: &budget) {
            guard let file = try ConfigFile.read(path) else { continue }
            merge(file)
        }
        return true
    }

    /// fail2ban's `_getIncludes`: each file expanded with its `.local`, then its before/after lists.
    private static func withIncludes(
        _ paths: [String], seen: [String], depth: Int, budget: inout Int
    ) throws(Fail2banError) -> [String] {
        var expanded: [String] = []
        for path in paths {
            expanded.append(path)
            let local = (path.hasSuffix(".conf") ? String(path.dropLast(5)) : path) + ".local"
            if !paths.contains(local) && fileExists(local) { expanded.append(local) }
        }
        var result: [String] = []
        for path in expanded {
            budget -= 1
            if budget < 0 {
                throw .tooLarge(
                    file: path, section: "INCLUDES", key: seen.isEmpty ? "before" : "before/after",
                    detail:
                        "the includes read more than \(maximumFilesRead) files (a file included many times over); "
                        + "include each file once")
            }
            guard let file = try ConfigFile.read(path) else { continue }
            guard let includes = file.sections.first(where: { $0.name == "INCLUDES" })?.options else {
                result.append(path)
                continue
            }
            if depth >= maximumIncludeDepth {
                throw .tooLarge(
                    file: path, section: "INCLUDES", key: "before/after",
                    detail:
                        "a chain of more than \(maximumIncludeDepth) includes (\(seen.first ?? path) onwards); "
                        + "include fewer levels")
            }
            var before: [String] = []
            var after: [String] = []
            for (key, list) in [("before", 0), ("after", 1)] {
                guard let value = includes[key] else { continue }
                for name in value.split(separator: "\n") where !name.isEmpty {
                    let included = joinPath(directoryName(path), String(name))
                    if seen.contains(included) { continue }
                    let files = try withIncludes([included], seen: seen + [path], depth: depth + 1, budget: &budget)
                    if list == 0 { before += files } else { after += files }
                }
            }
            result += before + [path] + after
        }
        return result
    }

    /// Adds one file's options over the ones read so far.
    mutating func merge(_ file: ConfigFile) {
        files.append(file.path)
        sourceLines += file.sourceLines
        for (key, value) in file.defaults { defaults[key] = value }
        for (name, options) in file.sections {
            if var existing = sections[name] {
                var known = sections["KNOWN/" + name] ?? OrderedOptions()
                for (key, _) in options { if let old = existing[key] { known[key] = old } }
                if !known.isEmpty { sections["KNOWN/" + name] = known }
                for (key, value) in options { existing[key] = value }
                sections[name] = existing
            } else {
                sections[name] = options
                sectionOrder.append(name)
            }
        }
    }

    /// Adds `options` to `section` (fail2ban's `merge_section`), each key prefixed with `prefix`.
    mutating func mergeSection(_ section: String, _ options: [String: String], prefix: String = "") {
        var existing = sections[section] ?? OrderedOptions()
        if sections[section] == nil { sectionOrder.append(section) }
        for key in options.keys.sorted() { existing[prefix + key] = options[key] }
        sections[section] = existing
    }

    mutating func setDefault(_ key: String, _ value: String) { defaults[key] = value }

    func hasSection(_ name: String) -> Bool { sections[name] != nil }

    /// The section's own keys (without the defaults).
    func ownKeys(_ section: String) -> [String] { sections[section]?.keys ?? [] }

    /// The raw (uninterpolated) value, looked up as Python does: `vars`, the section, the defaults.
    func raw(_ section: String, _ key: String, vars: [String: String] = [:]) -> String? {
        if let value = vars[key] { return value }
        if section != "DEFAULT", let value = sections[section]?[key] { return value }
        return defaults[key]
    }

    /// The interpolated value of `key` in `section` (Python's `ConfigParser.get`), or nil when
    /// neither the section nor the defaults define it.
    /// - Parameter vars: values that take precedence over the section's (Python's `vars=`).
    func value(_ section: String, _ key: String, vars: [String: String] = [:]) throws(Fail2banError) -> String? {
        let key = key.lowercased()
        guard let raw = raw(section, key, vars: vars) else { return nil }
        var output = ""
        var references = Self.maximumReferences
        try interpolate(
            raw, section: section, key: key, vars: vars, depth: 1, references: &references, into: &output)
        return output
    }

    /// fail2ban's `get_ex`: `section/key` names another section's key (`known/key` the value before
    /// the last override, `default/key` the defaults); otherwise as `value`.
    func valueEx(_ section: String, _ key: String, vars: [String: String] = [:]) throws(Fail2banError) -> String? {
        if key.contains("/"), let match = Self.sectionOptionName.firstMatch(in: key) {
            let other = match.group(1)!
            let option = match.group(2)!
            let lower = other.lowercased()
            let candidates =
                lower == "known" ? ["KNOWN/" + section, section] : [lower == "default" ? "DEFAULT" : other]
            for candidate in candidates {
                if candidate == "DEFAULT" || hasSection(candidate), let value = try value(candidate, option) {
                    return value
                }
            }
        }
        return try value(section, key, vars: vars)
    }

    static let sectionOptionName = fixedPattern(#"^([\w\-]+)/([^\s>]+)$"#)
    private static let reference = fixedPattern(#"%\(([^)]+)\)s"#)

    /// Python's `BasicInterpolation._interpolate_some` with fail2ban's section-option hook.
    private func interpolate(
        _ text: String, section: String, key: String, vars: [String: String], depth: Int, references: inout Int,
        into output: inout String
    ) throws(Fail2banError) {
        if depth > Self.maximumInterpolationDepth {
            throw .interpolationLoop(file: files.last ?? "?", section: section, key: key)
        }
        var rest = Substring(text)
        while !rest.isEmpty {
            guard let percent = rest.firstIndex(of: "%") else {
                output += rest
                return
            }
            output += rest[..<percent]
            rest = rest[percent...]
            let next = rest.dropFirst().first
            if next == "%" {
                output += "%"
                rest = rest.dropFirst(2)
            } else if next == "(" {
                guard let close = rest.firstIndex(of: ")"), rest[rest.index(after: close)...].first == "s" else {
                    throw .badValue(
                        file: files.last ?? "?", key: key, value: text,
                        expected: "a valid interpolation (%(name)s, or %% for a percent sign)")
                }
                let name = String(rest[rest.index(rest.startIndex, offsetBy: 2)..<close])
                rest = rest[rest.index(close, offsetBy: 2)...]
                let variable = name.lowercased()
                references -= 1
                if references < 0 || output.utf8.count > Self.maximumValueBytes {
                    throw .tooLarge(
                        file: files.last ?? "?", section: section, key: key,
                        detail:
                            "its interpolation grows past \(Self.maximumValueBytes) bytes or \(Self.maximumReferences) "
                            + "references (%(name)s repeated within repeated values); write it out shorter")
                }
                guard let replacement = lookup(variable, originalName: name, section: section, vars: vars) else {
                    throw .missingReference(file: files.last ?? "?", section: section, key: key, reference: name)
                }
                if replacement.contains("%") {
                    try interpolate(
                        replacement, section: section, key: key, vars: vars, depth: depth + 1,
                        references: &references, into: &output)
                } else {
                    output += replacement
                }
            } else {
                throw .badValue(
                    file: files.last ?? "?", key: key, value: text,
                    expected: "a valid interpolation ('%' must be followed by '%' or '(')")
            }
        }
    }

    /// What `%(name)s` stands for in `section`.
    private func lookup(_ variable: String, originalName: String, section: String, vars: [String: String]) -> String? {
        if variable == "__name__" { return section }
        if let value = raw(section, variable, vars: vars) { return value }
        // fail2ban's `_map_section_options`: `section/option`, `known/option`, `default/option`.
        guard let slash = originalName.firstIndex(of: "/") else { return nil }
        let other = String(originalName[..<slash])
        let option = String(originalName[originalName.index(after: slash)...]).lowercased()
        switch other.lowercased() {
        case "default": return defaults[option]
        case "known": return sections["KNOWN/" + section]?[option] ?? defaults[option]
        default:
            guard let options = sections[other] else { return nil }
            return options[option] ?? defaults[option]
        }
    }
}
