// SPDX-License-Identifier: Apache-2.0
import PortcullisFleet
import TOMLKit

/// The `[fleet]` table: the NATS JetStream bucket this host shares its bans through.
public struct FleetConfiguration: Sendable, Equatable {
    public var settings: FleetSettings
    public let line: Int?

    static let keys = [
        "servers", "host", "bucket", "user", "password", "token", "credentials", "nkey", "nkey_seed", "ca_cert_path",
        "cert_path", "key_path", "allow_plaintext", "queue", "share_crowdsec", "max_age", "replicas",
        "reconnect_wait", "min_prefix_v4", "min_prefix_v6", "max_keys_per_host", "ignore_hosts",
    ]

    static func parse(
        _ table: TOMLTable, file: String, locator: KeyLocator
    ) throws(ConfigurationError)
        -> FleetConfiguration
    {
        let table = try SectionTable(table, name: "fleet", keys: keys, what: "fleet", file: file, locator: locator)
        let fail = table.fail
        guard table.has("servers") else {
            throw fail(nil, "give the NATS servers: servers = [\"nats://127.0.0.1:4222\"]")
        }
        let servers = try table.texts("servers")
        guard !servers.isEmpty else { throw fail("servers", "give at least one server") }
        for server in servers {
            let lowered = server.lowercased()
            guard lowered.hasPrefix("nats://") || lowered.hasPrefix("tls://"),
                !FleetSettings.hostOfServer(server).isEmpty
            else {
                throw fail("servers", "'\(server)' is not a nats:// or tls:// URL with a host")
            }
        }
        let host = try table.text("host") ?? FleetSettings.defaultHost()
        guard FleetSettings.isValidHost(host) else {
            throw fail(
                "host",
                "'\(host)' cannot name keys: use letters, digits, - and _ (at most \(FleetSettings.longestHost)), e.g. web-1"
            )
        }
        var settings = FleetSettings(servers: servers, host: host)
        if let bucket = try table.text("bucket") {
            guard FleetSettings.isValidBucket(bucket) else {
                throw fail("bucket", "'\(bucket)' is no bucket name: use letters, digits, - and _")
            }
            settings.bucket = bucket
        }
        settings.user = try table.text("user")
        settings.password = try table.text("password")
        if (settings.user == nil) != (settings.password == nil) {
            throw fail(settings.user == nil ? "user" : "password", "give both user and password")
        }
        settings.token = try table.text("token")
        settings.credentialsPath = try table.path("credentials")
        settings.nkey = try table.text("nkey")
        settings.nkeySeedPath = try table.path("nkey_seed")
        if (settings.nkey == nil) != (settings.nkeySeedPath == nil) {
            throw fail(
                settings.nkey == nil ? "nkey" : "nkey_seed",
                "an nkey needs both nkey (the public key, U...) and nkey_seed (the seed's file)")
        }
        let identities = [settings.user, settings.token, settings.credentialsPath, settings.nkey].compactMap { $0 }
        guard identities.count <= 1 else {
            throw fail(nil, "give one of user and password, token, credentials, or nkey and nkey_seed")
        }
        settings.caCertPath = try table.path("ca_cert_path")
        settings.certPath = try table.path("cert_path")
        settings.keyPath = try table.path("key_path")
        if (settings.certPath == nil) != (settings.keyPath == nil) {
            throw fail("cert_path", "a client certificate needs both cert_path and key_path")
        }
        settings.allowPlaintext = try table.boolean("allow_plaintext") ?? false
        if !settings.allowPlaintext, let server = settings.plaintextRemoteServers.first {
            throw fail(
                "servers",
                "\(server) is not on this host and the connection would be plaintext (bans and credentials "
                    + "readable and forgeable on the way): use tls:// with ca_cert_path, or set allow_plaintext = true")
        }
        settings.shareCrowdSec = try table.boolean("share_crowdsec") ?? false
        if let queue = try table.integer("queue", 1...10_000_000, "1 to 10000000 changes") {
            settings.queueLimit = queue
        }
        if let age = try table.integer(
            "max_age", 0...(10 * 365 * 86_400), "0 (the jails' longest ban) or 10 s to 10 years in seconds")
        {
            guard age == 0 || age >= Int(FleetNode.shortestMaxAge) else {
                throw fail("max_age", "must be 0 (the jails' longest ban) or 10 s to 10 years in seconds")
            }
            settings.maxAge = UInt64(age)
        }
        if let replicas = try table.integer("replicas", 1...5, "1 to 5 (NATS streams have at most 5 replicas)") {
            settings.replicas = replicas
        }
        if let seconds = try table.number("reconnect_wait") {
            guard (0.05...60).contains(seconds) else { throw fail("reconnect_wait", "must be 0.05 to 60 seconds") }
            settings.reconnectWait = seconds
        }
        if let length = try table.integer("min_prefix_v4", 0...32, "0 to 32") { settings.shortestIPv4 = length }
        if let length = try table.integer("min_prefix_v6", 0...128, "0 to 128") { settings.shortestIPv6 = length }
        if let most = try table.integer("max_keys_per_host", 1...10_000_000, "1 to 10000000 keys") {
            settings.maxKeysPerHost = most
        }
        if table.has("ignore_hosts") {
            let hosts = try table.texts("ignore_hosts")
            if let bad = hosts.first(where: { !FleetSettings.isValidHost($0) }) {
                throw fail("ignore_hosts", "'\(bad)' is no host name: letters, digits, - and _, e.g. web-2")
            }
            settings.ignoreHosts = hosts
        }
        return FleetConfiguration(settings: settings, line: locator.line(of: "fleet"))
    }
}
