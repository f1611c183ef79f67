import PortcullisFleet
import TOMLKit

/// The `[fleet]` table: the NATS JetStream bucket this host shares its bans through.
public struct FleetConfiguration: Sendable, Equatable {
    public var settings: FleetSettings
    public let line: Int?

    static let keys = [
        "servers", "host", "bucket", "user", "password", "token", "credentials", "nkey", "nkey_seed", "ca_cert_path",
        "cert_path", "key_path", "allow_plaintext", "queue", "share_crowdsec", "max_age", "replicas",
        "reconnect_wait",
    ]

    static func parse(
        _ table: TOMLTable, file: String, locator: KeyLocator
    ) throws(ConfigurationError)
        -> FleetConfiguration
    {
        func fail(_ key: String?, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, line: locator.line(of: key ?? "fleet"), key: key ?? "fleet", message)
        }
        var values: [String: TOMLValueConvertible] = [:]
        for (name, value) in table {
            guard keys.contains(name) else {
                throw fail("fleet.\(name)", "unknown fleet setting; the keys are " + keys.joined(separator: ", "))
            }
            values[name] = value
        }
        func text(_ name: String) throws(ConfigurationError) -> String? {
            guard let value = values[name] else { return nil }
            let text = try ConfigurationFile.text(value, key: "fleet.\(name)", file: file, locator: locator)
            guard !text.isEmpty else { throw fail("fleet.\(name)", "is empty; give a value or leave the key out") }
            return text
        }
        func path(_ name: String) throws(ConfigurationError) -> String? {
            guard let path = try text(name) else { return nil }
            guard path.hasPrefix("/") else { throw fail("fleet.\(name)", "give an absolute path, not '\(path)'") }
            return path
        }
        func integer(_ name: String, _ range: ClosedRange<Int>, _ what: String) throws(ConfigurationError) -> Int? {
            guard let value = values[name] else { return nil }
            let number = try ConfigurationFile.integer(value, key: "fleet.\(name)", file: file, locator: locator)
            guard range.contains(number) else { throw fail("fleet.\(name)", "must be \(what)") }
            return number
        }
        let servers: [String]
        if let value = values["servers"] {
            if let one = value.string {
                servers = [one]
            } else {
                servers = try ConfigurationFile.texts(value, key: "fleet.servers", file: file, locator: locator)
            }
        } else {
            throw fail(nil, "give the NATS servers: servers = [\"nats://127.0.0.1:4222\"]")
        }
        guard !servers.isEmpty else { throw fail("fleet.servers", "give at least one server") }
        for server in servers {
            let lowered = server.lowercased()
            guard lowered.hasPrefix("nats://") || lowered.hasPrefix("tls://"),
                !FleetSettings.hostOfServer(server).isEmpty
            else {
                throw fail("fleet.servers", "'\(server)' is not a nats:// or tls:// URL with a host")
            }
        }
        let host = try text("host") ?? FleetSettings.defaultHost()
        guard FleetSettings.isValidHost(host) else {
            throw fail(
                "fleet.host", "'\(host)' cannot name keys: use letters, digits, - and _ (at most 64), e.g. web-1")
        }
        var settings = FleetSettings(servers: servers, host: host)
        if let bucket = try text("bucket") {
            guard FleetSettings.isValidBucket(bucket) else {
                throw fail("fleet.bucket", "'\(bucket)' is no bucket name: use letters, digits, - and _")
            }
            settings.bucket = bucket
        }
        settings.user = try text("user")
        settings.password = try text("password")
        if (settings.user == nil) != (settings.password == nil) {
            throw fail("fleet.\(settings.user == nil ? "user" : "password")", "give both user and password")
        }
        settings.token = try text("token")
        settings.credentialsPath = try path("credentials")
        settings.nkey = try text("nkey")
        settings.nkeySeedPath = try path("nkey_seed")
        if (settings.nkey == nil) != (settings.nkeySeedPath == nil) {
            throw fail(
                "fleet.\(settings.nkey == nil ? "nkey" : "nkey_seed")",
                "an nkey needs both nkey (the public key, U...) and nkey_seed (the seed's file)")
        }
        let identities = [settings.user, settings.token, settings.credentialsPath, settings.nkey].compactMap { $0 }
        guard identities.count <= 1 else {
            throw fail("fleet", "give one of user and password, token, credentials, or nkey and nkey_seed")
        }
        settings.caCertPath = try path("ca_cert_path")
        settings.certPath = try path("cert_path")
        settings.keyPath = try path("key_path")
        if (settings.certPath == nil) != (settings.keyPath == nil) {
            throw fail("fleet.cert_path", "a client certificate needs both cert_path and key_path")
        }
        if let value = values["allow_plaintext"] {
            settings.allowPlaintext = try ConfigurationFile.boolean(
                value, key: "fleet.allow_plaintext", file: file, locator: locator)
        }
        if !settings.allowPlaintext, let server = settings.plaintextRemoteServers.first {
            throw fail(
                "fleet.servers",
                "\(server) is not on this host and the connection would be plaintext (bans and credentials "
                    + "readable and forgeable on the way): use tls:// with ca_cert_path, or set allow_plaintext = true")
        }
        if let value = values["share_crowdsec"] {
            settings.shareCrowdSec = try ConfigurationFile.boolean(
                value, key: "fleet.share_crowdsec", file: file, locator: locator)
        }
        if let queue = try integer("queue", 1...10_000_000, "1 to 10000000 changes") { settings.queueLimit = queue }
        if let age = try integer(
            "max_age", 0...(10 * 365 * 86_400), "0 (the jails' longest ban) to 10 years in seconds")
        {
            settings.maxAge = UInt64(age)
        }
        if let replicas = try integer("replicas", 1...5, "1 to 5 (NATS streams have at most 5 replicas)") {
            settings.replicas = replicas
        }
        if let value = values["reconnect_wait"] {
            let seconds = try ConfigurationFile.number(value, key: "fleet.reconnect_wait", file: file, locator: locator)
            guard (0.05...60).contains(seconds) else {
                throw fail("fleet.reconnect_wait", "must be 0.05 to 60 seconds")
            }
            settings.reconnectWait = seconds
        }
        return FleetConfiguration(settings: settings, line: locator.line(of: "fleet"))
    }
}
