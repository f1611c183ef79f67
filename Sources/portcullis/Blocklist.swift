// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// `portcullis blocklist load|list|unload`: named lists of addresses and networks, each installed
/// as a whole (BanMaps.replaceList: built aside, swapped in with one map update).
struct Blocklist: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load, list and unload named blocklists (Spamhaus DROP, FireHOL .netset, one network a line).",
        subcommands: [Load.self, Show.self, Unload.self])

    /// A list's origin name in the maps (`portcullis list` shows it); for `unload`, also a fleet
    /// host's (`fleet/HOST`) or a CrowdSec origin's (`crowdsec/cscli`), lifted here only.
    static func originName(_ name: String, orSource: Bool = false) throws -> String {
        if orSource, name.hasPrefix("fleet/") || name.hasPrefix("crowdsec/"), name.utf8.count <= 47 { return name }
        guard let origin = BanMaps.listOrigin(name) else {
            throw UsageError("list name '\(name)': 1 to 40 letters, digits, '-', '_' or '.'")
        }
        return origin
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Install FILE as the list NAME, replacing what NAME held, in one swap.",
            discussion: "Every line is checked first: a line that is not an address or network (a host part set, "
                + "a bad length) is reported with its number and nothing changes; the list in force stays. The "
                + "list outlives the daemon (it is in the pinned maps) until it is unloaded.")

        @Argument(help: "The list's name (letters, digits, - _ .).")
        var name: String

        @Argument(help: "The list file (- reads stdin).")
        var file: String

        @OptionGroup var pins: PinOptions
        @OptionGroup var floors: FloorOptions

        func run() throws {
            try reportingErrors {
                _ = try Blocklist.originName(name)
                let text: String
                do throws(Errno) {
                    text =
                        file == "-"
                        ? try TextFile.read(descriptor: STDIN_FILENO, limit: 256 << 20)
                        : try TextFile.read(file, limit: 256 << 20)
                } catch {
                    throw UsageError("cannot read \(file): \(error); give a readable list file (at most 256 MiB)")
                }
                let (networks, problems, overflow) = BlocklistFile.parse(text, capacity: BanMaps.listCapacity)
                if let overflow {
                    throw UsageError("\(file): \(overflow); the list \(name) in force is unchanged")
                }
                if !problems.isEmpty {
                    for problem in problems.prefix(20) { printError("\(file): \(problem)") }
                    if problems.count > 20 { printError("\(file): \(problems.count - 20) more bad lines") }
                    throw UsageError("\(file): \(problems.count) bad line(s); the list \(name) in force is unchanged")
                }
                if networks.isEmpty {
                    throw UsageError("\(file) holds no address or network; unload a list with unload")
                }
                let maps = try BanMaps.open(pinnedIn: pins.directory)
                // Nothing that drops the Internet, this host, its gateways or what must never drop.
                let (taken, refused) = try floors.policy(maps).filter(networks)
                let start = SystemClock.monotonicNanoseconds()
                let swap = try maps.loadList(name, taken)
                let seconds = Double(SystemClock.monotonicNanoseconds() - start) / 1e9
                print(
                    "loaded \(name): \(swap.ipv4) IPv4 and \(swap.ipv6) IPv6 entries in "
                        + seconds.fixed(3) + " s"
                        + (refused.isEmpty ? "" : ", " + ListPolicy.describe(refused)))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "The loaded lists: entries per family and packets dropped.")

        @OptionGroup var pins: PinOptions

        func run() throws {
            try reportingErrors {
                let maps = try BanMaps.open(pinnedIn: pins.directory)
                let names = try maps.originNames()
                var lists: [String: (v4: Int, v6: Int, dropped: UInt64)] = [:]
                for entry in try maps.listEntries() {
                    // A list's origin is `list:NAME`; a CrowdSec decision's, `crowdsec/ORIGIN`, and a fleet host's,
                    // `fleet/HOST`, shown as such.
                    let origin = names[entry.origin] ?? "list:?"
                    let name = origin.hasPrefix("list:") ? String(origin.dropFirst("list:".count)) : origin
                    var list = lists[name] ?? (0, 0, 0)
                    if entry.network.family == .ipv4 { list.v4 += 1 } else { list.v6 += 1 }
                    list.dropped += entry.dropped
                    lists[name] = list
                }
                guard !lists.isEmpty else {
                    print("no blocklists under \(pins.directory)")
                    return
                }
                for (name, list) in lists.sorted(by: { $0.key < $1.key }) {
                    print("\(name): \(list.v4) IPv4, \(list.v6) IPv6 entries, \(list.dropped) packets dropped")
                }
            }
        }
    }

    struct Unload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove the list NAME, in one swap.",
            discussion: "NAME may also be fleet/HOST (a fleet host's bans) or crowdsec/ORIGIN (CrowdSec's decisions of "
                + "that origin), as portcullis blocklist list shows them: lifted here until that source puts them "
                + "again (portcullis fleet ignore HOST keeps a host's out).")

        @Argument(help: "The list's name.")
        var name: String

        @OptionGroup var pins: PinOptions

        func run() throws {
            try reportingErrors {
                let origin = try Blocklist.originName(name, orSource: true)
                let maps = try BanMaps.open(pinnedIn: pins.directory)
                // A list's slot is freed with it; a source's (fleet/, crowdsec/) stays that source's.
                if origin.hasPrefix("list:") {
                    guard try maps.unloadList(name) != nil else {
                        throw UsageError("no list named \(name) is loaded (portcullis blocklist list)")
                    }
                    print("unloaded \(name)")
                    return
                }
                guard let slot = try maps.originNames().first(where: { $0.value == origin })?.key,
                    try maps.listEntries().contains(where: { $0.origin == slot })
                else {
                    throw UsageError("no list named \(name) is loaded (portcullis blocklist list)")
                }
                try maps.replaceList(origin: slot, with: [])
                print(
                    "unloaded \(name)" + (origin == name ? " here (it comes back when that source puts it again)" : ""))
            }
        }
    }
}
