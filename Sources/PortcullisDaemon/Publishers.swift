import PortcullisCore

/// What the daemon did to a set of addresses: banned them (a jail's crossing) or lifted their bans.
public struct BanEvent: Sendable {
    public enum Kind: String, Sendable {
        case ban
        case unban
    }

    public let kind: Kind
    public let addresses: [IPAddress]
    /// `CLOCK_MONOTONIC` nanoseconds when the maps were written.
    public let monotonicNanoseconds: UInt64
    /// The jail that banned them (bans only).
    public let jail: String?
    /// Bans only: how long each address is banned, in seconds (0: for good), in `addresses` order.
    public let seconds: [UInt64]

    public init(
        kind: Kind, addresses: [IPAddress], monotonicNanoseconds: UInt64, jail: String? = nil, seconds: [UInt64] = []
    ) {
        self.kind = kind
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
}
