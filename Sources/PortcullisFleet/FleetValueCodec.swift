// SPDX-License-Identifier: Apache-2.0
import CPortcullisNATS
import FoundationEssentials

/// A key's value as bytes, written and read by hand: Foundation's JSON coders cost about 10 µs a
/// value (`portcullis-perf fleet-load`), more than the rest of a fleet ban's path. What this writes
/// is JSON `JSONDecoder` reads as the same value (the keys in `JSONEncoder`'s order, `/` not
/// escaped); what it cannot read (another writer's spacing or order, escapes) goes to `JSONDecoder`.
extension FleetValue {
    /// `{"end":…,"at":…,"jail":"…","host":"…","level":…}`, with `"refresh":true` for a put again.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(80 + jail.utf8.count + host.utf8.count)
        func append(_ text: StaticString) {
            text.withUTF8Buffer { out.append(contentsOf: $0) }
        }
        func number(_ value: UInt64) { out.append(contentsOf: String(value).utf8) }
        func string(_ value: String) {
            out.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                    out.append(UInt8(ascii: "\\"))
                    out.append(byte)
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    out.append(contentsOf: Array("\\u00".utf8))
                    out.append(hex[Int(byte >> 4)])
                    out.append(hex[Int(byte & 0xF)])
                default: out.append(byte)
                }
            }
            out.append(UInt8(ascii: "\""))
        }
        append("{\"end\":")
        number(end)
        append(",\"at\":")
        number(at)
        append(",\"jail\":")
        string(jail)
        append(",\"host\":")
        string(host)
        append(",\"level\":")
        number(UInt64(level))
        if refresh == true { append(",\"refresh\":true") }
        append("}")
        return out
    }

    /// Reads a value: the form `bytes` writes at once, anything else through `JSONDecoder`.
    public static func read(_ buffer: UnsafeRawBufferPointer, decoder: JSONDecoder) -> FleetValue? {
        if let value = readPlain(buffer) { return value }
        guard let base = buffer.baseAddress else { return nil }
        return try? decoder.decode(FleetValue.self, from: Data(bytes: base, count: buffer.count))
    }

    /// The form `bytes` writes (strings without escapes); nil for any other.
    static func readPlain(_ buffer: UnsafeRawBufferPointer) -> FleetValue? {
        var index = 0
        func expect(_ text: StaticString) -> Bool {
            text.withUTF8Buffer { literal in
                guard index + literal.count <= buffer.count else { return false }
                for (offset, byte) in literal.enumerated() where buffer[index + offset] != byte { return false }
                index += literal.count
                return true
            }
        }
        func number() -> UInt64? {
            var value: UInt64 = 0
            let start = index
            while index < buffer.count, buffer[index] >= 0x30, buffer[index] <= 0x39 {
                let (times, overflow) = value.multipliedReportingOverflow(by: 10)
                guard !overflow else { return nil }
                let (sum, carry) = times.addingReportingOverflow(UInt64(buffer[index] - 0x30))
                guard !carry else { return nil }
                value = sum
                index += 1
            }
            return index > start ? value : nil
        }
        func string() -> String? {
            guard index < buffer.count, buffer[index] == UInt8(ascii: "\"") else { return nil }
            index += 1
            let start = index
            while index < buffer.count, buffer[index] != UInt8(ascii: "\"") {
                guard buffer[index] != UInt8(ascii: "\\"), buffer[index] >= 0x20 else { return nil }
                index += 1
            }
            guard index < buffer.count else { return nil }
            let text = String(validating: buffer[start..<index], as: UTF8.self)
            index += 1
            return text
        }
        guard expect("{\"end\":"), let end = number(), expect(",\"at\":"), let at = number(),
            expect(",\"jail\":"), let jail = string(), expect(",\"host\":"), let host = string(),
            expect(",\"level\":"), let level = number(), level <= UInt64(UInt32.max)
        else { return nil }
        var refresh: Bool?
        if expect(",\"refresh\":true") { refresh = true }
        guard expect("}"), index == buffer.count else { return nil }
        return FleetValue(end: end, at: at, jail: jail, host: host, level: UInt32(level), refresh: refresh)
    }
}

extension FleetNode {
    /// The value of a bucket's entry (nil: none, or not a ban's).
    func entryValue(_ entry: FleetEntry) -> FleetValue? {
        guard !entry.value.isEmpty else { return nil }
        return entry.value.withUnsafeBytes { FleetValue.read($0, decoder: decoder) }
    }
}
