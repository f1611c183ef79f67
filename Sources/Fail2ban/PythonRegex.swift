// SPDX-License-Identifier: Apache-2.0
/// fail2ban's patterns are Python `re` expressions (Python 3.11, `str` patterns); Portcullis compiles
/// them with PCRE2 10.42. This walks a pattern once, token by token (escapes, character classes,
/// groups, quantifiers, verbose-mode comments), and rewrites each form the two engines read
/// differently into the PCRE2 that means what Python means, or refuses it by name. Each rewrite is
/// checked against Python's `re` on the same strings (`PythonRegexTests`).
///
/// Rewritten: `{,n}` and `{,}` (Python: 0 to n; PCRE2 reads them as text) become `{0,n}` and `{0,}`;
/// `\Z` (Python: the very end) becomes `\z`; `\v` (Python: the vertical tab only) becomes `\x{0b}`;
/// `\s` and `\S` become Python's exact set of white space (it has U+001C to U+001F, PCRE2's has
/// U+180E instead); `\B` does not match an empty string (as Python's); `\xhh`, `\uhhhh`,
/// `\Uhhhhhhhh` and octal escapes become `\x{...}`, group references `\g{n}` (PCRE2 may read `\12`
/// as octal); `[` inside a class is escaped (Python reads `[[:alpha:]]` as a set of characters,
/// PCRE2 as a POSIX class); the flag `u` is dropped (Unicode classes are always on here).
///
/// Refused: the flag `a` (ASCII classes: PCRE2 10.42 has no inline way to switch Unicode classes
/// off), `\N{name}` (no Unicode name table here), and every form Python's `re` itself refuses but
/// PCRE2 would accept (`\e`, `\Q`, `\K`, `\G`, `\h`, `\p{..}`, `(?<name>...)`, `(?|...)`, `(*VERB)`,
/// recursion, a bad escape), as fail2ban would not load the filter either.
enum PythonRegex {
    /// A form refused: the text as written and why.
    struct Refusal: Error, Equatable {
        let form: String
        let reason: String
    }

    /// Python's `\s` for `str` patterns (`str.isspace()`), as PCRE2 class items.
    static let spaceItems =
        #"\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"#

    /// The PCRE2 pattern that reads as Python's `re` reads `pattern`.
    static func translate(_ pattern: String) throws(Refusal) -> String {
        var walker = Walker(Array(pattern.unicodeScalars))
        return try walker.run()
    }

    private struct Walker {
        let text: [Unicode.Scalar]
        var index = 0
        var output = ""
        /// Whether verbose mode (`x`) holds in each open group; the last is the innermost.
        var verbose = [false]

        init(_ text: [Unicode.Scalar]) { self.text = text }

        func peek(_ offset: Int = 0) -> Unicode.Scalar? {
            index + offset < text.count ? text[index + offset] : nil
        }

        func slice(_ from: Int, _ to: Int) -> String {
            var result = ""
            result.unicodeScalars.append(contentsOf: text[max(0, from)..<min(to, text.count)])
            return result
        }

        /// Python accepts it (so PCRE2's reading of it does not matter) nowhere: fail2ban refuses it.
        func pythonRefuses(_ from: Int, _ to: Int) -> Refusal {
            Refusal(form: slice(from, to), reason: "Python's re refuses it, so fail2ban would not load this filter")
        }

        mutating func run() throws(Refusal) -> String {
            while let scalar = peek() {
                switch scalar {
                case "\\": try escape(inClass: false)
                case "[": try characterClass()
                case "{": quantifier()
                case "(": try group()
                case ")":
                    if verbose.count > 1 { verbose.removeLast() }
                    output += ")"
                    index += 1
                case "#" where verbose.last!:
                    // A verbose-mode comment runs to the end of the line: copied, not translated.
                    let start = index
                    while let next = peek(), next != "\n" { index += 1 }
                    output += slice(start, index)
                default:
                    output.unicodeScalars.append(scalar)
                    index += 1
                }
            }
            return output
        }

