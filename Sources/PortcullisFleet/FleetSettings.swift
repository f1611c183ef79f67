// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import PortcullisCore

/// The `[fleet]` table: the NATS servers whose JetStream key-value bucket the fleet's hosts share
/// their bans through, and who this host is.
public struct FleetSettings: Sendable, Equatable {
    /// `servers`: `nats://HOST:PORT` or `tls://HOST:PORT` (the client fails over between them).
    public var servers: [String]
    /// `host`: this host's name in the bucket's keys (`HOST.ADDRESS`) and in origins (`fleet/HOST`)
    /// on the others: letters, digits, `-` and `_`.
    public var host: String
    /// `bucket`: the key-value bucket (its stream is `KV_BUCKET`).
    public var bucket = "portcullis-bans"
    /// `user` and `password`, or `token`, or `credentials` (a `.creds` file: a JWT and its nkey
    /// seed), or `nkey` with `nkey_seed` (a seed file): how the server knows this host.
    public var user: String?
    public var password: String?
    public var token: String?
    public var credentialsPath: String?
    public var nkey: String?
    public var nkeySeedPath: String?
    /// TLS: the CA that signed the servers' certificates, and this host's certificate and key.
    public var caCertPath: String?
    public var certPath: String?
    public var keyPath: String?
    /// `allow_plaintext`: connect without TLS to a server that is not on this host (bans and
    /// credentials then cross the network readable and forgeable). Refused unless true.
    public var allowPlaintext = false
    /// `queue`: changes waiting for the server while it is unreachable (those beyond are dropped
    /// and counted; the local bans stand).
    public var queueLimit = 100_000
    /// `share_crowdsec`: the CrowdSec decisions this host's bouncer enforces are put too.
    public var shareCrowdSec = false
    /// `max_age`: seconds a key stays in the bucket when this host creates it (NATS 2.9 has no
    /// per-key TTL: the end travels in the value). 0: the longest ban of the jails. A bucket that
    /// exists keeps its own: this host reads it after binding, says so when it differs, and puts
    /// again the keys of its bans that outlast it.
    public var maxAge: UInt64 = 0
    /// `replicas`: the bucket's stream replicas when this host creates it (a cluster's size); a
    /// bucket that exists keeps its own (a difference is said).
    public var replicas = 1
    /// `reconnect_wait`: seconds between tries to reach a server again.
    public var reconnectWait = 0.5
    /// `min_prefix_v4`, `min_prefix_v6`: other hosts' networks shorter than these are skipped
    /// (a host taken over must not make the others drop the Internet).
    public var shortestIPv4 = ListPolicy.fleetFloor.ipv4
    public var shortestIPv6 = ListPolicy.fleetFloor.ipv6
    /// `max_keys_per_host`: the most keys of one other host installed here; its further keys are
    /// skipped and counted.
    public var maxKeysPerHost = 100_000
    /// `ignore_hosts`: other hosts whose keys are never installed here (with the hosts
    /// `portcullis fleet ignore` names).
    public var ignoreHosts: [String] = []

    public init(servers: [String], host: String) {
        self.servers = servers
        self.host = host
    }

    /// Whether the connection is TLS: a `tls://` server, or TLS settings given.
    public var isSecure: Bool {
        caCertPath != nil || certPath != nil || servers.contains { $0.lowercased().hasPrefix("tls://") }
    }

    /// The longest host name: `fleet/HOST` must fit an origin's name (47 bytes).
    public static let longestHost = 40

    /// A host name for the keys: letters, digits, `-`, `_` (a key's `.` separates its tokens).
    public static func isValidHost(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= longestHost
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
    }

    /// A bucket name NATS takes: letters, digits, `-`, `_`.
    public static func isValidBucket(_ name: String) -> Bool { isValidHost(name) }

    /// This machine's name as a fleet host: its short host name, other characters as `-`.
    public static func defaultHost() -> String {
        let name = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let mapped = String(
            name.map { character -> Character in
                character.isASCII && (character.isLetter || character.isNumber || character == "-" || character == "_")
                    ? character : "-"
            })
        return isValidHost(mapped) ? mapped : "host"
    }

