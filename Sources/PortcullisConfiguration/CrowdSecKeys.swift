// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
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
        let table = try SectionTable(
            table, name: "crowdsec", keys: keys, what: "CrowdSec", file: file, locator: locator)
        let fail = table.fail
        guard let url = try table.text("api_url") else {
            throw fail(nil, "give the Local API's address: api_url = \"http://127.0.0.1:8080/\"")
        }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw fail("api_url", "'\(url)' is not an http:// or https:// URL")
        }
        // Parsed here, not first by the bouncer at run time ("http://[::1" is refused at load).
        guard let parsed = URL(string: url), let host = parsed.host(percentEncoded: false), !host.isEmpty,
            parsed.port.map({ (1...65_535).contains($0) }) ?? true
        else {
            throw fail(
                "api_url", "'\(url)' is not a URL with a host (and a port of 1...65535); e.g. http://127.0.0.1:8080/")
        }
        var connection = LAPIConnectionSettings(url: url)
        connection.caCertPath = try table.path("ca_cert_path")
        connection.certPath = try table.path("cert_path")
        connection.keyPath = try table.path("key_path")
        if (connection.certPath == nil) != (connection.keyPath == nil) {
            throw fail("cert_path", "a client certificate needs both cert_path and key_path")
        }
        connection.insecureSkipVerify = try table.boolean("insecure_skip_verify") ?? false
        var configuration = CrowdSecConfiguration(line: locator.line(of: "crowdsec"))
        let bouncerKeys = [
            "update_frequency", "resync_frequency", "scopes", "origins", "scenarios_containing",
            "scenarios_not_containing",
        ]
        if let key = try table.text("api_key") {
            var bouncer = BouncerSettings(connection: connection, apiKey: key)
            if let value = table.value("update_frequency") {
                let seconds = try Self.frequency(value, key: "update_frequency", file: file, locator: locator)
                guard (1...3600).contains(seconds) else {
                    throw fail("update_frequency", "must be 1 s to 1 h (CrowdSec's default is \"10s\")")
                }
                bouncer.updateFrequency = seconds
            }
            if let value = table.value("resync_frequency") {
                let seconds = try Self.frequency(value, key: "resync_frequency", file: file, locator: locator)
                guard seconds == 0 || (5...86_400).contains(seconds) else {
                    throw fail("resync_frequency", "must be 0 (never) or 5 s to 1 day (\"5m\" by default)")
                }
                bouncer.resyncFrequency = seconds
            }
            if table.has("scopes") {
                var scopes = Set<Decision.Scope>()
                for name in try table.texts("scopes") {
                    guard let scope = Decision.Scope(rawValue: name.lowercased()) else {
                        throw fail(
                            "scopes", "'\(name)' cannot be enforced in the driver; the scopes are ip and range"
                        )
                    }
                    scopes.insert(scope)
                }
                guard !scopes.isEmpty else { throw fail("scopes", "give ip, range or both") }
                bouncer.filter.scopes = scopes
            }
            bouncer.filter.origins = try table.texts("origins")
            bouncer.filter.scenariosContaining = try table.texts("scenarios_containing")
            bouncer.filter.scenariosNotContaining = try table.texts("scenarios_not_containing")
            configuration.bouncer = bouncer
        } else if let key = bouncerKeys.first(where: { table.has($0) }) {
            throw fail(key, "is a bouncer setting: give api_key (cscli bouncers add NAME -o raw) too")
        }
        let login = try table.text("login")
        let password = try table.text("password")
        if let login, let password {
            var alerts = AlertSettings(connection: connection, login: login, password: password)
            alerts.carryDecisions = try table.boolean("alert_decisions") ?? false
            if let limit = try table.integer("alert_queue", 1...1_000_000, "1 to 1000000 alerts") {
                alerts.queueLimit = limit
            }
            configuration.alerts = alerts
        } else if login != nil || password != nil {
            throw fail(
                login == nil ? "login" : "password",
                "alerts need both login and password (cscli machines add NAME --password P)")
        } else if let key = ["alert_decisions", "alert_queue"].first(where: { table.has($0) }) {
            throw fail(key, "is an alert setting: give login and password too")
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
