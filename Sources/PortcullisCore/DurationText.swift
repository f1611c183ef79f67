/// Durations written as fail2ban writes them (`MyTime.str2seconds` in `server/mytime.py`):
/// numbers with optional units, summed: `600`, `10m`, `1h 30m`, `1h+30m`, `1d12h`, `1year-6mo`,
/// `-1`. Units, any case: s/ss/sec/second(s), m/mm/min/minute(s), h/hh/hou/hour(s),
/// d/dd/da/day(s), w/ww/wee/week(s), mo/mon/month(s) (a twelfth of 365.25 days), y/yy/yea/year(s)
/// (365.25 days). fail2ban evaluates the text as a Python expression; only sums and differences of
/// such terms are read here (anything else is refused, never guessed).
public enum DurationText {
    /// Seconds in each unit.
    static let units: [(names: [String], seconds: Double)] = [
        (["s", "ss", "sec", "second", "seconds"], 1),
        (["m", "mm", "min", "minute", "minutes"], 60),
        (["h", "hh", "hou", "hour", "hours"], 3_600),
        (["d", "dd", "da", "day", "days"], 86_400),
        (["w", "ww", "wee", "week", "weeks"], 604_800),
        (["mo", "mon", "month", "months"], 365.25 * 86_400 / 12),
        (["y", "yy", "yea", "year", "years"], 365.25 * 86_400),
    ]

    /// The seconds `text` stands for (rounded down, as fail2ban's `int()` of the sum), or nil when
    /// it is not such a duration.
    public static func seconds(_ text: String) -> Int64? {
        var total = 0.0
        var sign = 1.0
        var terms = 0
        var rest = Substring(text.lowercased())
        while true {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let first = rest.first else { break }
            if first == "+" || first == "-" {
                sign = first == "-" ? -sign : sign
                rest = rest.dropFirst()
                continue
            }
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count).drop { $0 == " " }
            let unit = rest.prefix { $0.isASCII && $0.isLetter }
            var factor = 1.0
            if !unit.isEmpty {
                guard let match = units.first(where: { $0.names.contains(String(unit)) }) else { return nil }
                factor = match.seconds
                rest = rest.dropFirst(unit.count)
            }
            total += sign * value * factor
            sign = 1
            terms += 1
        }
        guard terms > 0, abs(total) < 1e15 else { return nil }
        return Int64(total.rounded(.towardZero))
    }
}
