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
}

/// A sink of ban events: the ban log today; metrics, CrowdSec alerts and a fleet bucket are each
/// one more conforming type handed to `Daemon.init`. `publish` runs on the thread that changed the
/// maps (a ban worker or the expiry thread), after the change and outside every lock: it must be
/// quick and must not block (queue the work of a slow sink to a thread of its own).
public protocol BanPublisher: AnyObject, Sendable {
    func publish(_ event: BanEvent)
}
