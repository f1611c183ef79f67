// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Glibc

/// Machine-readable output (summaries, ready files, `--json`): one encoder, keys sorted, so
/// scripts never parse the lines meant for people.
public enum JSONOutput {
    /// `value` as one line of JSON.
    public static func line(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads a value written by `write`; nil when the file is missing or not such a value (a
    /// link, FIFO or directory is not opened for reading: see `StateFile`).
    public static func read<Value: Decodable>(_ type: Value.Type, from path: String) -> Value? {
        guard let bytes = try? StateFile.read(path) else { return nil }
        return try? JSONDecoder().decode(type, from: Data(bytes))
    }

    /// Reads a state file written by `write`: the value, nil when there is none, or, when the file
    /// is not such a value (or no regular file), moves it to `PATH.bad` and says so in `note`.
    /// - Parameter what: what the file is, for the note ("the place in log file X").
    public static func readState<Value: Decodable>(
        _ type: Value.Type, from path: String, what: String
    ) -> (value: Value?, note: String?) {
        let problem: String
        do throws(StateFile.Problem) {
            guard let bytes = try StateFile.read(path) else { return (nil, nil) }
            guard let value = try? JSONDecoder().decode(type, from: Data(bytes)) else {
                return (nil, setAside(path, what: what, problem: "is not one this daemon wrote (not its JSON)"))
            }
            return (value, nil)
        } catch {
            problem = error.description
        }
        return (nil, setAside(path, what: what, problem: problem))
    }

    private static func setAside(_ path: String, what: String, problem: String) -> String {
        if let aside = StateFile.setAside(path) {
            return "\(what) \(path) \(problem); moved to \(aside) and not used"
        }
        return "\(what) \(path) \(problem), and cannot be moved aside (\(Errno(errno))); not used: remove it"
    }

    /// Writes `value` as JSON to `path`, atomically (`TextFile.write`).
    public static func write(_ value: some Encodable, to path: String) throws(Errno) {
        try TextFile.write(line(value) + "\n", to: path)
    }
}

/// A JSON object whose keys are known only at run time (a counter per name), in insertion order.
public struct JSONObject: Encodable {
    public indirect enum Value: Encodable {
        case integer(Int64)
        case unsigned(UInt64)
        case number(Double)
        case text(String)
        case bool(Bool)
        case object(JSONObject)
        case array([Value])

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .integer(let value): try container.encode(value)
            case .unsigned(let value): try container.encode(value)
            case .number(let value): try container.encode(value)
            case .text(let value): try container.encode(value)
            case .bool(let value): try container.encode(value)
            case .object(let value): try container.encode(value)
            case .array(let values): try container.encode(values)
            }
        }
    }

    private struct Key: CodingKey {
        let stringValue: String
        init(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    private var fields: [(String, Value)] = []

    public init() {}

    public subscript(key: String) -> Value? {
        get { fields.first { $0.0 == key }?.1 }
        set {
            fields.removeAll { $0.0 == key }
            if let newValue { fields.append((key, newValue)) }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (key, value) in fields { try container.encode(value, forKey: Key(stringValue: key)) }
    }
}
