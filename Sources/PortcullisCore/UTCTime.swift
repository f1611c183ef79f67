// SPDX-License-Identifier: Apache-2.0
/// A moment in UTC as calendar fields, from seconds since the Unix epoch, computed without the C
/// library (days to civil dates as in Howard Hinnant's `civil_from_days`).
public struct UTCTime: Equatable, Sendable {
    public let year: Int
    public let month: Int
    public let day: Int
    public let hour: Int
    public let minute: Int
    public let second: Int
    public let millisecond: Int

    /// - Parameters:
    ///   - secondsSinceEpoch: seconds since 1970-01-01T00:00:00Z.
    ///   - millisecond: 0...999.
    public init(secondsSinceEpoch: Int, millisecond: Int = 0) {
        let days = secondsSinceEpoch >= 0 ? secondsSinceEpoch / 86_400 : (secondsSinceEpoch - 86_399) / 86_400
        let secondOfDay = secondsSinceEpoch - days * 86_400
        hour = secondOfDay / 3600
        minute = secondOfDay % 3600 / 60
        second = secondOfDay % 60
        self.millisecond = millisecond
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
    }

    /// Writes `YYYY-MM-DD?HH:MM:SS` at `destination` (19 bytes), `separator` between date and time.
    /// - Returns: 19.
    public func writeStamp(separator: UInt8, into destination: UnsafeMutableRawPointer) -> Int {
        let text = destination.assumingMemoryBound(to: UInt8.self)
        func put(_ value: Int, _ digits: Int, at offset: Int) {
            var rest = value
            for position in stride(from: digits - 1, through: 0, by: -1) {
                text[offset + position] = UInt8(48 + rest % 10)
                rest /= 10
            }
        }
        put(year, 4, at: 0)
        text[4] = UInt8(ascii: "-")
        put(month, 2, at: 5)
        text[7] = UInt8(ascii: "-")
        put(day, 2, at: 8)
        text[10] = separator
        put(hour, 2, at: 11)
        text[13] = UInt8(ascii: ":")
        put(minute, 2, at: 14)
        text[16] = UInt8(ascii: ":")
        put(second, 2, at: 17)
        return 19
    }

    /// ISO 8601 with milliseconds: `2026-11-26T21:05:00.123Z` (the ban log's time stamps).
    public var iso8601: String {
        String(unsafeUninitializedCapacity: 24) { buffer in
            let base = UnsafeMutableRawPointer(buffer.baseAddress!)
            _ = writeStamp(separator: UInt8(ascii: "T"), into: base)
            buffer[19] = UInt8(ascii: ".")
            buffer[20] = UInt8(48 + millisecond / 100)
            buffer[21] = UInt8(48 + millisecond / 10 % 10)
            buffer[22] = UInt8(48 + millisecond % 10)
            buffer[23] = UInt8(ascii: "Z")
            return 24
        }
    }
}
