// SPDX-License-Identifier: Apache-2.0
@testable import Fail2ban
import Foundation
import TestSupport
import Testing

/// Debian's Python 3.11, whose `re` reads fail2ban's patterns: the reference the translation is
/// held to (tools/install-deps installs it).
enum PythonRe {
    static let python = "/usr/bin/python3"

    static var present: Bool { FileManager.default.isExecutableFile(atPath: python) }

    /// Runs `script` with `input` as JSON in `sys.argv[1]`; returns what it printed, decoded as JSON.
    static func run(_ script: String, _ input: Any) throws -> Any {
        let argument = String(decoding: try JSONSerialization.data(withJSONObject: input), as: UTF8.self)
        let result = try runProcess(python, ["-c", script, argument], timeout: 120)
        guard result.status == 0 else { throw PythonFailed(stderr: result.stderr) }
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
    }

    struct PythonFailed: Error { let stderr: String }

    /// Each case's pattern searched in each of its strings: `{"error": ...}` or `{"matches": [...]}`.
    static let searchScript = """
        import json, re, sys, warnings
        warnings.simplefilter("ignore")  # FutureWarning for '[[' ('possible nested set')
        out = []
        for pattern, strings in json.loads(sys.argv[1]):
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                out.append({"error": str(error)})
                continue
            found = []
            for text in strings:
                match = compiled.search(text)
                found.append(None if match is None else match.group(0))
            out.append({"matches": found})
        print(json.dumps(out))
        """

    /// For each pattern, the ranges of code points (surrogates aside) it matches whole.
    static let codePointScript = """
        import json, re, sys
        out = {}
        for pattern in json.loads(sys.argv[1]):
            compiled = re.compile(pattern)
            ranges = []
            for point in range(0x110000):
                if 0xD800 <= point <= 0xDFFF:
                    continue
                if compiled.fullmatch(chr(point)):
                    if ranges and ranges[-1][1] == point - 1:
                        ranges[-1][1] = point
                    else:
                        ranges.append([point, point])
            out[pattern] = ranges
        print(json.dumps(out))
        """
}

/// A pattern and the strings it is searched in; `refused` when Portcullis refuses a form Python accepts.
struct RegexCase: CustomStringConvertible {
    let pattern: String
    let strings: [String]
    var refused = false

    init(_ pattern: String, _ strings: [String] = [], refused: Bool = false) {
        self.pattern = pattern
        self.strings = strings
        self.refused = refused
    }

    var description: String { pattern }
}

@Suite("Python re to PCRE2")
struct PythonRegexTests {
    static let spaces = ["\u{1c}", "\u{1f}", "\u{180e}", "\u{85}", " ", "\u{a0}", "\u{2028}", "\t", "a", "x", ""]

