// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import XDPFirewall

/// The daemon's own exact bans, beside the maps (which hold the truth): the ends it waits for
/// (`schedule`, with the addresses it forgot) and the bans it watches with no end to wait for (its
/// bans for good, also resumed ones, and crossings kept on someone else's longer ban). An
/// operator's unban of one must still reset its count (`Enforcement.forgetGone`).
///
/// Changed only under `Enforcement`'s lock, in step with the maps; the expiry thread takes the due
/// ends from `schedule` (which has a lock of its own) without it.
final class OwnBans {
    /// When each of the daemon's timed bans ends.
    let schedule = ExpirySchedule()
    /// Clients whose count stands at the threshold on a ban with no end the daemon waits for.
    private var watched = Set<IPAddress>()

    /// Bans of `lengthSeconds` made at `made`: their ends waited for.
    func banned(_ bans: [(address: IPAddress, end: UInt64)], lengthSeconds: UInt64, made: UInt64) {
        schedule.add(bans, lengthSeconds: lengthSeconds, made: made)
    }

    /// Bans with no end the daemon waits for: for good, or kept on someone else's longer ban.
    func watch<Addresses: Sequence<IPAddress>>(_ addresses: Addresses) {
        watched.formUnion(addresses)
    }

    /// `address`'s ban is now `expiry`, made at `now` (an operator's through the daemon, one found
    /// at start): an end it had before is no longer its ban's (a shorter one would otherwise be
    /// lifted, and a later one come due after this one was lifted).
    func replace(_ address: IPAddress, with expiry: BanExpiry, now: UInt64) {
        schedule.forget(address, now: now)
        switch expiry {
        case .at(let end):
            watched.remove(address)
            schedule.add(address, end: end, made: now)
        case .permanent:
            watched.insert(address)
        }
    }

    /// A ban found in the maps at start (a restart): its end waited for, or, for good, watched.
    func resume(_ address: IPAddress, expiry: BanExpiry, now: UInt64) {
        switch expiry {
        case .at(let end): schedule.add(address, end: end, made: now)
        case .permanent: watched.insert(address)
        }
    }

    /// `address`'s ban is gone (unbanned, covered by an aggregate): its ends made before `now` are
    /// skipped when due, and it is no longer watched.
    func forget(_ address: IPAddress, now: UInt64) {
        schedule.forget(address, now: now)
        watched.remove(address)
    }

    /// The ends waited for (with when each ban was made) and the bans watched (no end).
    var all: [ExpirySchedule.Waited] {
        schedule.waited + watched.map { ExpirySchedule.Waited(address: $0, made: 0, end: nil) }
    }

    /// Whether `ban` (of `all`, taken a while ago) is still the daemon's at `now`: an end not yet
    /// come and not forgotten, or still watched.
    func owns(_ ban: ExpirySchedule.Waited, now: UInt64) -> Bool {
        if let end = ban.end { return end > now && !schedule.isForgotten(ban.address, madeAt: ban.made) }
        return watched.contains(ban.address)
    }
}