        /// `{`: a quantifier as Python reads one (`{n}`, `{n,}`, `{,m}`, `{n,m}`, `{,}`), or a literal brace.
        mutating func quantifier() {
            var cursor = index + 1
            var low = "", high = ""
            while cursor < text.count, text[cursor].properties.numericType == .decimal, text[cursor].isASCII {
                low.unicodeScalars.append(text[cursor])
                cursor += 1
            }
            var comma = false
            if cursor < text.count, text[cursor] == "," {
                comma = true
                cursor += 1
                while cursor < text.count, text[cursor].properties.numericType == .decimal, text[cursor].isASCII {
                    high.unicodeScalars.append(text[cursor])
                    cursor += 1
                }
            }
            guard cursor < text.count, text[cursor] == "}", !low.isEmpty || comma else {
                output += "\\{"  // Python: a brace that starts no quantifier is a literal
                index += 1
                return
            }
            output += comma ? "{\(low.isEmpty ? "0" : low),\(high)}" : "{\(low)}"
            index = cursor + 1
        }

        /// `(`: a group, an extension or inline flags.
        mutating func group() throws(Refusal) {
            let start = index
            index += 1
            guard peek() == "?" else {
                if peek() == "*" { throw pythonRefuses(start, start + 2) }  // PCRE2's (*VERB)
                verbose.append(verbose.last!)
                output += "("
                return
            }
            index += 1
            switch peek() {
            case ":", "=", "!", ">":
                verbose.append(verbose.last!)
                output += slice(start, index + 1)
                index += 1
            case "<" where peek(1) == "=" || peek(1) == "!":
                verbose.append(verbose.last!)
                output += slice(start, index + 2)
                index += 2
            case "P" where peek(1) == "<":
                verbose.append(verbose.last!)
                output += "(?P<"
                index += 2
            case "P" where peek(1) == "=":
                // A back reference by name: copied to its `)`.
                let close = text[index...].firstIndex(of: ")") ?? text.count
                output += slice(start, close + 1)
                index = close + 1
            case "#":
                let close = text[index...].firstIndex(of: ")") ?? text.count
                output += slice(start, close + 1)
                index = close + 1
            case "(":
                // A condition: `(?(1)...)` or `(?(name)...)`, copied to the condition's `)`.
                verbose.append(verbose.last!)
                let close = text[index...].firstIndex(of: ")") ?? text.count
                output += slice(start, close + 1)
                index = close + 1
            default:
                try flags(from: start)
            }
        }

        /// `(?flags)`, `(?flags:...)`, `(?flags-flags:...)`.
        mutating func flags(from start: Int) throws(Refusal) {
            var on = "", off = ""
            var turningOff = false
            while let scalar = peek(), "aiLmsux-".unicodeScalars.contains(scalar) {
                if scalar == "-" {
                    if turningOff { throw pythonRefuses(start, index + 1) }
                    turningOff = true
                } else if turningOff {
                    off.unicodeScalars.append(scalar)
                } else {
                    on.unicodeScalars.append(scalar)
                }
                index += 1
            }
            guard let close = peek(), close == ")" || close == ":", !(on.isEmpty && off.isEmpty) else {
                throw pythonRefuses(start, min(index + 1, text.count))
            }
            index += 1
            let written = slice(start, index)
            if on.contains("L") || off.contains("L") {
                throw Refusal(form: written, reason: "Python's re refuses the locale flag L in a text pattern")
            }
            if on.contains("a") || off.contains("a") {
                throw Refusal(
                    form: written,
                    reason: "the ASCII flag a makes \\w, \\d, \\s and \\b ASCII-only, which PCRE2 10.42 cannot "
                        + "switch inside a pattern; write [0-9], [A-Za-z0-9_] or [ \\t\\n\\r\\f\\v] instead")
            }
            on.removeAll { $0 == "u" }
            off.removeAll { $0 == "u" }
            let verboseNow = on.contains("x") ? true : off.contains("x") ? false : verbose.last!
            if close == ")" {
                // Global flags (Python 3.11 allows them only at the start): for the rest of the pattern.
                verbose[verbose.count - 1] = verboseNow
                if !on.isEmpty || !off.isEmpty { output += "(?\(on)\(off.isEmpty ? "" : "-" + off))" }
            } else {
                verbose.append(verboseNow)
                output += "(?\(on)\(off.isEmpty ? "" : "-" + off):"
            }
        }

