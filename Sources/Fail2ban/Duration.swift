// SPDX-License-Identifier: Apache-2.0
/// fail2ban's `MyTime.str2seconds`: "600", "10m", "1h 30m", "1d12h", "1year-6mo", "-1".
/// Terms written side by side are added; `+` and `-` between terms as written. Units (any case):
/// s/sec/second(s), m/mm/min/minute(s), h/hh/hou/hour(s), d/dd/da/day(s), w/ww/wee/week(s),
/// mo/mon/month(s) (a twelfth of 365.25 days), y/yy/yea/year(s) (365.25 days).
public enum Fail2banDuration {
    /// Seconds, or nil when `text` is not such an expression.
    public static func seconds(_ text: String) -> Double? {
        let characters = Array(text.lowercased())
        var index = 0
        var total = 0.0
        var terms = 0
        func skipSpaces() { while index < characters.count && characters[index].isWhitespace { index += 1 } }
        skipSpaces()
        while index < characters.count {
            var sign = 1.0
            if characters[index] == "+" || characters[index] == "-" {
                sign = characters[index] == "-" ? -1 : 1
                index += 1
                skipSpaces()
            }
            let numberStart = index
            while index < characters.count && (characters[index].isNumber || characters[index] == ".") { index += 1 }
            guard index > numberStart, let number = Double(String(characters[numberStart..<index])) else { return nil }
            let afterNumber = index
            skipSpaces()
            if index < characters.count && !characters[index].isLetter { index = afterNumber }
            let unitStart = index
            while index < characters.count && characters[index].isLetter { index += 1 }
            guard let unit = unitSeconds(String(characters[unitStart..<index])) else { return nil }
            total += sign * number * unit
            terms += 1
            skipSpaces()
        }
        return terms > 0 ? total : nil
    }

    static func unitSeconds(_ unit: String) -> Double? {
        switch unit {
        case "": return 1
        case "s", "ss", "se", "sec", "second", "seconds": return 1
        case "m", "mm", "mi", "min", "minute", "minutes": return 60
        case "h", "hh", "ho", "hou", "hour", "hours": return 3600
        case "d", "dd", "da", "day", "days": return 86400
        case "w", "ww", "we", "wee", "week", "weeks": return 604_800
        case "mo", "mon", "month", "months": return 2_629_800
        case "y", "yy", "ye", "yea", "year", "years": return 31_557_600
        default: return nil
        }
    }

    /// Whole seconds of `text`, or `Fail2banError.badDuration` naming `file` and `key`.
    public static func wholeSeconds(_ text: String, file: String, key: String) throws(Fail2banError) -> Int {
        guard let value = seconds(text), value.isFinite, abs(value) < 1e15 else {
            throw .badDuration(file: file, key: key, value: text)
        }
        return Int(value.rounded(.towardZero))
    }
}
