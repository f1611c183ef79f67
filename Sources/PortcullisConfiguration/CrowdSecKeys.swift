import PortcullisCrowdSec
import TOMLKit

/// The `[crowdsec]` table: a bouncer of a Local API's decisions (with `api_key`) and a pusher of
/// the jails' bans as alerts (with `login` and `password`), with the names CrowdSec's bouncers and
/// agents give these settings.
public struct CrowdSecConfiguration: Sendable, Equatable {
    public var bouncer: BouncerSettings?
    public var alerts: AlertSettings?
    public let line: Int?

    static let keys = [
        "api_url", "api_key", "update_frequency", "resync_frequency", "scopes", "origins", "scenarios_containing",
        "scenarios_not_containing", "ca_cert_path", "cert_path", "key_path", "insecure_skip_verify", "login",
        "password", "alert_decisions", "alert_queue",
    ]

    static func parse(
        _ table: TOMLTable, file: String, locator: KeyLocator
    ) throws(ConfigurationError)
        -> CrowdSecConfiguration
    {
        func fail(_ key: String?, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, line: locator.line(of: key ?? "crowdsec"), key: key ?? "crowdsec", message)
        }
        var values: [String: TOMLValueConvertible] = [:]
        for (name, value) in table {
            guard keys.contains(name) else {
                throw fail(
                    "crowdsec.\(name)", "unknown CrowdSec setting; the keys are " + keys.joined(separator: ", "))
            }
            values[name] = value
        }
        func text(_ name: String) throws(ConfigurationError) -> String? {
            guard let value = values[name] else { return nil }
            let text = try ConfigurationFile.text(value, key: "crowdsec.\(name)", file: file, locator: locator)
            guard !text.isEmpty else { throw fail("crowdsec.\(name)", "is empty; give a value or leave the key out") }
            return text
        }
        func texts(_ name: String) throws(ConfigurationError) -> [String] {
            guard let value = values[name] else { return [] }
            return try ConfigurationFile.texts(value, key: "crowdsec.\(name)", file: file, locator: locator)
        }
        func path(_ name: String) throws(ConfigurationError) -> String? {
            guard let path = try text(name) else { return nil }
            guard path.hasPrefix("/") else { throw fail("crowdsec.\(name)", "give an absolute path, not '\(path)'") }
            return path
        }
        guard let url = try text("api_url") else {
            throw fail(nil, "give the Local API's address: api_url = \"http://127.0.0.1:8080/\"")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw fail("crowdsec.api_url", "'\(url)' is not an http:// or https:// URL")
        }
        var connection = LAPIConnectionSettings(url: url)
        connection.caCertPath = try path("ca_cert_path")
        connection.certPath = try path("cert_path")
        connection.keyPath = try path("key_path")
        if (connection.certPath == nil) != (connection.keyPath == nil) {
            throw fail("crowdsec.cert_path", "a client certificate needs both cert_path and key_path")
        }
        if let value = values["insecure_skip_verify"] {
            connection.insecureSkipVerify = try ConfigurationFile.boolean(
                value, key: "crowdsec.insecure_skip_verify", file: file, locator: locator)
        }
        var configuration = CrowdSecConfiguration(line: locator.line(of: "crowdsec"))
        let bouncerKeys = [
            "update_frequency", "resync_frequency", "scopes", "origins", "scenarios_containing",
            "scenarios_not_containing",
        ]
        if let key = try text("api_key") {
            var bouncer = BouncerSettings(connection: connection, apiKey: key)
            if let value = values["update_frequency"] {
                let seconds = try Self.frequency(value, key: "update_frequency", file: file, locator: locator)
                guard (1...3600).contains(seconds) else {
                    throw fail("crowdsec.update_frequency", "must be 1 s to 1 h (CrowdSec's default is \"10s\")")
                }
                bouncer.updateFrequency = seconds
            }
            if let value = values["resync_frequency"] {
                let seconds = try Self.frequency(value, key: "resync_frequency", file: file, locator: locator)
                guard seconds == 0 || (5...86_400).contains(seconds) else {
                    throw fail("crowdsec.resync_frequency", "must be 0 (never) or 5 s to 1 day (\"5m\" by default)")
                }
                bouncer.resyncFrequency = seconds
            }
            if values["scopes"] != nil {
                var scopes = Set<Decision.Scope>()
                for name in try texts("scopes") {
                    guard let scope = Decision.Scope(rawValue: name.lowercased()) else {
                        throw fail(
                            "crowdsec.scopes", "'\(name)' cannot be enforced in the driver; the scopes are ip and range"
                        )
                    }
                    scopes.insert(scope)
                }
                guard !scopes.isEmpty else { throw fail("crowdsec.scopes", "give ip, range or both") }
                bouncer.filter.scopes = scopes
            }
            bouncer.filter.origins = try texts("origins")
            bouncer.filter.scenariosContaining = try texts("scenarios_containing")
            bouncer.filter.scenariosNotContaining = try texts("scenarios_not_containing")
            configuration.bouncer = bouncer
        } else if let key = bouncerKeys.first(where: { values[$0] != nil }) {
            throw fail("crowdsec.\(key)", "is a bouncer setting: give api_key (cscli bouncers add NAME -o raw) too")
        }
        let login = try text("login")
        let password = try text("password")
        if let login, let password {
            var alerts = AlertSettings(connection: connection, login: login, password: password)
            if let value = values["alert_decisions"] {
                alerts.carryDecisions = try ConfigurationFile.boolean(
                    value, key: "crowdsec.alert_decisions", file: file, locator: locator)
            }
            if let value = values["alert_queue"] {
                let limit = try ConfigurationFile.integer(
                    value, key: "crowdsec.alert_queue", file: file, locator: locator)
                guard (1...1_000_000).contains(limit) else {
                    throw fail("crowdsec.alert_queue", "must be 1 to 1000000 alerts")
                }
                alerts.queueLimit = limit
            }
            configuration.alerts = alerts
        } else if login != nil || password != nil {
            throw fail(
                "crowdsec.\(login == nil ? "login" : "password")",
                "alerts need both login and password (cscli machines add NAME --password P)")
        } else if let key = ["alert_decisions", "alert_queue"].first(where: { values[$0] != nil }) {
            throw fail("crowdsec.\(key)", "is an alert setting: give login and password too")
        }
        guard configuration.bouncer != nil || configuration.alerts != nil else {
            throw fail(
                nil,
                "does nothing: give api_key (a bouncer's) to enforce decisions, login and password (a machine's) "
                    + "to push alerts, or both")
        }
        return configuration
    }

    /// A frequency: seconds as a number, or a Go duration as CrowdSec writes it (`"10s"`).
    static func frequency(
        _ value: TOMLValueConvertible, key name: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> Double
    {
        let key = "crowdsec.\(name)"
        if let text = value.string {
            guard let seconds = GoDuration.seconds(text) else {
                throw ConfigurationError(
                    file: file, line: locator.line(of: key), key: key, "'\(text)' is no duration; write e.g. \"10s\"")
            }
            return seconds
        }
        return try ConfigurationFile.number(value, key: key, file: file, locator: locator)
    }
}
