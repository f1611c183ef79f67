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

    /// Reads a value written by `write`; nil when the file is missing or not such a value.
    public static func read<Value: Decodable>(_ type: Value.Type, from path: String) -> Value? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > 1 << 20 { return nil }  // not one of ours
        }
        return try? JSONDecoder().decode(type, from: Data(bytes))
    }

    /// Writes `value` as JSON to `path`, atomically: to a temporary file beside it, then renamed
    /// over it, so a reader never sees half a file.
    public static func write(_ value: some Encodable, to path: String) throws(Errno) {
        let temporary = path + ".tmp.\(getpid())"
        // O_EXCL | O_NOFOLLOW: nothing planted at the temporary name is followed or reused.
        unlink(temporary)
        let fd = try systemCall(
            { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644) }, orThrow: { $0 })
        var text = line(value) + "\n"
        var writeError: Int32 = 0
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count && writeError == 0 {
                switch systemCallResult({ Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }) {
                case .success(let written) where written > 0: offset += written
                case .success: writeError = ENOSPC
                case .failure(let error): writeError = error.code
                }
            }
        }
        // On disk before the rename: a crash never leaves the name pointing at a file cut short.
        if writeError == 0 && fsync(fd) != 0 { writeError = errno }
        close(fd)
        if writeError != 0 || rename(temporary, path) != 0 {
            let code = writeError != 0 ? writeError : errno
            unlink(temporary)
            throw Errno(code)
        }
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

        public func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .integer(let value): try container.encode(value)
            case .unsigned(let value): try container.encode(value)
            case .number(let value): try container.encode(value)
            case .text(let value): try container.encode(value)
            case .bool(let value): try container.encode(value)
            case .object(let value): try container.encode(value)
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
