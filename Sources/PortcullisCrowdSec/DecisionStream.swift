// SPDX-License-Identifier: Apache-2.0

/// A `/v1/decisions/stream` answer: `{"new": [...] | null, "deleted": [...] | null}`.
///
/// Read in place, byte by byte: the answer's syntax is checked whole first (nothing is handed
/// over from an answer that is not JSON of this shape), then each decision is made straight from
/// its bytes, with the texts a large answer repeats (origins, types, scopes, scenarios) made once
/// and shared. No document tree is built: a pull of 100,000 decisions (15 MB) costs the decisions
/// themselves and nothing beside.
public struct DecisionStream: Sendable {
    public var new: [Decision] = []
    public var deleted: [Decision] = []
    /// Entries that are not decisions (a field missing or of the wrong type, a duration that is
    /// not one): counted and skipped.
    public var malformed = 0

    public init() {}

    /// Parses an answer (an entry that is not a decision is counted, not fatal).
    /// - Throws: when the whole is not such an object.
    public init(json: [UInt8]) throws(LAPIError) {
        var new: [Decision] = []
        var deleted: [Decision] = []
        let counts = try Self.forEach(
            json: json,
            reserve: {
                new.reserveCapacity($0.new)
                deleted.reserveCapacity($0.deleted)
            },
            new: { new.append($0) }, deleted: { deleted.append($0) })
        malformed = counts.malformed
        self.new = new
        self.deleted = deleted
    }

    /// Entries of each list (elements, decisions or not), and those that were not decisions.
    public struct Counts: Sendable, Equatable {
        public var new = 0
        public var deleted = 0
        public var malformed = 0

        public init(new: Int = 0, deleted: Int = 0, malformed: Int = 0) {
            self.new = new
            self.deleted = deleted
            self.malformed = malformed
        }
    }

    /// Hands each decision of an answer over as it is read, without holding them: `deleted`'s
    /// first, then `new`'s, each in the answer's order. The whole answer is checked first: one
    /// that is not JSON of this shape throws before anything is handed over.
    ///
    /// An entry of `new` is a decision with every field (`id`, `type`, `scope`, `value` and a
    /// `duration` that reads; `origin` and `scenario` may be missing). An entry of `deleted`
    /// deletes by value: it needs only `scope` and `value` (the rest, when missing or unreadable,
    /// is 0 or empty; its `seconds` 0).
    /// - Parameter reserve: told the entries of each list before any is handed over (`malformed` 0).
    /// - Returns: the entries of each list, and those that were not decisions.
    @discardableResult
    public static func forEach(
        json: [UInt8], reserve: (Counts) -> Void = { _ in }, new: (Decision) -> Void, deleted: (Decision) -> Void
    ) throws(LAPIError) -> Counts {
        let result = json.withUnsafeBufferPointer { bytes -> Result<Counts, LAPIError> in
            Result { () throws(LAPIError) in try forEach(bytes: bytes, reserve: reserve, new: new, deleted: deleted) }
        }
        return try result.get()
    }

    /// `forEach` over bytes where they lie (an answer as libcurl received it).
    @discardableResult
    public static func forEach(
        bytes: UnsafeBufferPointer<UInt8>, reserve: (Counts) -> Void = { _ in }, new: (Decision) -> Void,
        deleted: (Decision) -> Void
    ) throws(LAPIError) -> Counts {
        var outline = Outline()
        if let error = outline.read(bytes) { throw error }
        var counts = Counts(new: outline.new?.count ?? 0, deleted: outline.deleted?.count ?? 0)
        reserve(counts)
        var reader = EntryReader(bytes: bytes)
        if let list = outline.deleted {
            counts.malformed += reader.read(list.start, strict: false, deleted)
        }
        if let list = outline.new {
            counts.malformed += reader.read(list.start, strict: true, new)
        }
        return counts
    }
}

/// Where the two lists are in an answer whose syntax was checked whole.
private struct Outline {
    struct List {
        /// The index of its `[`.
        var start: Int
        var count: Int
    }

    var new: List?
    var deleted: List?