    /// The host part of a server URL (`nats://u:p@[::1]:4222` gives `::1`).
    public static func hostOfServer(_ url: String) -> String {
        var rest = Substring(url)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            return String(rest[rest.index(after: rest.startIndex)..<close])
        }
        if let colon = rest.lastIndex(of: ":") { rest = rest[..<colon] }
        return String(rest)
    }

    /// Whether `host` (a server URL's) is this machine: `localhost`, 127.0.0.0/8, `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        if host.lowercased() == "localhost" { return true }
        guard let address = IPAddress(host) else { return false }
        return address.isIPv4 ? address.description.hasPrefix("127.") : address.description == "::1"
    }

    /// The servers a plaintext connection would reach across a network (refused unless
    /// `allow_plaintext`).
    public var plaintextRemoteServers: [String] {
        guard !isSecure else { return [] }
        return servers.filter { !Self.isLoopback(Self.hostOfServer($0)) }
    }
}

/// A key of the bucket: `HOST.ADDRESS`, the address or network as written with `:` as `_` (NATS
/// keys take letters, digits and `-_=./`): `web-1.198.18.0.7`, `web-1.198.18.1.0/24`,
/// `web-1.2001_2__7`; a CrowdSec decision the host shares is `HOST.crowdsec.ADDRESS` (apart from
/// its jails' ban of the same address: the decision's deletion leaves that). The host comes first
/// so that an account can let each host put only its own keys (`$KV.BUCKET.HOST.>`).
public enum FleetKey {
    static let decision = "crowdsec."

    public static func key(host: String, _ network: IPNetwork, decision: Bool = false) -> String {
        let text = network.description
        var key = host
        key.reserveCapacity(host.utf8.count + 10 + text.utf8.count)
        key.append(".")
        if decision { key.append(Self.decision) }
        for character in text { key.append(character == ":" ? "_" : character) }
        return key
    }

    /// Whether `key` is a shared CrowdSec decision's (`HOST.crowdsec.ADDRESS`).
    public static func isDecision(_ key: String) -> Bool {
        guard let dot = key.firstIndex(of: ".") else { return false }
        return key[key.index(after: dot)...].hasPrefix(decision)
    }

    /// The host and network a key names; nil for a key that is not `HOST.[crowdsec.]ADDRESS`.
    public static func parse(_ key: String) -> (host: String, network: IPNetwork)? {
        guard let dot = key.firstIndex(of: ".") else { return nil }
        let host = String(key[..<dot])
        guard FleetSettings.isValidHost(host) else { return nil }
        var rest = key[key.index(after: dot)...]
        if rest.hasPrefix(Self.decision) { rest = rest.dropFirst(Self.decision.count) }
        // By bytes (a Character at a time cost about 1 µs a key: `portcullis-perf fleet-load`).
        let text =
            rest.utf8.contains(UInt8(ascii: "_"))
            ? String(decoding: rest.utf8.map { $0 == UInt8(ascii: "_") ? UInt8(ascii: ":") : $0 }, as: UTF8.self)
            : String(rest)
        guard let network = try? IPNetwork(parsing: text) else { return nil }
        return (host, network)
    }
}

/// A key's value: the ban's end and when it was made (wall-clock milliseconds since the epoch:
/// hosts' boot clocks differ), the jail, the host that made it and its escalation level. JSON, so
/// that `nats kv get` shows it as it is.
public struct FleetValue: Codable, Sendable, Equatable {
    /// Milliseconds since the epoch when the ban ends; 0: never.
    public var end: UInt64
    /// Milliseconds since the epoch when the origin host's maps took it.
    public var at: UInt64
    public var jail: String
    public var host: String
    /// How many times the jail had banned the address before (its escalation's count).
    public var level: UInt32
    /// True when the origin host put the key again (before the bucket's max age took it): not a
    /// new ban, so not a propagation. Absent on a new ban's (and from hosts before it).
    public var refresh: Bool?

    public init(end: UInt64, at: UInt64, jail: String, host: String, level: UInt32, refresh: Bool? = nil) {
        self.end = end
        self.at = at
        self.jail = jail
        self.host = host
        self.level = level
        self.refresh = refresh
    }
}
