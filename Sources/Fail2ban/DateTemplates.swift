// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

/// One date template as fail2ban's `datetemplate.py` builds it: the regular expression whose
/// group 1 is the date that is cut from the line before the failregexes see it.
struct DateTemplate: Sendable {
    /// fail2ban's template name (`{^LN-BEG}` prefixed when anchored at the line's start).
    var name: String
    /// The expression, in Python's syntax (rewritten for PCRE2 when compiled).
    var regex: String
    /// `LINE_BEGIN` etc., as fail2ban's flags.
    var flags: Int
    /// Whether fail2ban keeps the raw pattern (DatePatternRegex) rather than a built-in regex.
    var pattern: String?

    static let lineBegin = 8, lineEnd = 4, wordBegin = 2, wordEnd = 1

    var isAnchored: Bool { flags & (Self.lineBegin | Self.lineEnd) != 0 }
}

/// Builds date templates from `datepattern` values, and fail2ban's default list.
enum DateTemplates {
    enum WordBegin { case no, yes, start }

    // datetemplate.py's expressions, verbatim.
    static let grouped = fixedPattern(#"(?<!(?:\(\?))(?<!\\)\((?!\?)"#)
    static let groupShape = fixedPattern(#"^((?:\(\?\w+\))?\^?(?:\(\?\w+\))?)(.*?)(\$?)$"#)
    static let globalFlags = fixedPattern(#"((?:^|(?!<\\))\(\?[a-z]+\))"#)
    static let unbounded = fixedPattern(#"^\{UNB\}"#)
    static let lineBeginMark = fixedPattern(#"^\{\^LN-BEG\}"#)
    static let startBound = fixedPattern(#"^\((?:\?:)?\^\|\\b\|\\W\)"#)
    static let endBound = fixedPattern(#"\(\?=\\b\|\\W\|\$\)$"#)
    static let noWordBoundBegin = fixedPattern(#"^\(*(?:\(\?\w+\))?(?:\^|\(*\*\*|\((?:\?:)?\^)"#)
    static let noWordBoundEnd = fixedPattern(#"(?<!\\)(?:\$\)?|\\b|\\s|\*\*\)*)$"#)
    static let deleteWordBounds = fixedPattern(#"^\(*(?:\(\?\w+\))?\(*\*\*|(?<!\\)\*\*\)*$"#)
    static let lineBoundBegin = fixedPattern(#"^(?:\(\?\w+\))?(?:\^|\((?:\?:)?\^(?!\|))"#)
    static let lineBoundEnd = fixedPattern(#"(?<![\\\|])(?:\$\)?)$"#)
    static let alphaField = fixedPattern(#"(?<!\%)\%[aAbBpc]"#)
    static let epochField = fixedPattern(#"(?<!\\)\{L?EPOCH\}"#, options: UInt32(PCRE2_CASELESS))
    static let datePrematch = fixedPattern(#"(?<!\\)\{DATE\}"#, options: UInt32(PCRE2_CASELESS))

    /// strptime.py's `timeRE`: what each `%X` field stands for.
    static let fields: [String: String] = {
        var table: [String: String] = [
            "%": "%",
            "A": "(?P<A>wednesday|thursday|saturday|tuesday|monday|friday|sunday)",
            "B": "(?P<B>september|february|november|december|january|october|august|march|april|june|july|may)",
            "a": "(?P<a>mon|tue|wed|thu|fri|sat|sun)",
            "b": "(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
            "d": #"(?P<d>[1-2]\d|[0 ]?[1-9]|3[0-1])"#,
            "f": "(?P<f>[0-9]{1,6})",
            "H": #"(?P<H>[0-1]?\d|2[0-3])"#,
            "I": "(?P<I>1[0-2]|0[1-9]|[1-9])",
            "j": #"(?P<j>36[0-6]|3[0-5]\d|[1-2]\d\d|0[1-9]\d|00[1-9]|[1-9]\d|0[1-9]|[1-9])"#,
            "k": #" ?(?P<H>[0-2]?\d)"#,
            "l": " ?(?P<I>1?\\d)",
            "M": #"(?P<M>[0-5]?\d)"#,
            "m": "(?P<m>0?[1-9]|1[0-2])",
            "p": "(?P<p>am|pm)",
            "S": #"(?P<S>[0-5]?\d|6[0-1])"#,
            "U": #"(?P<U>5[0-3]|[0-4]\d|\d)"#,
            "V": #"(?P<V>5[0-3]|0[1-9]|[1-4]\d|\d)"#,
            "W": #"(?P<W>5[0-3]|[0-4]\d|\d)"#,
            "w": "(?P<w>[0-6])",
            "u": "(?P<u>[1-7])",
            "G": #"(?P<G>\d\d\d\d)"#,
            "y": #"(?P<y>\d\d)"#,
            "Y": #"(?P<Y>\d{4})"#,
            "Z": "(?P<Z>Z|[A-Z]{3,5})",
            "z": #"(?P<z>Z|UTC|GMT|[+-][01]\d(?::?\d{2})?)"#,
            "X": #"(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)"#,
            "x": #"(?P<m>1[0-2]|0[1-9]|[1-9])/(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])/(?P<y>\d\d)"#,
            "c":
                #"(?P<a>mon|tue|wed|thu|fri|sat|sun)\s+(?P<b>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\s+(?P<d>3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9])\s+(?P<H>2[0-3]|[0-1]\d|\d):(?P<M>[0-5]\d|\d):(?P<S>6[0-1]|[0-5]\d|\d)\s+(?P<Y>\d\d\d\d)"#,
            "Exd": #"(?P<d>[1-2]\d|0[1-9]|3[0-1])"#,
            "Exm": "(?P<m>0[1-9]|1[0-2])",
            "ExH": #"(?P<H>[0-1]\d|2[0-3])"#,
            "Exk": #" ?(?P<H>[0-1]?\d|2[0-3])"#,
            "Exl": #" ?(?P<I>1[0-2]|\d)"#,
            "ExM": #"(?P<M>[0-5]\d)"#,
            "ExS": #"(?P<S>[0-5]\d|6[0-1])"#,
            "Exy": #"(?P<y>\d{2})"#,
            "ExZ": "(?P<Z>[A-Z](?:[A-Z]{2,4})?)",
            "Exz": "(?P<z>(?:[A-Z](?:[A-Z]{2,4})?)?[+-][01]\\d(?::?\\d{2})?|[A-Z](?:[A-Z]{2,4})?)",
        ]
        table["ExY"] = "(?P<Y>\(yearPrefix)\\d)"
        return table
    }()

    /// strptime.py's `ExY`: the centuries from 2000 (fail2ban's test epoch) to three years ahead,
    /// as fail2ban computes them at start (`20[012]` in the 2020s).
    static var yearPrefix: String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        let lastDecade = (Int(parts.tm_year) + 1900 + 3) / 10 % 10
        let decades = (0...max(lastDecade, 0)).map(String.init).joined()
        return decades.count == 1 ? "20\(decades)" : "20[\(decades)]"
    }

    static let fieldPattern: Pattern = {
        let long = fields.keys.filter { $0.count > 1 && $0 != "%" }.sorted().joined(separator: "|")
        let short = fields.keys.filter { $0.count == 1 && $0 != "%" }.sorted().joined()
        return fixedPattern("%(%|\(long)|[\(short)])")
    }()

    /// `DatePatternRegex.setRegex`: `%X` fields replaced, boundaries added.
    static func patternTemplate(
        _ pattern: String, wordBegin: WordBegin = .yes, wordEnd: Bool = true
    ) throws(Fail2banError) -> DateTemplate {
        var text = pattern
        var begin = wordBegin
        var end = wordEnd
        if unbounded.matches(text) {
            text = unbounded.replacingAll(in: text) { _ in "" }
            begin = .no
            end = false
        }
        if begin != .no && lineBeginMark.matches(text) {
            text = lineBeginMark.replacingAll(in: text) { _ in "" }
            begin = .start
        }
        var failed: String? = nil
        var regex = fieldPattern.replacingAll(in: text) { match in
            let key = match.group(1)!
            return fields[key] ?? key
        }
        // A lone '%' not followed by a field is an error in fail2ban (Python's % formatting).
        if fieldPattern.replacingAll(in: text, { _ in "" }).contains("%") { failed = "a '%' that starts no field" }
        if let failed {
            throw .badValue(
                file: "datepattern", key: "datepattern", value: pattern, expected: "a date pattern (\(failed))")
        }
        if alphaField.matches(text) { regex = "(?iu)" + regex }
        return setRegex(regex, name: text, pattern: pattern, wordBegin: begin, wordEnd: end)
    }

    /// `DateTemplate.setRegex`.
    static func setRegex(
        _ input: String, name: String, pattern: String?, wordBegin: WordBegin, wordEnd: Bool
    ) -> DateTemplate {
        var regex = String(input.trimmingWhitespace())
        var name = name
        let flagsMatch = globalFlags.firstMatch(in: regex)
        if flagsMatch != nil { regex = globalFlags.replacingAll(in: regex, count: 1) { _ in "" } }
        let boundBegin = wordBegin != .no && !noWordBoundBegin.matches(regex)
        let boundEnd = wordEnd && !noWordBoundEnd.matches(regex)
        if !grouped.matches(regex) {
            regex = groupShape.replacingAll(in: regex, count: 1) { m in
                "\(m.group(1) ?? "")(\(m.group(2) ?? ""))\(m.group(3) ?? "")"
            }
        }
        var flags = 0
        if boundBegin {
            if wordBegin != .start {
                flags |= DateTemplate.wordBegin
                regex = #"(?=^|\b|\W)"# + regex
            } else {
                flags |= DateTemplate.lineBegin
                regex = #"^(?:\W{0,2})?"# + regex
                if !name.hasPrefix("{^LN-BEG}") { name = "{^LN-BEG}" + name }
            }
        }
        if boundEnd {
            flags |= DateTemplate.wordEnd
            regex += #"(?=\b|\W|$)"#
        }
        if flags & DateTemplate.lineBegin == 0 && lineBoundBegin.matches(regex) { flags |= DateTemplate.lineBegin }
        if flags & DateTemplate.lineEnd == 0 && lineBoundEnd.matches(regex) { flags |= DateTemplate.lineEnd }
        regex = deleteWordBounds.replacingAll(in: regex) { $0.group(0)!.replacingOccurrences(of: "**", with: "") }
        if let flagsMatch { regex = flagsMatch.group(1)! + regex }
        return DateTemplate(name: name, regex: regex, flags: flags, pattern: pattern)
    }

    static let epochShort = #"\d{10,11}\b(?:\.\d{3,6})?"#
    static let epochLong = #"\d{10,11}(?:\d{3}(?:\.\d{1,6}|\d{3})?)?"#

    /// `DateEpoch`.
    static func epoch(lineBeginOnly: Bool, pattern: String? = nil, long: Bool = false) -> DateTemplate {
        let number = long ? epochLong : epochShort
        let name = pattern ?? (long ? "LongEpoch" : "Epoch")
        if let pattern {
            let regex = "(" + epochField.replacingAll(in: pattern) { _ in "(\(number))" } + ")"
            return setRegex(regex, name: name, pattern: nil, wordBegin: .yes, wordEnd: true)
        }
        if !lineBeginOnly {
            let regex =
                #"((?:^|(?P<square>(?<=^\[))|(?P<selinux>(?<=\baudit\()))"# + number
                + #")(?:(?(selinux)(?=:\d+\)))|(?(square)(?=\])))"#
            return setRegex(regex, name: name, pattern: nil, wordBegin: .no, wordEnd: true)
        }
        let regex = #"((?P<square>(?<=^\[))?"# + number + #")(?(square)(?=\]))"#
        return setRegex(regex, name: name, pattern: nil, wordBegin: .start, wordEnd: true)
    }

    /// `DateTai64n`.
    static func tai64n(start: Bool) -> DateTemplate {
        setRegex("@[0-9a-f]{24}", name: "TAI64N", pattern: nil, wordBegin: start ? .start : .no, wordEnd: true)
    }

    /// `_getPatternTemplate`.
    static func template(_ pattern: String) throws(Fail2banError) -> DateTemplate {
        let key = pattern.contains("%") ? pattern : pattern.uppercased()
        if key.contains("EPOCH") {
            if epochField.matches(pattern) {
                return epoch(lineBeginOnly: false, pattern: pattern, long: key.contains("LEPOCH"))
            }
            if ["EPOCH", "{^LN-BEG}EPOCH", "^EPOCH"].contains(key) { return epoch(lineBeginOnly: key != "EPOCH") }
            if ["LEPOCH", "{^LN-BEG}LEPOCH", "^LEPOCH"].contains(key) {
                return epoch(lineBeginOnly: key != "LEPOCH", long: true)
            }
        }
        if ["TAI64N", "{^LN-BEG}TAI64N", "^TAI64N"].contains(key) { return tai64n(start: key != "TAI64N") }
        return try patternTemplate(pattern)
    }

    static let defaultPatterns = [
        #"%ExY(?P<_sep>[-/.])%m(?P=_sep)%d(?:T|  ?)%H:%M:%S(?:[.,]%f)?(?:\s*%z)?"#,
        #"(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        #"(?:%a )?%b %d %ExY %k:%M:%S(?:\.%f)?"#,
        #"%d(?P<_sep>[-/])%m(?P=_sep)(?:%ExY|%Exy) %k:%M:%S"#,
        #"%d(?P<_sep>[-/])%b(?P=_sep)%ExY[ :]?%H:%M:%S(?:\.%f)?(?: %z)?"#,
        #"%m/%d/%ExY:%H:%M:%S"#,
        #"%m-%d-%ExY %k:%M:%S(?:\.%f)?"#,
        "EPOCH",
        "{^LN-BEG}%H:%M:%S",
        "^<%m/%d/%Exy@%H:%M:%S>",
        "%Exy%Exm%Exd  ?%H:%M:%S",
        "%b %d, %ExY %I:%M:%S %p",
        "^%b-%d-%Exy %k:%M:%S",
        #"%ExY%Exm%Exd(?:T|  ?)%ExH%ExM%ExS(?:[.,]%f)?(?:\s*%z)?"#,
        #"(?:%Z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        #"(?:%z )?(?:%a )?%b %d %k:%M:%S(?:\.%f)?(?: %ExY)?"#,
        "TAI64N",
    ]

    /// `DateDetectorCache.defaultTemplates`: the list above as templates.
    static func defaultTemplates() -> [DateTemplate] {
        defaultPatterns.map { try! template($0) }
    }

    /// `DateDetectorCache.templates`: each unanchored default preceded (as a group, in front) by
    /// its line-start anchored copy.
    static func cachedTemplates() -> [DateTemplate] {
        var anchored: [DateTemplate] = []
        var plain: [DateTemplate] = []
        for template in defaultTemplates() {
            if !template.name.hasPrefix("{^LN-BEG}") && !template.name.hasPrefix("^") {
                let copy: DateTemplate
                if let pattern = template.pattern {
                    copy = try! self.template("{^LN-BEG}" + pattern)
                } else {
                    copy = try! self.template("{^LN-BEG}" + template.name)
                }
                if copy.name != template.name { anchored.append(copy) }
            }
            plain.append(template)
        }
        return anchored + plain
    }

    /// `unboundPattern`.
    static func unbound(_ pattern: String) -> String {
        var text = unbounded.replacingAll(in: pattern) { _ in "" }
        text = lineBeginMark.replacingAll(in: text) { _ in "" }
        text = startBound.replacingAll(in: text) { _ in "" }
        return endBound.replacingAll(in: text) { _ in "" }
    }

    /// The templates of a filter's `datepattern` lines (`DateDetector.appendTemplate` for each),
    /// or fail2ban's defaults when there is none.
    static func templates(for datepattern: [String]?) throws(Fail2banError) -> [DateTemplate] {
        guard let datepattern, !datepattern.isEmpty else { return cachedTemplates() }
        var result: [DateTemplate] = []
        var names = Set<String>()
        for pattern in datepattern {
            let key = pattern.contains("%") ? pattern : pattern.uppercased()
            var added: [DateTemplate] = []
            if key == "{^LN-BEG}" {
                added = cachedTemplates().filter { $0.flags & DateTemplate.lineBegin != 0 }
            } else if key == "{DEFAULT}" {
                added = cachedTemplates()
            } else if key.contains("{DATE}") {
                for template in defaultTemplates() {
                    let wrap = { (inner: String) -> String in
                        datePrematch.replacingAll(in: pattern) { _ in unbound(inner) }
                    }
                    added.append(try self.template(wrap(template.pattern ?? template.name)))
                }
            } else if key == "{NONE}" {
                added = [try patternTemplate("{UNB}^")]
            } else {
                added = [try template(pattern)]
            }
            let ignoreDuplicates = !result.isEmpty
            for template in added {
                if names.contains(template.name) {
                    if ignoreDuplicates { continue }
                }
                names.insert(template.name)
                result.append(template)
            }
        }
        return result
    }
}