    /// - Returns: why the answer is refused, or nil.
    mutating func read(_ bytes: UnsafeBufferPointer<UInt8>) -> LAPIError? {
        let notJSON = LAPIError.malformed("not JSON (\(bytes.count) bytes)")
        var scanner = JSONScanner(bytes: bytes)
        scanner.skipSpace()
        guard scanner.peek == UInt8(ascii: "{") else {
            guard scanner.skipValue(), scanner.atEnd else { return notJSON }
            return .malformed("not a JSON object of new and deleted decisions (\(bytes.count) bytes)")
        }
        scanner.index += 1
        var mismatch: LAPIError?
        scanner.skipSpace()
        if scanner.peek == UInt8(ascii: "}") {
            scanner.index += 1
        } else {
            while true {
                scanner.skipSpace()
                guard let key = scanner.skipString() else { return notJSON }
                scanner.skipSpace()
                guard scanner.take(UInt8(ascii: ":")) else { return notJSON }
                scanner.skipSpace()
                let name = scanner.text(key)
                if name == "new" || name == "deleted" {
                    let start = scanner.index
                    var list: List?
                    if scanner.peek == UInt8(ascii: "[") {
                        guard let count = scanner.skipArray() else { return notJSON }
                        list = List(start: start, count: count)
                    } else {
                        guard scanner.skipValue() else { return notJSON }
                        if !scanner.wasNull(from: start) {
                            mismatch = mismatch ?? .malformed("'\(name)' is not an array")
                        }
                    }
                    if name == "new" { new = list } else { deleted = list }
                } else {
                    guard scanner.skipValue() else { return notJSON }
                }
                scanner.skipSpace()
                if scanner.take(UInt8(ascii: "}")) { break }
                guard scanner.take(UInt8(ascii: ",")) else { return notJSON }
            }
        }
        guard scanner.atEnd else { return notJSON }
        return mismatch
    }
}

/// Reads the entries of a list whose syntax was checked, into decisions.
private struct EntryReader {
    let bytes: UnsafeBufferPointer<UInt8>
    /// Texts made once per answer and shared by the decisions that repeat them.
    var shared = SharedTexts()

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The fields of one entry a decision is made of (indexes of their values).
    /// Each field's value in an entry: its first byte's index, its end (no array: one a decision).
    private struct Values {
        var id, origin, type, scope, value, duration, scenario: (Int, Int)?

        subscript(field: Field) -> (Int, Int)? {
            get {
                switch field {
                case .id: id
                case .origin: origin
                case .type: type
                case .scope: scope
                case .value: value
                case .duration: duration
                case .scenario: scenario
                }
            }
            set {
                switch field {
                case .id: id = newValue
                case .origin: origin = newValue
                case .type: type = newValue
                case .scope: scope = newValue
                case .value: value = newValue
                case .duration: duration = newValue
                case .scenario: scenario = newValue
                }
            }
        }
    }

    private enum Field {
        case id, origin, type, scope, value, duration, scenario

        static func named(_ key: UnsafeBufferPointer<UInt8>) -> Field? {
            switch key.count {
            case 2: return equal(key, "id") ? .id : nil
            case 4: return equal(key, "type") ? .type : nil
            case 5: return equal(key, "scope") ? .scope : equal(key, "value") ? .value : nil
            case 6: return equal(key, "origin") ? .origin : nil
            case 8: return equal(key, "duration") ? .duration : equal(key, "scenario") ? .scenario : nil
            default: return nil
            }
        }

        private static func equal(_ key: UnsafeBufferPointer<UInt8>, _ name: StaticString) -> Bool {
            name.withUTF8Buffer { $0.elementsEqual(key) }
        }
    }

    /// - Returns: the entries that were not decisions.
    mutating func read(_ start: Int, strict: Bool, _ body: (Decision) -> Void) -> Int {
        var scanner = JSONScanner(bytes: bytes, index: start + 1)
        var malformed = 0
        while true {
            scanner.skipSpace()
            if scanner.take(UInt8(ascii: "]")) { return malformed }
            _ = scanner.take(UInt8(ascii: ","))
            scanner.skipSpace()
            if let decision = entry(&scanner, strict: strict) {
                body(decision)
            } else {
                malformed += 1
            }
        }
    }

