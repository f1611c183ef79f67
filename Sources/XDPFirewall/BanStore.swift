// SPDX-License-Identifier: Apache-2.0
import PortcullisCore

/// What the daemon keeps its bans in: the XDP maps (`BanMaps`), or in tests a store in memory that
/// honours the same contract (Tests/TestSupport/InMemoryBanStore.swift, held to it by
/// Tests/XDPFirewallTests/BanStoreContractTests.swift). Times are `CLOCK_BOOTTIME` nanoseconds,
/// always given by the caller: a store keeps no clock.
///
/// The contract, beyond each call's own comment:
/// - `banKeepingLonger` never shortens a ban: an address banned until later, or for good, keeps it.
/// - A ban carries its origin (a slot of `originSlots`, 0 for the operator) as it was written.
/// - `liftIfEnded` deletes only a ban that has ended at the `now` given; one in force stays.
/// - A network of a single address is that address's exact ban.
public protocol BanStore: AnyObject, Sendable {
    /// Installs `requests` (one call per batch), never shortening a ban already there.
    func banKeepingLonger(batch requests: [BanRequest]) -> BanMaps.MergeOutcome
    /// Deletes `address`'s ban if it has ended at `now`; one in force (written since) is left.
    func liftIfEnded(_ address: IPAddress, now: UInt64) throws(FirewallError) -> BanMaps.LiftOutcome
    /// `address`'s ban (nil: none).
    func lookup(_ address: IPAddress) throws(FirewallError) -> BanEntry?
    /// Bans `address` until `expiry`, replacing a ban it had (its drop count kept).
    func ban(_ address: IPAddress, _ expiry: BanExpiry, origin: UInt32) throws(FirewallError)
    /// Lifts `address`'s ban. - Returns: whether it had one.
    func unban(_ address: IPAddress) throws(FirewallError) -> Bool
    /// Every exact ban.
    func entries() throws(FirewallError) -> [BanEntry]
    /// Up to about `limit` exact bans from where `walk` stands; the steps of a walk together return
    /// every ban, and `walk` is back at its start (not started, IPv4) when the walk is done.
    func entries(walking walk: inout BanMaps.Walk, limit: Int) throws(FirewallError) -> [BanEntry]
    /// Bans `network` until `expiry`, replacing a ban of that exact network (its drop count kept).
    func ban(network: IPNetwork, _ expiry: BanExpiry, origin: UInt32) throws(FirewallError)
    /// The ban of `network` (nil: none): of exactly that network in an exact map or a prefix hash;
    /// for a CIDR ban, the longest one covering it, as the trie answers.
    func lookup(network: IPNetwork) throws(FirewallError) -> NetworkBanEntry?
    /// Lifts the ban of exactly `network`. - Returns: whether it had one.
    func unban(network: IPNetwork) throws(FirewallError) -> Bool
    /// Every ban of a network (not the exact bans).
    func networkBans() throws(FirewallError) -> [NetworkBanEntry]
    /// Deletes the ban of `network` if it has ended at `now`; one in force is left.
    func liftIfEnded(network: IPNetwork, now: UInt64) throws(FirewallError) -> NetworkLiftOutcome
    /// The fixed prefix lengths of `family`, longest first.
    func prefixLengths(_ family: IPAddress.Family) throws(FirewallError) -> [Int]
    /// Makes the allowlist exactly `networks`. - Returns: entries now in it.
    @discardableResult
    func replaceAllowlist(_ networks: [IPNetwork]) throws(FirewallError) -> Int
    /// The origin slot of each of `names`, given a free slot (from 1) when new; the same name keeps
    /// its slot.
    func originSlots(for names: [String]) throws(FirewallError) -> [String: UInt32]
}

extension BanMaps: BanStore {}
