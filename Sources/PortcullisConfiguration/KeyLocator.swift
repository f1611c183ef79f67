// SPDX-License-Identifier: Apache-2.0
/// Finds the line of a key in a TOML text, only to point an error at it. TOMLKit parses the file
/// and reports lines for syntax errors, but keeps no position for the keys and values it returns;
/// this reads the lines the way a person does (table headers and `key =` at the start of a line)
/// and is never used to read a value.
struct KeyLocator {
    /// Line (1-based) of each key, by its full dotted path (`jail.sshd.maxretry`), and of each
    /// table header (`jail.sshd`).
    private var lines: [String: Int] = [:]

    init(text: String) {
        var table = ""
        var inMultiLineString = false
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.drop { $0 == " " || $0 == "\t" }
            // Triple-quoted strings may span lines; their contents are no keys.
            let quotes = line.components(separatedBy: "'''").count + line.components(separatedBy: "\"\"\"").count - 2
            if inMultiLineString {
                if quotes % 2 == 1 { inMultiLineString = false }
                continue
            }
            if line.hasPrefix("[") {
                let header = line.drop { $0 == "[" }.prefix { $0 != "]" }
                table = Self.normalise(String(header))
                // `[a.b.c]` also defines `a` and `a.b` (implicitly) where nothing did before.
                var prefix = ""
                for part in table.split(separator: ".") {
                    prefix = prefix.isEmpty ? String(part) : prefix + "." + part
                    if lines[prefix] == nil { lines[prefix] = number + 1 }
                }
                continue
            }
            guard let equals = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            let key = Self.normalise(String(line[..<equals]))
            let path = table.isEmpty ? key : table + "." + key
            if lines[path] == nil { lines[path] = number + 1 }
            if quotes % 2 == 1 { inMultiLineString = true }
        }
    }

    /// `a . "b" .c` → `a.b.c` (quotes and spaces around the dots dropped).
    private static func normalise(_ key: String) -> String {
        key.split(separator: ".").map {
            $0.trimmed(of: [" ", "\t", "\"", "'"])
        }.joined(separator: ".")
    }

    /// The line of `path`, or of the nearest enclosing key or table that has one (a key inside an
    /// inline table: the line of the table's key).
    func line(of path: String) -> Int? {
        var parts = path.split(separator: ".").map(String.init)
        while !parts.isEmpty {
            if let line = lines[parts.joined(separator: ".")] { return line }
            parts.removeLast()
        }
        return nil
    }
}

extension StringProtocol {
    fileprivate func trimmed(of characters: Set<Character>) -> String {
        String(drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}
