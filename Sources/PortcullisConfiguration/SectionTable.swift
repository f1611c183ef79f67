// SPDX-License-Identifier: Apache-2.0
import TOMLKit

/// A table of the file whose keys are a fixed set (`[crowdsec]`, `[fleet]`): an unknown key is
/// refused naming the keys there are, and each value is read with its type and key path for the
/// error (`fleet.queue: ...`, with the file and line).
struct SectionTable {
    let name: String
    let file: String
    let locator: KeyLocator
    private var values: [String: TOMLValueConvertible] = [:]

    /// - Parameter what: what the table sets, for the unknown key's line ("CrowdSec", "fleet").
    init(
        _ table: TOMLTable, name: String, keys: [String], what: String, file: String, locator: KeyLocator
    ) throws(ConfigurationError) {
        self.name = name
        self.file = file
        self.locator = locator
        for (key, value) in table {
            guard keys.contains(key) else {
                throw ConfigurationError(
                    file: file, line: locator.line(of: "\(name).\(key)"), key: "\(name).\(key)",
                    "unknown \(what) setting; the keys are " + keys.joined(separator: ", "))
            }
            values[key] = value
        }
    }

    /// An error on `key` (nil: the table itself), with its line.
    func fail(_ key: String?, _ message: String) -> ConfigurationError {
        let path = key.map { "\(name).\($0)" } ?? name
        return ConfigurationError(file: file, line: locator.line(of: path), key: path, message)
    }

    func has(_ key: String) -> Bool { values[key] != nil }

    func value(_ key: String) -> TOMLValueConvertible? { values[key] }

    /// A string that is not empty, or nil when the key is not there.
    func text(_ key: String) throws(ConfigurationError) -> String? {
        guard let value = values[key] else { return nil }
        let text = try ConfigurationFile.text(value, key: "\(name).\(key)", file: file, locator: locator)
        guard !text.isEmpty else { throw fail(key, "is empty; give a value or leave the key out") }
        return text
    }

    /// A string or an array of them (none when the key is not there).
    func texts(_ key: String) throws(ConfigurationError) -> [String] {
        guard let value = values[key] else { return [] }
        return try ConfigurationFile.texts(value, key: "\(name).\(key)", file: file, locator: locator)
    }

    /// An absolute path.
    func path(_ key: String) throws(ConfigurationError) -> String? {
        guard let path = try text(key) else { return nil }
        guard path.hasPrefix("/") else { throw fail(key, "give an absolute path, not '\(path)'") }
        return path
    }

    func boolean(_ key: String) throws(ConfigurationError) -> Bool? {
        guard let value = values[key] else { return nil }
        return try ConfigurationFile.boolean(value, key: "\(name).\(key)", file: file, locator: locator)
    }

    /// An integer in `range` (`what` says the range in the error).
    func integer(_ key: String, _ range: ClosedRange<Int>, _ what: String) throws(ConfigurationError) -> Int? {
        guard let value = values[key] else { return nil }
        let number = try ConfigurationFile.integer(value, key: "\(name).\(key)", file: file, locator: locator)
        guard range.contains(number) else { throw fail(key, "must be \(what)") }
        return number
    }

    func number(_ key: String) throws(ConfigurationError) -> Double? {
        guard let value = values[key] else { return nil }
        return try ConfigurationFile.number(value, key: "\(name).\(key)", file: file, locator: locator)
    }
}