    /// One entry (the scanner after it), or nil when it is not a decision.
    private mutating func entry(_ scanner: inout JSONScanner, strict: Bool) -> Decision? {
        guard scanner.take(UInt8(ascii: "{")) else {
            _ = scanner.skipValue()
            return nil
        }
        var values = Values()
        scanner.skipSpace()
        if !scanner.take(UInt8(ascii: "}")) {
            while true {
                scanner.skipSpace()
                let key = scanner.skipString()!
                scanner.skipSpace()
                _ = scanner.take(UInt8(ascii: ":"))
                scanner.skipSpace()
                let valueStart = scanner.index
                _ = scanner.skipValue()
                if let field = Field.named(scanner.slice(key.lowerBound + 1, key.upperBound - 1)) {
                    values[field] = (valueStart, scanner.index)
                }
                scanner.skipSpace()
                if scanner.take(UInt8(ascii: "}")) { break }
                _ = scanner.take(UInt8(ascii: ","))
            }
        }
        func string(_ field: Field) -> (Int, Int)? {
            guard let (from, to) = values[field], bytes[from] == UInt8(ascii: "\"") else { return nil }
            return (from, to)
        }
        guard let scope = string(.scope), let value = string(.value) else { return nil }
        let id = values[.id].flatMap { integer($0.0, $0.1) }
        let type = string(.type)
        let duration = string(.duration).flatMap { GoDuration.seconds(utf8: scanner.slice($0.0 + 1, $0.1 - 1)) }
        if strict {
            guard id != nil, type != nil, duration != nil else { return nil }
        }
        let kind = shared.kind(scanner, origin: string(.origin), type: type, scope: scope, scenario: string(.scenario))
        return Decision(id: id ?? 0, value: scanner.text(value.0..<value.1), seconds: duration ?? 0, kind: kind)
    }

    /// The JSON number from `from` to `to` as an Int: digits, an optional `-`; nil for any other.
    private func integer(_ from: Int, _ to: Int) -> Int? {
        var index = from
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        guard index < to else { return nil }
        var value = 0
        while index < to {
            let digit = Int(bytes[index]) - 0x30
            guard (0...9).contains(digit) else { return nil }
            let (times, over) = value.multipliedReportingOverflow(by: 10)
            let (sum, carry) = times.addingReportingOverflow(negative ? -digit : digit)
            guard !over, !carry else { return nil }
            value = sum
            index += 1
        }
        return value
    }
}

/// The texts of one answer that repeat (origins, types, scopes, scenarios: a handful of each in
/// 100,000 decisions): each combination made once and shared.
private struct SharedTexts {
    private typealias Raw = (origin: [UInt8], type: [UInt8], scope: [UInt8], scenario: [UInt8])
    private var known: [(raw: Raw, kind: Decision.Kind)] = []

    /// The texts of the JSON strings at these ranges (from a `"` to after its `"`; nil: none).
    mutating func kind(
        _ scanner: JSONScanner, origin: (Int, Int)?, type: (Int, Int)?, scope: (Int, Int)?, scenario: (Int, Int)?
    ) -> Decision.Kind {
        func raw(_ range: (Int, Int)?) -> UnsafeBufferPointer<UInt8> {
            guard let range else { return scanner.slice(0, 0) }
            return scanner.slice(range.0 + 1, range.1 - 1)
        }
        // The last one made first: an answer's decisions come in runs of one kind.
        for entry in known.reversed()
        where entry.raw.origin.elementsEqual(raw(origin)) && entry.raw.type.elementsEqual(raw(type))
            && entry.raw.scope.elementsEqual(raw(scope)) && entry.raw.scenario.elementsEqual(raw(scenario))
        {
            return entry.kind
        }
        func text(_ range: (Int, Int)?) -> String { range.map { scanner.text($0.0..<$0.1) } ?? "" }
        let kind = Decision.Kind(origin: text(origin), type: text(type), scope: text(scope), scenario: text(scenario))
        // Bounded: past 64 combinations (an answer of distinct scenarios), each is made anew.
        let escaped = [origin, type, scope, scenario].contains { raw($0).contains(UInt8(ascii: "\\")) }
        if known.count < 64, !escaped {
            known.append(((Array(raw(origin)), Array(raw(type)), Array(raw(scope)), Array(raw(scenario))), kind))
        }
        return kind
    }
}