        /// `[...]`: a character class; `\S` inside one is Python's non-space (see `spaceClassUnion`).
        mutating func characterClass() throws(Refusal) {
            index += 1
            var negated = false
            if peek() == "^" {
                negated = true
                index += 1
            }
            var items = ""
            var hasNonSpace = false
            var first = true
            while let scalar = peek() {
                if scalar == "]" && !first { break }
                first = false
                switch scalar {
                case "\\":
                    if peek(1) == "S" {
                        hasNonSpace = true
                        index += 2
                    } else {
                        let saved = output
                        output = ""
                        try escape(inClass: true)
                        items += output
                        output = saved
                    }
                case "[", "]":
                    items += "\\" + String(scalar)
                    index += 1
                default:
                    items.unicodeScalars.append(scalar)
                    index += 1
                }
            }
            index += 1  // the closing ']' (an unclosed class: PCRE2 refuses it, as Python does)
            guard hasNonSpace else {
                output += "[\(negated ? "^" : "")\(items)]"
                return
            }
            let spaces = "[\(PythonRegex.spaceItems)]"
            if negated {
                // Not (items or non-space) = a space that is none of the items.
                output += items.isEmpty ? spaces : "(?:(?![\(items)])\(spaces))"
            } else {
                output += items.isEmpty ? "[^\(PythonRegex.spaceItems)]" : "(?:[\(items)]|[^\(PythonRegex.spaceItems)])"
            }
        }

        /// `\`: an escape as Python's `sre_parse` reads it, outside or inside a class.
        mutating func escape(inClass: Bool) throws(Refusal) {
            let start = index
            index += 1
            guard let scalar = peek() else { throw pythonRefuses(start, index) }
            index += 1
            switch scalar {
            case "d", "D", "w", "W", "a", "f", "n", "r", "t":
                output += "\\" + String(scalar)
            case "b":
                output += "\\b"  // a word boundary outside a class, a backspace inside: the same in both
            case "A", "B", "Z":
                if inClass { throw pythonRefuses(start, index) }
                output += scalar == "A" ? "\\A" : scalar == "Z" ? "\\z" : "(?:(?!\\A\\z)\\B)"
            case "s":
                output += inClass ? PythonRegex.spaceItems : "[\(PythonRegex.spaceItems)]"
            case "S":
                // Inside a class, `characterClass` reads `\S` before it gets here.
                output += "[^\(PythonRegex.spaceItems)]"
            case "v":
                output += "\\x{0b}"
            case "x", "u", "U":
                let digits = scalar == "x" ? 2 : scalar == "u" ? 4 : 8
                let hex = slice(index, index + digits)
                guard hex.unicodeScalars.count == digits,
                    hex.unicodeScalars.allSatisfy({ $0.isASCII && $0.properties.isASCIIHexDigit }),
                    let value = UInt32(hex, radix: 16), value <= 0x10FFFF
                else { throw pythonRefuses(start, min(index + digits, text.count)) }
                index += digits
                output += "\\x{\(String(value, radix: 16))}"
            case "N" where peek() == "{":
                let close = text[index...].firstIndex(of: "}") ?? text.count - 1
                index = close + 1
                throw Refusal(
                    form: slice(start, index),
                    reason: "Unicode character names are not supported; write the character or \\uXXXX")
            case "0"..."9":
                try number(first: scalar, start: start, inClass: inClass)
            default:
                if scalar.isASCII && (scalar.properties.isAlphabetic || scalar.properties.numericType != nil) {
                    throw pythonRefuses(start, index)  // \e, \Q, \K, \G, \h, \p, \Z in a class, ...
                }
                // Any other escaped character is itself in both; a non-ASCII one needs no backslash.
                output += scalar.isASCII ? "\\" + String(scalar) : String(scalar)
            }
        }

        /// `\0`...`\9`: an octal escape or a group reference, by Python's rules.
        mutating func number(first: Unicode.Scalar, start: Int, inClass: Bool) throws(Refusal) {
            func isOctal(_ scalar: Unicode.Scalar?) -> Bool { scalar.map { ("0"..."7").contains($0) } ?? false }
            func isDigit(_ scalar: Unicode.Scalar?) -> Bool { scalar.map { ("0"..."9").contains($0) } ?? false }
            var digits = String(first)
            if first == "0" || inClass {
                guard isOctal(first) else { throw pythonRefuses(start, index) }
                while digits.count < 3, isOctal(peek()) {
                    digits.unicodeScalars.append(peek()!)
                    index += 1
                }
            } else {
                if isDigit(peek()) {
                    digits.unicodeScalars.append(peek()!)
                    index += 1
                    if isOctal(first) && isOctal(digits.unicodeScalars.last) && isOctal(peek()) {
                        digits.unicodeScalars.append(peek()!)
                        index += 1
                    }
                }
                if digits.count < 3 {
                    output += "\\g{\(digits)}"
                    return
                }
            }
            let value = UInt32(digits, radix: 8)!
            if value > 0o377 { throw pythonRefuses(start, index) }
            output += "\\x{\(String(value, radix: 16))}"
        }
    }
}
