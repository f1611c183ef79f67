// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import PortcullisCore

/// A Go duration as the Local API writes a decision's remaining time: `3h59m58.9s`, `1m5.2s`,
/// `-9.5ms` (an ended one), `0s`. Units h, m, s, ms, us (µs), ns; an optional sign.
public enum GoDuration {
    /// Seconds, or nil for text that is not a Go duration. (Read byte by byte: a pull of the
    /// community blocklist has tens of thousands.)
    public static func seconds(_ text: String) -> Double? {
        var text = text
        return text.withUTF8 { seconds(utf8: $0) }
    }

    /// `seconds` of the UTF-8 bytes of a text.
    static func seconds(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Double? {
        var index = 0
        var sign = 1.0
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") || bytes[index] == UInt8(ascii: "+") {
            if bytes[index] == UInt8(ascii: "-") { sign = -1 }
            index += 1
        }
        if index == bytes.count - 1, bytes[index] == UInt8(ascii: "0") { return 0 }
        guard index < bytes.count else { return nil }
        var total = 0.0
        while index < bytes.count {
            // A number: digits, at most one point, at least one digit.
            var whole = 0.0
            var fraction = 0.0
            var scale = 1.0
            var digits = 0
            var point = false
            while index < bytes.count {
                let byte = bytes[index]
                if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                    let digit = Double(byte - UInt8(ascii: "0"))
                    if point {
                        scale /= 10
                        fraction += digit * scale
                    } else {
                        whole = whole * 10 + digit
                    }
                    digits += 1
                } else if byte == UInt8(ascii: "."), !point {
                    point = true
                } else {
                    break
                }
                index += 1
            }
            guard digits > 0 else { return nil }
            // A unit: h, m, s, ms, us, µs (C2 B5), μs (CE BC), ns.
            let unitStart = index
            while index < bytes.count, !(bytes[index] >= UInt8(ascii: "0") && bytes[index] <= UInt8(ascii: "9")),
                bytes[index] != UInt8(ascii: ".")
            {
                index += 1
            }
            let length = index - unitStart
            let first = length > 0 ? bytes[unitStart] : 0
            let second = length > 1 ? bytes[unitStart + 1] : 0
            let third = length > 2 ? bytes[unitStart + 2] : 0
            let seconds: Double
            switch (length, first, second, third) {
            case (1, 0x68, _, _): seconds = 3600  // h
            case (1, 0x6D, _, _): seconds = 60  // m
            case (1, 0x73, _, _): seconds = 1  // s
            case (2, 0x6D, 0x73, _): seconds = 1e-3  // ms
            case (2, 0x75, 0x73, _), (3, 0xC2, 0xB5, 0x73), (3, 0xCE, 0xBC, 0x73): seconds = 1e-6  // us, µs, μs
            case (2, 0x6E, 0x73, _): seconds = 1e-9  // ns
            default: return nil
            }
            total += (whole + fraction) * seconds
        }
        return sign * total
    }
}

/// One decision of a stream answer, as far as a bouncer needs it. 40 bytes: the texts the
/// decisions of an answer repeat (origin, type, scope, scenario: a handful of each in 100,000)
/// are held once, by every decision that has them.
public struct Decision: Sendable, Equatable {
    public enum Scope: String, Sendable {
        case ip, range
    }

    /// The texts decisions share.
    final class Kind: Sendable {
        let origin: String
        let type: String
        let scope: String
        let scenario: String

        init(origin: String, type: String, scope: String, scenario: String) {
            self.origin = origin
            self.type = type
            self.scope = scope
            self.scenario = scenario
        }
    }

    public let id: Int
    public let value: String
    /// Remaining seconds when the LAPI answered (negative: ended).
    public let seconds: Double
    let kind: Kind

    /// `crowdsec`, `cscli`, `CAPI`, `lists`...
    public var origin: String { kind.origin }
    /// `ban`, `captcha`...
    public var type: String { kind.type }
    /// As given (`Ip`, `Range`, `Country`...).
    public var scope: String { kind.scope }
    public var scenario: String { kind.scenario }

    public init(id: Int, origin: String, type: String, scope: String, value: String, scenario: String, seconds: Double)
    {
        self.init(
            id: id, value: value, seconds: seconds,
            kind: Kind(origin: origin, type: type, scope: scope, scenario: scenario))
    }

    init(id: Int, value: String, seconds: Double, kind: Kind) {
        self.id = id
        self.value = value
        self.seconds = seconds
        self.kind = kind
    }

    public static func == (left: Decision, right: Decision) -> Bool {
        left.id == right.id && left.value == right.value && left.seconds == right.seconds
            && (left.kind === right.kind
                || (left.origin == right.origin && left.type == right.type && left.scope == right.scope
                    && left.scenario == right.scenario))
    }

    /// The network a decision of scope `Ip` or `Range` names: an IPv4-mapped IPv6 address or
    /// range is IPv4; a range's host bits are cleared (the LAPI keeps what it was given).
    public static func network(scope: Scope, value: String) -> IPNetwork? {
        let slash = value.utf8.firstIndex(of: UInt8(ascii: "/"))
        let text = slash.map { value[..<$0] } ?? Substring(value)
        guard let address = IPAddress(String(text)) else { return nil }
        let full = IPNetwork.fullLength(address.family)
        // Written as IPv6 (`::ffff:198.18.1.0/120`): the length counts the 96 mapped bits.
        let mapped = address.family == .ipv4 && text.utf8.contains(UInt8(ascii: ":"))
        var length: Int?
        if let slash {
            let digits = value[value.utf8.index(after: slash)...]
            guard let given = Int(digits), digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            length = mapped ? given - 96 : given
        }
        switch scope {
        case .ip:
            // An Ip decision is one address (a LAPI accepts "1.2.3.4/32" as well).
            guard length == nil || length == full else { return nil }
            return IPNetwork(containing: address, length: full)
        case .range:
            guard let length, (0...full).contains(length) else { return nil }
            return IPNetwork(containing: address, length: length)
        }
    }
}
