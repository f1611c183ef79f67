// SPDX-License-Identifier: Apache-2.0
/// Why a line did or did not yield an offence.
public enum ScanOutcome: Equatable, Sendable {
    /// An offence by this client.
    case offence(IPAddress)
    /// Not an offence line (wrong shape, or no pattern matched).
    case notMatching
    /// Longer than the scanner's limit.
    case tooLong
    /// The line has the shape of an offence, but its address is not one.
    case invalidAddress
    /// A failregex hit its match limit (a line built to make the regex work hard).
    case matchLimit
    /// A failregex matched, and so did an ignoreregex (fail2ban's filters): not counted.
    case ignored
}

/// The built-in offence line, `YYYY-MM-DD HH:MM:SS client <IP> exceeded request rate limit` (UTC):
/// what a service writes (`write`) and what `LineScanner` reads, spelled once.
public enum OffenceLine {
    /// " client ", after the 19-byte time stamp.
    public static let client: StaticString = " client "
    /// What follows the address.
    public static let suffix: StaticString = " exceeded request rate limit"
    /// Length of `YYYY-MM-DD HH:MM:SS`.
    public static let stampLength = 19
    /// The longest line `write` makes.
    public static let maximumLength = stampLength + 8 + IPAddress.maximumTextLength + 28  // client, address, suffix

    /// Writes the line of `address` at `time` at `destination` (room for `maximumLength` bytes),
    /// without allocating. - Returns: its length.
    public static func write(time: UTCTime, address: IPAddress, into destination: UnsafeMutableRawPointer) -> Int {
        var length = time.writeStamp(separator: UInt8(ascii: " "), into: destination)
        length += copy(client, to: destination + length)
        length += address.write(into: destination + length)
        return length + copy(suffix, to: destination + length)
    }

    /// The line as text (tests, benchmarks, examples).
    public static func text(time: UTCTime, address: IPAddress) -> String {
        String(unsafeUninitializedCapacity: maximumLength) { buffer in
            write(time: time, address: address, into: UnsafeMutableRawPointer(buffer.baseAddress!))
        }
    }

    private static func copy(_ text: StaticString, to destination: UnsafeMutableRawPointer) -> Int {
        destination.copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
        return text.utf8CodeUnitCount
    }
}

/// Hand-written scanner of `OffenceLine`: no allocation, no regex. A trailing carriage return is
/// tolerated.
public struct LineScanner: Sendable {
    /// Longest line considered; longer ones are `tooLong`.
    public let maxLineLength: Int

    public init(maxLineLength: Int = 512) {
        self.maxLineLength = maxLineLength
    }

    /// " client " as one little-endian 64-bit word.
    @usableFromInline static let clientWord: UInt64 = 0x2074_6E65_696C_6320
    /// " exceeded request rate limit": 28 bytes, compared as three words and a half.
    @usableFromInline static let suffixLength = OffenceLine.suffix.utf8CodeUnitCount
    /// Offset of " client " after the 19-byte time stamp.
    @usableFromInline static let clientOffset = OffenceLine.stampLength
    @usableFromInline static let addressOffset = clientOffset + OffenceLine.client.utf8CodeUnitCount

    /// Scans one line. The literals are compared as machine words (no array access per byte).
    @inlinable
    public func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
        var count = line.count
        if count > maxLineLength { return .tooLong }
        guard let raw = line.baseAddress else { return .notMatching }
        let base = raw.assumingMemoryBound(to: UInt8.self)
        if count > 0 && base[count - 1] == 13 { count -= 1 }  // "\r"
        let minimum = Self.addressOffset + 1 + Self.suffixLength
        guard count >= minimum, Self.timestampIsValid(base) else { return .notMatching }
        guard raw.loadUnaligned(fromByteOffset: Self.clientOffset, as: UInt64.self) == Self.clientWord else {
            return .notMatching
        }
        let suffixStart = count - Self.suffixLength
        let suffix = Self.suffix
        guard raw.loadUnaligned(fromByteOffset: suffixStart, as: UInt64.self) == suffix.0,
            raw.loadUnaligned(fromByteOffset: suffixStart + 8, as: UInt64.self) == suffix.1,
            raw.loadUnaligned(fromByteOffset: suffixStart + 16, as: UInt64.self) == suffix.2,
            raw.loadUnaligned(fromByteOffset: suffixStart + 24, as: UInt32.self) == suffix.3
        else {
            return .notMatching
        }
        var key = IPAddress(high: 0, low: 0)
        guard IPAddress.parse(base + Self.addressOffset, count: suffixStart - Self.addressOffset, into: &key) else {
            return .invalidAddress
        }
        return .offence(key)
    }

    /// " exceeded request rate limit" as little-endian words: bytes 0-7, 8-15, 16-23, 24-27
    /// (checked against the text by the scanner tests).
    @usableFromInline static let suffix: (UInt64, UInt64, UInt64, UInt32) = (
        0x6564_6565_6378_6520, 0x7365_7571_6572_2064, 0x6C20_6574_6172_2074, 0x7469_6D69
    )

    /// `YYYY-MM-DD HH:MM:SS` with month 01-12, day 01-31, hour 00-23, minute 00-59, second 00-60.
    @inlinable
    static func timestampIsValid(_ text: UnsafePointer<UInt8>) -> Bool {
        @inline(__always) func digit(_ index: Int) -> Int {
            let value = Int(text[index]) - 48
            return value >= 0 && value <= 9 ? value : -100
        }
        @inline(__always) func number(_ index: Int) -> Int { digit(index) * 10 + digit(index + 1) }
        guard digit(0) >= 0, digit(1) >= 0, digit(2) >= 0, digit(3) >= 0,
            text[4] == 45, text[7] == 45, text[10] == 32, text[13] == 58, text[16] == 58
        else { return false }
        let month = number(5), day = number(8), hour = number(11), minute = number(14), second = number(17)
        return (1...12).contains(month) && (1...31).contains(day) && (0...23).contains(hour)
            && (0...59).contains(minute) && (0...60).contains(second)
    }
}
