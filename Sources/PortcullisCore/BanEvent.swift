// SPDX-License-Identifier: Apache-2.0
/// What the daemon did to a set of addresses: banned them (a jail's crossing) or lifted their bans.
public struct BanEvent: Sendable {
    public enum Kind: String, Sendable {
        case ban
        case unban
    }

    /// Who made the change: a jail's filter (a crossing), an operator (the control socket), the
    /// daemon's expiry (a ban that ended).
    public enum Origin: String, Sendable {
        case filter
        case `operator`
        case expiry
        /// Members lifted because the prefix around them was banned (`aggregate-v4`/`-v6`).
        case aggregate
    }

    public let kind: Kind
    public let origin: Origin
    public let addresses: [IPAddress]
    /// `CLOCK_MONOTONIC` nanoseconds when the maps were written.
    public let monotonicNanoseconds: UInt64
    /// The jail that banned them (bans only).
    public let jail: String?
    /// Bans only: how long each address is banned, in seconds (0: for good), in `addresses` order.
    public let seconds: [UInt64]
    /// A filter's bans: `CLOCK_MONOTONIC` nanoseconds when the worker received the lines that
    /// made the last crossing (the line-to-ban latency ends at `monotonicNanoseconds`).
    public let readNanoseconds: UInt64?
    /// Per address, the prefix length when the ban is of a network (`2001:2:0:a::` with 64 is
    /// `2001:2:0:a::/64`); empty: every one is an address.
    public let prefixLengths: [Int]
    /// A filter's bans: per address, its escalation level (how many bans the jail's history
    /// counted before); empty: all 0.
    public let levels: [UInt32]
    /// Unbans: per address, the jail whose ban was lifted (`manual` for an operator's, nil when no
    /// jail of this daemon made it); empty: not known. The journal's `[sshd] Unban` line names it.
    public let liftedJails: [String?]

    /// `addresses[index]` as written: a network with its length, else the address.
    public func text(_ index: Int) -> String {
        guard index < prefixLengths.count else { return addresses[index].description }
        return IPNetwork(containing: addresses[index], length: prefixLengths[index]).description
    }

    public init(
        kind: Kind, origin: Origin, addresses: [IPAddress], monotonicNanoseconds: UInt64, jail: String? = nil,
        seconds: [UInt64] = [], readNanoseconds: UInt64? = nil, prefixLengths: [Int] = [], levels: [UInt32] = [],
        liftedJails: [String?] = []
    ) {
        self.liftedJails = liftedJails
        self.levels = levels
        self.prefixLengths = prefixLengths
        self.kind = kind
        self.origin = origin
        self.readNanoseconds = readNanoseconds
        self.addresses = addresses
        self.monotonicNanoseconds = monotonicNanoseconds
        self.jail = jail
        self.seconds = seconds
    }
}

/// A sink of ban events: the ban log today; metrics, CrowdSec alerts and a fleet bucket are each
/// one more conforming type handed to `Daemon.init`. `publish` runs on the thread that changed the
/// maps (a ban worker or the expiry thread), after the change and outside every lock: it must be
/// quick and must not block (queue the work of a slow sink to a thread of its own).
public protocol BanPublisher: AnyObject, Sendable {
    func publish(_ event: BanEvent)
    /// Returns once what was published before is out (a sink that writes on a thread of its
    /// own); `Daemon.stop` calls it after its threads have ended.
    func flush()
}

extension BanPublisher {
    public func flush() {}
}
