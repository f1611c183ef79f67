// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// The arguments split into addresses (a network of one address counts as its address) and
/// networks. - Throws: a network that is not one, in one line.
func splitNetworks(_ texts: [String]) throws -> (addresses: [String], networks: [IPNetwork]) {
    var addresses: [String] = []
    var networks: [IPNetwork] = []
    for text in texts {
        guard text.contains("/") else {
            addresses.append(text)
            continue
        }
        let network: IPNetwork
        do {
            network = try IPNetwork(parsing: text)
        } catch {
            throw UsageError(error.description)
        }
        if network.isSingleAddress { addresses.append(network.address.description) } else { networks.append(network) }
    }
    return (addresses, networks)
}

/// The end of a ban of `seconds` (nil: permanent). - Throws: for 0 or an end past 64-bit nanoseconds.
func banExpiry(_ seconds: UInt64?) throws -> BanExpiry {
    guard let seconds else { return .permanent }
    if seconds == 0 { throw UsageError("--for must be at least 1 second; omit it for a permanent ban") }
    guard let end = BanExpiry.after(seconds: seconds) else {
        throw UsageError("--for \(seconds) is too long: the ban's end does not fit in 64-bit nanoseconds")
    }
    return end
}

/// The addresses of a command line: the arguments, where `-` stands for the lines of stdin.
func addressArguments(_ arguments: [String]) -> [String] {
    arguments.flatMap { argument -> [String] in
        guard argument == "-" else { return [argument] }
        var lines: [String] = []
        while let line = readLine() {
            // Spaces, tabs and no-break spaces off both ends (what Foundation's `.whitespaces` trims).
            let text = String(line.drop { $0.isBlank }.reversed().drop { $0.isBlank }.reversed())
            if !text.isEmpty && !text.hasPrefix("#") { lines.append(text) }
        }
        return lines
    }
}

struct Ban: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ban IPv4 or IPv6 addresses or networks: their packets are dropped in the driver.",
        discussion: "Addresses and networks (198.18.1.0/24, 2001:2:0:a::/64) go through the running daemon (its "
            + "control socket) when one answers, so that its counts, ban log and escalation see the ban; else "
            + "into the maps directly (said on stderr). A network of a fixed prefix length (IPv4 /24, IPv6 /64, "
            + "/56, /48 unless the maps were made with others) goes into its prefix hash, any other into the "
            + "CIDR trie; a network written with host bits set is refused. `-` reads them from stdin, one per "
            + "line. An IPv4-mapped IPv6 address (::ffff:a.b.c.d) bans the IPv4 address. Banning a banned "
            + "address or network sets its new expiry and keeps its drop count. Refused: loopback, link-local, "
            + "multicast, 0.0.0.0/8, 240.0.0.0/4 and the driver's allowlist (this host's addresses and "
            + "gateways among them).")

    @Argument(help: "The addresses or networks to ban (- reads them from stdin).")
    var addresses: [String]

    @Option(
        name: .customLong("for"),
        help: ArgumentHelp(
            "Ban for this many seconds; without it the ban is permanent.", valueName: "seconds"))
    var seconds: UInt64?

    @Option(help: "Ban in the name of this jail of the daemon (its ban log line and escalation); default: manual.")
    var jail: String?

    @Flag(
        help:
            "Ban networks shorter than the floor (IPv4 /8, IPv6 /16, or the daemon's --min-prefix-v4/-v6) all the same."
    )
    var force = false

    @OptionGroup var pins: PinOptions
    @OptionGroup var control: ControlOptions

    func run() throws {
        try reportingErrors {
            let allTexts = addressArguments(addresses)
            if allTexts.isEmpty { throw UsageError("give at least one address") }
            if seconds == 0 { throw UsageError("--for must be at least 1 second; omit it for a permanent ban") }
            // Checked here first: a bad address or network is one line whether or not a daemon answers.
            let (plain, networks) = try splitNetworks(allTexts)
            let parsed = try plain.map { try parseAddress($0) }
            let texts = plain + networks.map(\.description)
            let what = { (count: Int) in
                count == 1 && texts.count == 1
                    ? texts[0] : "\(count) address(es)" + (networks.isEmpty ? "" : " and network(s)")
            }
            let how = seconds.map { " for \($0) s" } ?? " permanently"
            // What never drops, refused whether or not a daemon answers (it refuses them too).
            let never =
                parsed.filter(\.isNeverBannable).map(\.description)
                + networks.filter { ListPolicy(shortestIPv4: 0, shortestIPv6: 0).verdict($0) == .neverBannable }
                .map(\.description)
            if !never.isEmpty {
                for text in never { printError("\(text): never banned (loopback, link-local, multicast, reserved)") }
                throw UsageError("nothing banned: take the never-bannable addresses out")
            }
            if let reply = try control.ask(
                ControlRequest(
                    command: "ban", jail: jail, addresses: texts, seconds: seconds, force: force ? true : nil),
                timeoutMilliseconds: 60_000, fallingBack: jail == nil)
            {
                for refusal in reply.refused ?? [] { printError(refusal) }
                print("banned " + what(reply.banned ?? 0) + how)
                if !(reply.refused ?? []).isEmpty { throw ExitCode.failure }
                return
            }
            if jail != nil {
                throw UsageError("--jail needs the daemon, and no portcullisd answers at \(control.control)")
            }
            let expiry = try banExpiry(seconds)
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            // Without a daemon, the checks it would make: this host, its gateways, the allowlist, the floor.
            let policy = FloorOptions.policy(maps)
            var refusals: [String] = []
            for address in parsed
            where policy.verdict(IPNetwork(containing: address, length: IPNetwork.fullLength(address.family))) != nil {
                refusals.append("\(address): never banned (this host, its gateways, the driver's allowlist)")
            }
            for network in networks {
                switch policy.verdict(network) {
                case nil: break
                case .tooWide where force: break
                case .tooWide:
                    refusals.append(
                        "\(network): shorter than /\(network.family == .ipv4 ? policy.shortestIPv4 : policy.shortestIPv6): "
                            + "give --force to ban it all the same")
                case .some(let refusal): refusals.append("\(network): never banned: \(refusal)")
                }
            }
            if !refusals.isEmpty {
                for refusal in refusals { printError(refusal) }
                throw UsageError("nothing banned")
            }
            for address in parsed { try maps.ban(address, expiry) }
            for network in networks { try maps.ban(network: network, expiry) }
            control.sayFallback()
            print("banned " + what(texts.count) + how)
        }
    }
}

