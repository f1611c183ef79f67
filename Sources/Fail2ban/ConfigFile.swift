// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// One configuration file parsed as Python's `configparser` parses it for fail2ban (fail2ban 1.0,
/// Python 3):
/// - `[section]` headers (names are case-sensitive; `[DEFAULT]` is the defaults section);
/// - `key = value` or `key: value`, split at the first `=` or `:`; keys are lower-cased;
/// - a line indented deeper than its option's line continues the value (joined with "\n"; empty
///   lines inside a value are kept, trailing ones dropped);
/// - lines whose first non-blank character is `#` or `;` are comments; `;` after white space ends
///   a line (inline comment), `#` inside a line does not.
struct ConfigFile {
    /// The file's path, for errors.
    let path: String
    /// `[DEFAULT]`'s options.
    var defaults: OrderedOptions = OrderedOptions()
    /// Sections in the order they first appear.
    var sections: [(name: String, options: OrderedOptions)] = []
    /// Every line of every value, with its line number: where a pattern refused later was written.
    var sourceLines: [SourceLine] = []

    /// Parses `text` (the contents of `path`).
    init(path: String, text: String) throws(Fail2banError) {
        self.path = path
        var currentSection: Int? = nil  // index into sections; -1 = DEFAULT
        var inDefault = false
        var optionName: String? = nil
        var valueLines: [String] = []
        var indentLevel = 0

        func flush() {
            guard let name = optionName else { return }
            var lines = valueLines
            while let last = lines.last, last.isEmpty, lines.count > 1 { lines.removeLast() }
            var value = lines.joined(separator: "\n")
            while let last = value.last, last.isWhitespace { value.removeLast() }
            if inDefault {
                defaults[name] = value
            } else if let index = currentSection {
                sections[index].options[name] = value
            }
            optionName = nil
            valueLines = []
        }

        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.last == "\r" { line.removeLast() }
            let stripped = line.trimmingWhitespace()
            var commentStart: String.Index? = nil
            if stripped.hasPrefix("#") || stripped.hasPrefix(";") {
                commentStart = line.startIndex
            } else {
                var index = line.startIndex
                while index < line.endIndex {
                    if line[index] == ";" && (index == line.startIndex || line[line.index(before: index)].isWhitespace)
                    {
                        commentStart = index
                        break
                    }
                    index = line.index(after: index)
                }
            }
            let value = line[..<(commentStart ?? line.endIndex)].trimmingWhitespace()
            if value.isEmpty {
                // An empty line belongs to the value being read; a comment line does not.
                if commentStart == nil && optionName != nil { valueLines.append("") }
                continue
            }
            let indent = line.prefix { $0 == " " || $0 == "\t" }.count
            if let name = optionName, indent > indentLevel {
                valueLines.append(String(value))
                sourceLines.append(
                    SourceLine(file: path, line: lineNumber, key: name, text: String(value)))
                continue
            }
            flush()
            indentLevel = indent
            if value.hasPrefix("["), let close = value.lastIndex(of: "]"), close > value.index(after: value.startIndex)
            {
                let name = String(value[value.index(after: value.startIndex)..<close])
                if name == "DEFAULT" {
                    inDefault = true
                    currentSection = nil
                } else {
                    inDefault = false
                    if let existing = sections.firstIndex(where: { $0.name == name }) {
                        currentSection = existing
                    } else {
                        sections.append((name, OrderedOptions()))
                        currentSection = sections.count - 1
                    }
                }
                continue
            }
            guard inDefault || currentSection != nil,
                let separator = value.firstIndex(where: { $0 == "=" || $0 == ":" })
            else {
                throw .syntax(file: path, line: lineNumber, text: String(value))
            }
            let key = value[..<separator].trimmingWhitespace().lowercased()
            if key.isEmpty { throw .syntax(file: path, line: lineNumber, text: String(value)) }
            optionName = key
            valueLines = [String(value[value.index(after: separator)...].trimmingWhitespace())]
            sourceLines.append(
                SourceLine(file: path, line: lineNumber, key: key, text: valueLines[0]))
        }
        flush()
    }

    /// Reads and parses the file at `path`. - Returns: nil when it does not exist.
    static func read(_ path: String) throws(Fail2banError) -> ConfigFile? {
        guard let text = try readTextFile(path) else { return nil }
        return try ConfigFile(path: path, text: text)
    }
}

/// One line of an option's value as written: the file, its line number, the key and the text (the
/// first line of a value without its `key =`).
public struct SourceLine: Sendable, Equatable {
    public let file: String
    public let line: Int
    let key: String
    let text: String
}

/// Options of one section in definition order (later definitions replace the value in place, as a
/// Python dict does).
struct OrderedOptions: Sequence {
    private(set) var keys: [String] = []
    private var values: [String: String] = [:]

    subscript(key: String) -> String? {
        get { values[key] }
        set {
            if let newValue {
                if values.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if values.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    var isEmpty: Bool { keys.isEmpty }

    func makeIterator() -> AnyIterator<(key: String, value: String)> {
        var iterator = keys.makeIterator()
        return AnyIterator {
            guard let key = iterator.next() else { return nil }
            return (key, values[key]!)
        }
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        let text = Substring(self)
        guard let first = text.firstIndex(where: { !$0.isWhitespace }) else { return text[text.endIndex...] }
        let last = text.lastIndex(where: { !$0.isWhitespace })!
        return text[first...last]
    }
}

/// The contents of a text file, or nil when it does not exist.
func readTextFile(_ path: String) throws(Fail2banError) -> String? {
    do throws(Errno) {
        return try TextFile.read(path)
    } catch  where error.code == ENOENT || error.code == ENOTDIR {
        return nil
    } catch {
        throw .unreadableFile(path: path, reason: error.description)
    }
}

/// Whether a regular file (or a link to one) exists at `path`.
func fileExists(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFREG
}

/// Names in `directory` ending in `suffix`, sorted (as Python's `sorted(glob(...))`), as full paths.
func sortedFiles(in directory: String, suffix: String) -> [String] {
    guard let handle = opendir(directory) else { return [] }
    defer { closedir(handle) }
    var names: [String] = []
    while let entry = readdir(handle) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        if name.hasPrefix(".") { continue }  // glob's * does not match a leading dot
        if name.hasSuffix(suffix) { names.append(directory + "/" + name) }
    }
    return names.sorted()
}

func directoryName(_ path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

func joinPath(_ directory: String, _ name: String) -> String {
    if name.hasPrefix("/") || directory.isEmpty { return name }
    return directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
