/// Why a line did or did not yield an offence.
public enum ScanOutcome: Equatable, Sendable {
    /// An offence by this client.
    case offence(AddressKey)
    /// Not an offence line (wrong shape, or no pattern matched).
    case notMatching
    /// Longer than the scanner's limit.
    case tooLong
    /// The line has the shape of an offence, but its address is not one.
    case invalidAddress
    /// A failregex hit its match limit (a line built to make the regex work hard).
    case matchLimit
}

/// Hand-written scanner of the built-in offence line
/// `YYYY-MM-DD HH:MM:SS client <IP> exceeded request rate limit`: no allocation, no regex.
/// A trailing carriage return is tolerated.
public struct LineScanner: Sendable {
    /// Longest line considered; longer ones are `tooLong`.
    public let maxLineLength: Int

    public init(maxLineLength: Int = 512) {
        self.maxLineLength = maxLineLength
    }

    @usableFromInline static let client: [UInt8] = Array(" client ".utf8)
    @usableFromInline static let suffix: [UInt8] = Array(" exceeded request rate limit".utf8)
    /// Offset of " client " after the 19-byte time stamp.
    @usableFromInline static let clientOffset = 19
    @usableFromInline static let addressOffset = 27

    /// Scans one line.
    @inlinable
    public func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
        var count = line.count
        if count > maxLineLength { return .tooLong }
        guard let base = line.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return .notMatching }
        if count > 0 && base[count - 1] == 13 { count -= 1 }  // "\r"
        let minimum = Self.addressOffset + 1 + Self.suffix.count
        guard count >= minimum, Self.timestampIsValid(base) else { return .notMatching }
        for index in 0..<8 where base[Self.clientOffset + index] != Self.client[index] { return .notMatching }
        let suffixStart = count - Self.suffix.count
        for index in 0..<Self.suffix.count where base[suffixStart + index] != Self.suffix[index] { return .notMatching }
        var key = AddressKey(high: 0, low: 0)
        let addressLength = suffixStart - Self.addressOffset
        guard AddressParser.parse(base + Self.addressOffset, count: addressLength, into: &key) else {
            return .invalidAddress
        }
        return .offence(key)
    }

    /// `YYYY-MM-DD HH:MM:SS` with month 01-12, day 01-31, hour 00-23, minute 00-59, second 00-60.
    @inlinable
    static func timestampIsValid(_ text: UnsafePointer<UInt8>) -> Bool {
        @inline(__always) func digit(_ index: Int) -> Int {
            let value = Int(text[index]) - 48
            return value >= 0 && value <= 9 ? value : -100
        }
        @inline(__always) func number(_ index: Int) -> Int { digit(index) * 10 + digit(index + 1) }
        guard digit(0) >= 0, digit(1) >= 0, digit(2) >= 0, digit(3) >= 0,
              text[4] == 45, text[7] == 45, text[10] == 32, text[13] == 58, text[16] == 58 else { return false }
        let month = number(5), day = number(8), hour = number(11), minute = number(14), second = number(17)
        return (1...12).contains(month) && (1...31).contains(day) && (0...23).contains(hour)
            && (0...59).contains(minute) && (0...60).contains(second)
    }
}
