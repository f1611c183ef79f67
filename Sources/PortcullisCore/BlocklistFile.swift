// SPDX-License-Identifier: Apache-2.0
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
        let parsed = parse(text, capacity: nil)
        return (parsed.networks, parsed.problems)
    }

    /// `parse`, stopping as soon as the list holds more than `capacity` addresses, or networks, of
    /// one family (what the list layer holds of each): `overflow` then says which, and the rest of
    /// the text is not parsed (a list of 10,000,000 lines stops after a million).
    public static func parse(
        _ text: String, capacity: Int?
    ) -> (
        networks: [IPNetwork], problems: [Problem], overflow: String?
    ) {
        var networks: [IPNetwork] = []
        var seen = Set<IPNetwork>()
        var problems: [Problem] = []
        var number = 0
        // IPv4 addresses, IPv4 networks, IPv6 addresses, IPv6 networks.
        var kinds = [0, 0, 0, 0]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            var line = Substring(raw)
            if let comment = line.firstIndex(where: { $0 == "#" || $0 == ";" }) { line = line[..<comment] }
            let entry = line.trimmingWhitespace
            if entry.isEmpty { continue }
            do throws(SettingError) {
                let network = try IPNetwork(parsing: String(entry))
                if seen.insert(network).inserted {
                    networks.append(network)
                    let kind = (network.family == .ipv4 ? 0 : 2) + (network.isSingleAddress ? 0 : 1)
                    kinds[kind] += 1
                    if let capacity, kinds[kind] > capacity {
                        let what = ["IPv4 addresses", "IPv4 networks", "IPv6 addresses", "IPv6 networks"][kind]
                        return (
                            networks, problems,
                            "more than \(capacity) \(what) by line \(number) (a list holds at most \(capacity) of each family's addresses and networks); split it or trim it"
                        )
                    }
                }
            } catch {
                problems.append(Problem(line: number, message: error.description))
            }
        }
        return (networks, problems, nil)
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