    /// Every form Python's `re` and PCRE2 read differently, and their neighbours that read the same.
    static let cases: [RegexCase] = [
        // {,n} and {,}: Python 0 to n (and 0 or more); PCRE2 10.42 reads the text.
        RegexCase("a{,3}", ["aaaa", "a{,3}", ""]),
        RegexCase("^a{,3}$", ["aaaa", "aaa", ""]),
        RegexCase("a{,3}?b", ["aaab", "b"]),
        RegexCase(#"\(\d{,3}\)"#, ["(8)", "(1234)", "()"]),
        RegexCase("a{,}", ["aaaa", "a{,}"]),
        RegexCase("a{2,}", ["aaa", "a"]),
        RegexCase("a{2}", ["aaa"]),
        RegexCase("a{1,2}+a", ["aaa", "aa"]),
        RegexCase("a{}", ["a{}", "a"]),
        RegexCase("a{x}", ["a{x}"]),
        RegexCase("a{1", ["a{1"]),
        RegexCase("a{ ,3}", ["a{ ,3}", "aaa"]),
        RegexCase("x{,3", ["x{,3"]),
        RegexCase(#"\{,3}"#, ["{,3}", "aaa"]),
        RegexCase("[{,3}]+", ["{,3}", "a"]),
        RegexCase("{", ["{"]),
        // \Z: Python the very end; PCRE2 also before a final newline.
        RegexCase(#"x\Z"#, ["x", "x\n"]),
        RegexCase("x$", ["x", "x\n"]),
        RegexCase(#"\Ax"#, ["x", "yx"]),
        RegexCase(#"\\Z"#, [#"\Z"#]),
        // \v: Python the vertical tab; PCRE2 any vertical space.
        RegexCase(#"\v"#, ["\u{0b}", "\n", "\r"]),
        RegexCase(#"[\v]"#, ["\u{0b}", "\n"]),
        // \s and \S: Python's white space has U+001C-U+001F, PCRE2's has U+180E instead.
        RegexCase(#"\s"#, spaces),
        RegexCase(#"\S"#, spaces),
        RegexCase(#"[\s]"#, spaces),
        RegexCase(#"[^\s]"#, spaces),
        RegexCase(#"[\S]"#, spaces),
        RegexCase(#"[^\S]"#, spaces),
        RegexCase(#"[a\S]"#, spaces),
        RegexCase(#"[^a\S]"#, spaces),
        RegexCase(#"[x\s]"#, spaces),
        RegexCase(#"[\s\S]"#, spaces),
        RegexCase(#"[\S]+"#, ["ab c"]),
        // \B: Python's never matches an empty string.
        RegexCase(#"\B"#, ["", "ab", " "]),
        RegexCase(#"a\B"#, ["ab", "a"]),
        RegexCase(#"\bb"#, ["a b", "ab"]),
        // Escapes of characters: \x, \u, \U, octal; \0; group references.
        RegexCase(#"\x41\u0042\U00000043"#, ["ABC"]),
        RegexCase(#"[\x41-\x43]+"#, ["ABCD"]),
        RegexCase(#"\u00e9"#, ["é", "e"]),
        RegexCase(#"\0"#, ["\u{0}", "0"]),
        RegexCase(#"\101"#, ["A"]),
        RegexCase(#"\0101"#, ["\u{8}1"]),
        RegexCase(#"[\101]"#, ["A"]),
        RegexCase(#"[\1]"#, ["\u{1}", "1"]),
        RegexCase(#"\1000"#, ["@0"]),
        RegexCase(#"(a)(b)\2\1"#, ["abba", "abab"]),
        RegexCase(#"(a)\10"#, ["aa0"]),
        RegexCase(#"(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\10"#, ["abcdefghijj", "abcdefghija0"]),
        RegexCase(#"(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)\11"#, ["abcdefghijkk"]),
        RegexCase(#"(a)\12"#, ["a\n"]),
        RegexCase(#"\é\-\ \]"#, ["é- ]"]),
        RegexCase(#"[\b]"#, ["\u{8}", "b"]),
        RegexCase(#"\a\f\t\n\r"#, ["\u{7}\u{c}\t\n\r"]),
        // [ in a class: Python a character; PCRE2 a POSIX class.
        RegexCase("[[:alpha:]]", ["a", "[:a]", "[]", "a]", ":]"]),
        RegexCase("[[:digit:]]+", ["5", "[:]"]),
        RegexCase("[]a]", ["]", "a"]),
        RegexCase("[^]a]", ["]", "b"]),
        // Flags.
        RegexCase(#"(?u)\w+"#, ["héllo"]),
        RegexCase("(?iu:A)b", ["ab", "aB"]),
        RegexCase("(?i)straße", ["STRASSE", "STRAßE"]),
        RegexCase("(?i)k", ["\u{212a}"]),
        RegexCase("(?x) a b # comment {,3} [\n c", ["abc"]),
        RegexCase("(?x)a{,2}", ["aaa"]),
        RegexCase("(?x)[ ]", [" "]),
        RegexCase("(?x)a(?-x: b)", ["a b", "ab"]),
        RegexCase("(?s).", ["\n"]),
        RegexCase(".", ["\r", "\n", "\u{85}", "\u{2028}"]),
        RegexCase("(?m)x$", ["x\ny"]),
        RegexCase("(?m)^y", ["x\ny"]),
        // Shared forms, read the same by both.
        RegexCase("a*+a", ["aaa"]),
        RegexCase("(?>a+)b", ["aab"]),
        RegexCase("(?P<x>a)(?P=x)", ["aa", "ab"]),
        RegexCase("(a)?(?(1)b|c)", ["ab", "c"]),
        RegexCase("(?#comment {,3})a", ["a"]),
        RegexCase("(?<=a)b(?<!c)(?=d)(?!e)", ["abd", "cbd"]),
        RegexCase(#"\w+"#, ["héllo_wörld٣²"]),
        RegexCase(#"\d+"#, ["١٢٣", "²"]),
        RegexCase(#"\W"#, ["é", "-"]),
        RegexCase(#"\b\w+\b"#, ["  été  "]),
        // Python's re refuses these (PCRE2 would accept them): fail2ban would not load the filter.
        RegexCase(#"\e"#), RegexCase(#"\Qa\E"#), RegexCase(#"a\Kb"#), RegexCase(#"\Ga"#), RegexCase(#"\h"#),
        RegexCase(#"\p{L}"#), RegexCase(#"\x4"#), RegexCase(#"\x{41}"#), RegexCase(#"\u12"#), RegexCase(#"[\Z]"#),
        RegexCase(#"[\8]"#), RegexCase(#"\N"#), RegexCase(#"a\"#), RegexCase("(?<n>a)"), RegexCase("(?'n'a)"),
        RegexCase("(*UTF)a"), RegexCase("(?|a)"), RegexCase("(a)(?R)?"), RegexCase("(?P<n>a)(?P>n)"),
        RegexCase("(?L)a"), RegexCase(#"\777"#), RegexCase(#"\12"#), RegexCase("a{3,2}"),
        // Python accepts these; PCRE2 10.42 cannot be made to read them the same: refused by name.
        RegexCase(#"(?a)\w"#, ["é", "e"], refused: true),
        RegexCase(#"(?a:\w)"#, ["é"], refused: true),
        RegexCase(#"\N{LATIN SMALL LETTER A}"#, ["a"], refused: true),
    ]

    @Test("each form reads as Python's re reads it, on the same strings, or is refused by name")
    func againstPython() throws {
        guard PythonRe.present else {
            if Privileges.inCI { Issue.record("\(PythonRe.python) is missing; run tools/install-deps") }
            return
        }
        let verdicts = try #require(
            try PythonRe.run(PythonRe.searchScript, Self.cases.map { [$0.pattern, $0.strings] }) as? [[String: Any]])
        try #require(verdicts.count == Self.cases.count)
        for (item, verdict) in zip(Self.cases, verdicts) {
            let translated: String
            do throws(PythonRegex.Refusal) {
                translated = try PythonRegex.translate(item.pattern)
            } catch {
                #expect(
                    item.refused || verdict["error"] != nil,
                    "\(item): refused (\(error.form): \(error.reason)), but Python reads it")
                #expect(!error.form.isEmpty && item.pattern.contains(error.form), "\(item): the form names its text")
                continue
            }
            #expect(!item.refused, "\(item): translated to \(translated), but should be refused")
            guard let matches = verdict["matches"] as? [Any] else {
                // Python refuses it; so must the filter, here through PCRE2.
                #expect(
                    (try? Pattern(translated)) == nil,
                    "\(item): Python refuses it (\(verdict["error"] ?? "")), but \(translated) compiles")
                continue
            }
            let pattern: Pattern
            do throws(Pattern.CompileError) {
                pattern = try Pattern(translated)
            } catch {
                Issue.record("\(item): \(translated) does not compile: \(error.message)")
                continue
            }
            for (text, expected) in zip(item.strings, matches) {
                let found = pattern.firstMatch(in: text)?.group(0)
                #expect(
                    found == expected as? String,
                    "\(item) as \(translated) on \(text.debugDescription): \(found.debugDescription), Python: \(expected)"
                )
            }
        }
    }

    @Test("\\s, \\S, \\w, \\W, \\d, \\D match the code points Python's match, all of them")
    func classesAgainstPython() throws {
        guard PythonRe.present else {
            if Privileges.inCI { Issue.record("\(PythonRe.python) is missing; run tools/install-deps") }
            return
        }
        let classes = [#"\s"#, #"\S"#, #"\w"#, #"\W"#, #"\d"#, #"\D"#, #"[\S]"#, #"[^\s]"#]
        let python = try #require(try PythonRe.run(PythonRe.codePointScript, classes) as? [String: [[Int]]])
        for name in classes {
            let pattern = try Pattern(try PythonRegex.translate(#"\A(?:"# + name + #")\Z"#))
            let data = Pattern.MatchData(pattern)
            var ranges: [[Int]] = []
            var buffer = [UInt8](repeating: 0, count: 4)
            for point in 0..<0x11_0000 where !(0xD800...0xDFFF).contains(point) {
                var count = 0
                UTF8.encode(Unicode.Scalar(UInt32(point))!) { byte in
                    buffer[count] = byte
                    count += 1
                }
                let matched = buffer.withUnsafeBufferPointer { data.search($0.baseAddress!, count: count) > 0 }
                guard matched else { continue }
                if let last = ranges.last, last[1] == point - 1 {
                    ranges[ranges.count - 1][1] = point
                } else {
                    ranges.append([point, point])
                }
            }
            let expected = try #require(python[name])
            let difference = zip(ranges, expected).first { $0 != $1 }
            let same = ranges == expected  // not inside #expect: it would print both lists whole
            #expect(
                same,
                "\(name): \(ranges.count) ranges, Python \(expected.count); first difference \(String(describing: difference))"
            )
        }
    }

    @Test("a refusal names the filter's own file and the line the pattern is written on")
    func refusalNamesFileAndLine() throws {
        let scratch = try ScratchConfiguration([
            "filter.d/common.conf": "[DEFAULT]\n__prefix = \\s*\n",
            "filter.d/subnet.conf": """
            [INCLUDES]
            before = common.conf
            [Definition]
            failregex = ^%(__prefix)sok from <HOST>$
                        ^%(__prefix)sblock <SUBNET>$
            """,
            "filter.d/tagged.conf": """
            [INCLUDES]
            before = common.conf
            [Definition]
            cmnfailre = ^ok <HOST>$
                        ^bad \\N{DIGIT ONE} <HOST>$
            failregex = <cmnfailre>
            ignoreregex =
            """,
            "filter.d/tagged.local": """
            [Definition]
            ignoreregex = ^fine$

                          (?a)^\\w+ <HOST>$
            """,
            "filter.d/broken.conf": """
            [Definition]
            failregex = ^a <HOST>$
                        ^b ( <HOST>$
            """,
        ])
        defer { scratch.remove() }
        let directory = scratch.path + "/filter.d"

        let subnet = try FilterLoader.load("subnet", filterDirectory: directory)
        #expect(subnet.file == directory + "/subnet.conf", "the filter's file, not the common.conf it includes")
        #expect(
            throws: Fail2banError.unsupported(
                feature: "the subnet tag <SUBNET>", file: directory + "/subnet.conf", line: 5, key: "failregex")
        ) { try CompiledFilter(subnet) }

        var tagged = try FilterLoader.load("tagged", filterDirectory: directory)
        let ignore = tagged.ignoreregex
        tagged.ignoreregex = []
        do throws(Fail2banError) {
            _ = try CompiledFilter(tagged)
            Issue.record("\\N{...} compiled")
        } catch {
            guard case .pythonRegex(let file, let line, let key, let form, _) = error else { throw error }
            #expect(file == directory + "/tagged.conf" && line == 5 && key == "failregex")
            #expect(form == #"\N{DIGIT ONE}"#)
            #expect(error.description.hasPrefix(directory + "/tagged.conf:5, key 'failregex'"))
            #expect(!error.description.contains("\n"))
        }
        tagged.failregex = ["^ok <HOST>$"]
        tagged.ignoreregex = ignore
        do throws(Fail2banError) {
            _ = try CompiledFilter(tagged)
            Issue.record("(?a) compiled")
        } catch {
            guard case .pythonRegex(let file, let line, let key, let form, _) = error else { throw error }
            #expect(file == directory + "/tagged.local" && line == 4 && key == "ignoreregex" && form == "(?a)")
        }

        let broken = try FilterLoader.load("broken", filterDirectory: directory)
        do throws(Fail2banError) {
            _ = try CompiledFilter(broken)
            Issue.record("an unclosed group compiled")
        } catch {
            guard case .regexCompile(let file, let line, let key, let pattern, _, _) = error else { throw error }
            #expect(file == directory + "/broken.conf" && line == 3 && key == "failregex" && pattern == "^b ( <HOST>$")
        }
    }
}
