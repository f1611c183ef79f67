/// A blocklist file as published: one address or network a line; `#` and `;` start comments (a
/// whole line or the rest of one: Spamhaus DROP writes `1.10.16.0/20 ; SBL256894`, FireHOL's
/// `.netset` files `#` lines); blank lines are skipped.
public enum BlocklistFile {
    /// A line that is not an address or network.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let line: Int
        public let message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// The networks of `text`, in order, duplicates once; and every line that is none.
    public static func parse(_ text: String) -> (networks: [IPNetwork], problems: [Problem]) {
        var networks: [IPNetwork] = []
        var seen = Set<IPNetwork>()
        var problems: [Problem] = []
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = Substring(raw)
            if let comment = line.firstIndex(where: { $0 == "#" || $0 == ";" }) { line = line[..<comment] }
            let entry = line.trimmingWhitespace
            if entry.isEmpty { continue }
            do throws(SettingError) {
                let network = try IPNetwork(parsing: String(entry))
                if seen.insert(network).inserted { networks.append(network) }
            } catch {
                problems.append(Problem(line: number, message: error.description))
            }
        }
        return (networks, problems)
    }
}

extension Substring {
    fileprivate var trimmingWhitespace: Substring {
        var slice = self
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return slice
    }
}