struct Unban: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Lift the bans of addresses or networks (through the running daemon when one answers, else in the "
            + "maps); - reads stdin.")

    @Argument(help: "The addresses or networks to unban (- reads them from stdin).")
    var addresses: [String]

    @OptionGroup var pins: PinOptions
    @OptionGroup var control: ControlOptions

    func run() throws {
        try reportingErrors {
            let allTexts = addressArguments(addresses)
            if allTexts.isEmpty { throw UsageError("give at least one address") }
            let (plain, networks) = try splitNetworks(allTexts)
            _ = try plain.map { try parseAddress($0) }
            let texts = plain + networks.map(\.description)
            var lifted = 0
            if let reply = try control.ask(
                ControlRequest(command: "unban", addresses: texts), timeoutMilliseconds: 60_000, fallingBack: true)
            {
                for refusal in reply.refused ?? [] { printError(refusal) }
                for note in reply.notes ?? [] { printError("note: " + note) }
                lifted = reply.unbanned ?? 0
            } else {
                let maps = try BanMaps.open(pinnedIn: pins.directory)
                for text in plain where try maps.unban(try parseAddress(text)) { lifted += 1 }
                for network in networks {
                    if try maps.unban(network: network) {
                        lifted += 1
                    } else {
                        printError("\(network) is not banned (a network is lifted as it was banned)")
                    }
                }
                control.sayFallback()
            }
            if texts.count == 1 {
                guard lifted == 1 else {
                    printError("\(texts[0]) is not banned")
                    throw ExitCode.failure
                }
                print("unbanned \(texts[0])")
            } else {
                print(
                    "unbanned \(lifted) of \(texts.count) address(es)" + (networks.isEmpty ? "" : " and network(s)"))
                if lifted < texts.count { throw ExitCode.failure }
            }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the bans with their remaining time and the packets each has dropped.",
        discussion: "Expired bans that no daemon has removed yet are listed as expired; they no longer drop.")

    @Flag(
        help:
            ArgumentHelp(
                "Print a JSON array of {address (or network), expires_in (seconds, null when permanent), expired, "
                    + "dropped, jail (the jail, manual, or list:NAME)}."))
    var json = false

    @OptionGroup var pins: PinOptions

    @OptionGroup var control: ControlOptions

    func run() throws {
        try reportingErrors {
            // Through the daemon when it answers (what its maps hold, named as it names them);
            // JSON is streamed as the maps are read, by the daemon or here.
            let request = ControlRequest(command: "list", format: json ? "json" : nil)
            let answer = try control.ask(request, output: json ? STDOUT_FILENO : nil, fallingBack: true)
            if answer?.stream == true { return }
            if answer == nil && json {
                try BanMaps.open(pinnedIn: pins.directory).writeJSONListing(to: STDOUT_FILENO)
                return
            }
            // The bans in the reply (a table, or a daemon that does not stream).
            if let reply = answer {
                try show(reply.bans ?? [])
                return
            }
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            try show(try maps.listing())
        }
    }

    private func show(_ rows: [BanRow]) throws {
        do {
            if json {
                print(JSONOutput.line(rows))
                return
            }
            guard !rows.isEmpty else {
                print("no bans under \(pins.directory)")
                return
            }
            let width = max(7, rows.map(\.address.count).max() ?? 0)
            print(
                "ADDRESS".padded(to: width) + "  "
                    + "EXPIRES IN".padded(to: 12)
                    + "DROPPED".padded(to: 12) + "JAIL")
            for row in rows {
                let expires = row.expiresIn.map { row.expired ? "expired" : "\($0) s" } ?? "never"
                print(
                    row.address.padded(to: width) + "  "
                        + expires.padded(to: 12)
                        + String(row.dropped).padded(to: 12) + row.jail)
            }
        }
    }
}

extension Character {
    /// A space or a tab (Unicode's White_Space less the line breaks).
    fileprivate var isBlank: Bool { isWhitespace && !isNewline }
}
