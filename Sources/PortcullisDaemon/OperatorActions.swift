// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import PortcullisSystem
import XDPFirewall

// MARK: Operator actions (the control socket)

extension Daemon {
    /// What an operator's `ban` or `unban` through the daemon did.
    public struct OperatorResult: Sendable {
        /// Addresses banned (or unbanned).
        public var done: [IPAddress] = []
        /// Addresses refused, each with why.
        public var refused: [String] = []
        /// Networks banned (or unbanned).
        public var networks: [IPNetwork] = []
    }

    /// Bans `addresses` for `seconds` (nil: for good) as the operator: in the maps with the origin
    /// of `jail` (nil: `manual`), in the ban log, its end waited for, its clients counted as banned
    /// by every jail (and, for an escalating jail, in its history). Addresses never bannable (this
    /// host's, loopback...) are refused, and so are networks that touch a never-bannable range, lie
    /// in the allowlist or, unless `force`, are shorter than the floor. - Throws: for an unknown
    /// jail or a ban too long.
    public func operatorBan(
        _ texts: [String], seconds: UInt64?, jail name: String?, force: Bool = false
    ) throws(DaemonError)
        -> OperatorResult
    {
        let jail = try name.map { (name) throws(DaemonError) in
            guard let jail = jails.first(where: { $0.name == name }) else {
                throw .invalidSetting("no jail named '\(name)'; the jails are \(jailNames.joined(separator: ", "))")
            }
            return jail
        }
        if let seconds, seconds == 0 || seconds > DaemonConfiguration.maximumBanTime {
            throw .invalidSetting("a ban lasts 1...\(DaemonConfiguration.maximumBanTime) seconds, or for good")
        }
        var result = OperatorResult()
        var addresses: [IPAddress] = []
        let expiry = seconds.map { BanPolicy.expiry(seconds: $0, now: clock.bootNow) } ?? .permanent
        var accepted: [IPNetwork] = []
        for text in texts where text.contains("/") {
            guard let network = Self.network(text, refusing: &result) else { continue }
            switch listPolicy.verdict(network) {
            case nil: break
            case .tooWide where force: break
            case .tooWide:
                result.refused.append(
                    "\(network): shorter than /\(network.family == .ipv4 ? configuration.shortestListPrefix.ipv4 : configuration.shortestListPrefix.ipv6) "
                        + "(--min-prefix-v4/--min-prefix-v6): give --force to ban it all the same")
                continue
            case .some(let refusal):
                result.refused.append("\(network): never banned: \(refusal)")
                continue
            }
            accepted.append(network)
        }
        var networks: [IPNetwork] = []
        let failures = enforcement.operatorBan(networks: accepted, expiry: expiry, origin: jail?.origin ?? 0)
        for (network, failure) in zip(accepted, failures) {
            if let failure { result.refused.append("\(network): \(failure)") } else { networks.append(network) }
        }
        if !networks.isEmpty {
            result.networks = networks
            let event = BanEvent(
                kind: .ban, origin: .operator, addresses: networks.map(\.address),
                monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: jail?.name ?? "manual",
                seconds: Array(repeating: seconds ?? 0, count: networks.count), prefixLengths: networks.map(\.length))
            for publisher in publishers { publisher.publish(event) }
        }
        for text in texts where !text.contains("/") || ((try? IPNetwork(parsing: text))?.isSingleAddress ?? false) {
            let plain = text.contains("/") ? String(text.prefix { $0 != "/" }) : text
            guard let address = IPAddress(plain) else {
                result.refused.append("\(text): not an IPv4 or IPv6 address")
                continue
            }
            if address.isNeverBannable || allowlist.contains(address) {
                result.refused.append("\(text): never banned (loopback, this host, the allowlist...)")
                continue
            }
            addresses.append(address)
        }
        result.done = enforcement.operatorBan(
            addresses, expiry: expiry, origin: jail?.origin ?? 0, tables: jails.map(\.table), clock: clock)
        if result.done.count < addresses.count {
            result.refused.append("\(addresses.count - result.done.count) not banned: the ban map is full")
        }
        if !result.done.isEmpty {
            jail?.recordBans(
                result.done, seconds: Array(repeating: seconds ?? 0, count: result.done.count),
                wallSeconds: SystemClock.wallSeconds())
            let event = BanEvent(
                kind: .ban, origin: .operator, addresses: result.done,
                monotonicNanoseconds: SystemClock.monotonicNanoseconds(), jail: jail?.name ?? "manual",
                seconds: Array(repeating: seconds ?? 0, count: result.done.count))
            for publisher in publishers { publisher.publish(event) }
        }
        return result
    }

    /// The jail each origin slot stands for: the jails' own, and `manual` for an operator's ban
    /// (what the journal's `[JAIL] Unban` line names).
    static func jailNames(_ jails: [Jail]) -> [UInt32: String] {
        var names = [BanEntry.operatorOrigin: "manual"]
        for jail in jails where jail.origin != BanEntry.operatorOrigin { names[jail.origin] = jail.name }
        return names
    }

    /// The network `text` names (nil for a single address, which goes with the addresses, and for
    /// a bad one, refused with why).
    private static func network(_ text: String, refusing result: inout OperatorResult) -> IPNetwork? {
        do throws(SettingError) {
            let network = try IPNetwork(parsing: text)
            return network.isSingleAddress ? nil : network
        } catch {
            result.refused.append(error.description)
            return nil
        }
    }

    /// Lifts the bans of `addresses` as the operator; their counts start over in every jail and
    /// the ban log says so.
    public func operatorUnban(_ texts: [String]) -> OperatorResult {
        var result = OperatorResult()
        var addresses: [IPAddress] = []
        let requested = texts.filter { $0.contains("/") }.compactMap { Self.network($0, refusing: &result) }
        for (network, outcome) in zip(requested, enforcement.operatorUnban(networks: requested)) {
            switch outcome {
            case .success(true): result.networks.append(network)
            case .success(false):
                result.refused.append("\(network) is not banned (a network is lifted as it was banned)")
            case .failure(let error): result.refused.append("\(network): \(error)")
            }
        }
        if !result.networks.isEmpty {
            let event = BanEvent(
                kind: .unban, origin: .operator, addresses: result.networks.map(\.address),
                monotonicNanoseconds: SystemClock.monotonicNanoseconds(), prefixLengths: result.networks.map(\.length))
            for publisher in publishers { publisher.publish(event) }
        }
        for text in texts where !text.contains("/") || ((try? IPNetwork(parsing: text))?.isSingleAddress ?? false) {
            let text = text.contains("/") ? String(text.prefix { $0 != "/" }) : text
            if let address = IPAddress(text) {
                addresses.append(address)
            } else {
                result.refused.append("\(text): not an IPv4 or IPv6 address")
            }
        }
        let (lifted, origins) = enforcement.operatorUnban(addresses, tables: jails.map(\.table))
        result.done = lifted
        if !result.done.isEmpty {
            let names = Self.jailNames(jails)
            let event = BanEvent(
                kind: .unban, origin: .operator, addresses: result.done,
                monotonicNanoseconds: SystemClock.monotonicNanoseconds(), liftedJails: origins.map { names[$0] })
            for publisher in publishers { publisher.publish(event) }
        }
        return result
    }
}
