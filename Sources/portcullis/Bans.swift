import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisSystem
import XDPFirewall

struct Ban: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ban an IPv4 or IPv6 address: its packets are dropped in the driver.",
        discussion: "An IPv4-mapped IPv6 address (::ffff:a.b.c.d) bans the IPv4 address. Banning a banned "
            + "address sets its new expiry and keeps its drop count.")

    @Argument(help: "The address to ban.")
    var address: String

    @Option(
        name: .customLong("for"),
        help: ArgumentHelp(
            "Ban for this many seconds; without it the ban is permanent.", valueName: "seconds"))
    var seconds: UInt64?

    @OptionGroup var pins: PinOptions

    func run() throws {
        try reportingErrors {
            let address = try parseAddress(address)
            var expiry = BanExpiry.permanent
            if let seconds {
                if seconds == 0 { throw UsageError("--for must be at least 1 second; omit it for a permanent ban") }
                guard let end = BanExpiry.after(seconds: seconds) else {
                    throw UsageError("--for \(seconds) is too long: the ban's end does not fit in 64-bit nanoseconds")
                }
                expiry = end
            }
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            try maps.ban(address, expiry)
            print(seconds.map { "banned \(address) for \($0) s" } ?? "banned \(address) permanently")
        }
    }
}

struct Unban: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Lift the ban of an address.")

    @Argument(help: "The address to unban.")
    var address: String

    @OptionGroup var pins: PinOptions

    func run() throws {
        try reportingErrors {
            let address = try parseAddress(address)
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            guard try maps.unban(address) else {
                printError("\(address) is not banned")
                throw ExitCode.failure
            }
            print("unbanned \(address)")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the bans with their remaining time and the packets each has dropped.",
        discussion: "Expired bans that no daemon has removed yet are listed as expired; they no longer drop.")

    @Flag(
        help:
            "Print a JSON array of {address, expires_in (seconds, null when permanent), expired, dropped, jail}.")
    var json = false

    @OptionGroup var pins: PinOptions

    struct Row: Encodable {
        let address: String
        let expiresIn: UInt64?
        let expired: Bool
        let dropped: UInt64
        /// The daemon's jail that made it, or "manual" (an operator's, or of unknown origin).
        let jail: String

        enum CodingKeys: String, CodingKey {
            case address, expiresIn = "expires_in", expired, dropped, jail
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(address, forKey: .address)
            try container.encode(expiresIn, forKey: .expiresIn)  // null, not absent, when permanent
            try container.encode(expired, forKey: .expired)
            try container.encode(dropped, forKey: .dropped)
            try container.encode(jail, forKey: .jail)
        }
    }

    func run() throws {
        try reportingErrors {
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            let now = SystemClock.bootNanoseconds()
            let origins = try maps.originNames()
            let rows = try maps.entries().map { entry -> Row in
                var remaining: UInt64?
                if case .at(let end) = entry.expiry {
                    // Whole seconds, rounded up: a ban with 0.2 s left is not yet over.
                    remaining = end > now ? (end - now + 999_999_999) / 1_000_000_000 : 0
                }
                return Row(
                    address: entry.address.description, expiresIn: remaining,
                    expired: entry.isExpired(now: now), dropped: entry.dropped,
                    jail: origins[entry.origin] ?? "manual")
            }
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
                "ADDRESS".padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                    + "EXPIRES IN".padding(toLength: 12, withPad: " ", startingAt: 0)
                    + "DROPPED".padding(toLength: 12, withPad: " ", startingAt: 0) + "JAIL")
            for row in rows {
                let expires = row.expiresIn.map { row.expired ? "expired" : "\($0) s" } ?? "never"
                print(
                    row.address.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                        + expires.padding(toLength: 12, withPad: " ", startingAt: 0)
                        + String(row.dropped).padding(toLength: 12, withPad: " ", startingAt: 0) + row.jail)
            }
        }
    }
}
