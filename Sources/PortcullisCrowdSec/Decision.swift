import Foundation
import PortcullisCore

/// A Go duration as the Local API writes a decision's remaining time: `3h59m58.9s`, `1m5.2s`,
/// `-9.5ms` (an ended one), `0s`. Units h, m, s, ms, us (µs), ns; an optional sign.
public enum GoDuration {
    /// Seconds, or nil for text that is not a Go duration.
    public static func seconds(_ text: String) -> Double? {
        var rest = Substring(text)
        var sign = 1.0
        if rest.first == "-" || rest.first == "+" {
            if rest.first == "-" { sign = -1 }
            rest = rest.dropFirst()
        }
        if rest == "0" { return 0 }
        guard !rest.isEmpty else { return nil }
        var total = 0.0
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, number != ".", number.filter({ $0 == "." }).count <= 1, let value = Double(number)
            else { return nil }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            rest = rest.dropFirst(unit.count)
            let scale: Double
            switch unit {
            case "h": scale = 3600
            case "m": scale = 60
            case "s": scale = 1
            case "ms": scale = 1e-3
            case "us", "µs", "μs": scale = 1e-6
            case "ns": scale = 1e-9
            default: return nil
            }
            total += value * scale
        }
        return sign * total
    }
}

/// One decision of a stream answer, as far as a bouncer needs it.
public struct Decision: Sendable, Equatable {
    public enum Scope: String, Sendable {
        case ip, range
    }

    public let id: Int
    /// `crowdsec`, `cscli`, `CAPI`, `lists`...
    public let origin: String
    /// `ban`, `captcha`...
    public let type: String
    /// As given (`Ip`, `Range`, `Country`...).
    public let scope: String
    public let value: String
    public let scenario: String
    /// Remaining seconds when the LAPI answered (negative: ended).
    public let seconds: Double

    public init(id: Int, origin: String, type: String, scope: String, value: String, scenario: String, seconds: Double)
    {
        self.id = id
        self.origin = origin
        self.type = type
        self.scope = scope
        self.value = value
        self.scenario = scenario
        self.seconds = seconds
    }

    /// The network a decision of scope `Ip` or `Range` names: an IPv4-mapped IPv6 address or
    /// range is IPv4; a range's host bits are cleared (the LAPI keeps what it was given).
    public static func network(scope: Scope, value: String) -> IPNetwork? {
        let parts = value.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let full = IPNetwork.fullLength(address.family)
        switch scope {
        case .ip:
            // An Ip decision is one address (a LAPI accepts "1.2.3.4/32" as well).
            if parts.count == 2 {
                guard let length = Int(parts[1]), parts[1].allSatisfy(\.isNumber) else { return nil }
                let written = parts[0].contains(":") && address.family == .ipv4 ? length - 96 : length
                guard written == full else { return nil }
            }
            return IPNetwork(containing: address, length: full)
        case .range:
            guard parts.count == 2, let given = Int(parts[1]), parts[1].allSatisfy(\.isNumber) else { return nil }
            // `::ffff:198.18.1.0/120` is 198.18.1.0/24.
            let length = parts[0].contains(":") && address.family == .ipv4 ? given - 96 : given
            guard (0...full).contains(length) else { return nil }
            return IPNetwork(containing: address, length: length)
        }
    }
}

/// A `/v1/decisions/stream` answer: `{"new": [...] | null, "deleted": [...] | null}`.
public struct DecisionStream: Sendable {
    public var new: [Decision] = []
    public var deleted: [Decision] = []
    /// Entries that are not decisions (a field missing or of the wrong type, a duration that is
    /// not one): counted and skipped.
    public var malformed = 0

    public init() {}

    /// Parses an answer. - Throws: when the whole is not such an object.
    public init(json: [UInt8]) throws(LAPIError) {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(json))
        } catch {
            throw .malformed("not JSON (\(json.count) bytes)")
        }
        guard let object = root as? [String: Any] else { throw .malformed("not a JSON object") }
        for (key, into) in [("new", \DecisionStream.new), ("deleted", \DecisionStream.deleted)] {
            guard let list = object[key], !(list is NSNull) else { continue }
            guard let entries = list as? [Any] else { throw .malformed("'\(key)' is not an array") }
            var decisions: [Decision] = []
            decisions.reserveCapacity(entries.count)
            for entry in entries {
                if let decision = Self.decision(entry) { decisions.append(decision) } else { malformed += 1 }
            }
            self[keyPath: into] = decisions
        }
    }

    private static func decision(_ entry: Any) -> Decision? {
        guard let fields = entry as? [String: Any],
            let id = (fields["id"] as? Int) ?? (fields["id"] as? NSNumber)?.intValue,
            let type = fields["type"] as? String,
            let scope = fields["scope"] as? String,
            let value = fields["value"] as? String,
            let duration = fields["duration"] as? String,
            let seconds = GoDuration.seconds(duration)
        else { return nil }
        return Decision(
            id: id, origin: fields["origin"] as? String ?? "", type: type, scope: scope, value: value,
            scenario: fields["scenario"] as? String ?? "", seconds: seconds)
    }
}
