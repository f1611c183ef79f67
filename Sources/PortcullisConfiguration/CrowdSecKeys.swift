// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import PortcullisCrowdSec
import PortcullisSystem
import TOMLKit

/// The `[crowdsec]` table: a bouncer of a Local API's decisions (with `api_key`, or a client
/// certificate as CrowdSec's bouncers take one) and a pusher of the jails' bans as alerts (with
/// `login` and `password`, or a machine's certificate), with the names CrowdSec's bouncers and
/// agents give these settings.
public struct CrowdSecConfiguration: Sendable, Equatable {
    public var bouncer: BouncerSettings?
    public var alerts: AlertSettings?
    public let line: Int?

    static let keys = [
        "api_url", "api_key", "api_key_file", "update_frequency", "resync_frequency", "scopes", "origins",
        "scenarios_containing",
        "scenarios_not_containing", "ca_cert_path", "cert_path", "key_path", "insecure_skip_verify", "login",
        "password", "password_file", "alert_cert_path", "alert_key_path", "alert_decisions", "alert_queue",
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
        connection.insecureSkipVerify = try table.boolean("insecure_skip_verify") ?? false
        // The client certificates: the bouncer's and the machine's (the Local API tells them by
        // their OU, `bouncers_allowed_ou` and `agents_allowed_ou`, so they are usually two).
        func certificate(_ certKey: String, _ keyKey: String) throws(ConfigurationError) -> (String, String)? {
            let cert = try table.path(certKey)
            let key = try table.path(keyKey)
            guard let cert, let key else {
                if cert == nil && key == nil { return nil }
                throw fail(certKey, "a client certificate needs both \(certKey) and \(keyKey)")
            }
            guard url.hasPrefix("https://") else {
                throw fail(certKey, "a client certificate needs an https:// api_url, not '\(url)'")
            }
            return (cert, key)
        }
        let bouncerCertificate = try certificate("cert_path", "key_path")
        let machineCertificate = try certificate("alert_cert_path", "alert_key_path")
        var configuration = CrowdSecConfiguration(line: locator.line(of: "crowdsec"))
        let bouncerKeys = [
            "update_frequency", "resync_frequency", "scopes", "origins", "scenarios_containing",
            "scenarios_not_containing",
        ]
        let apiKey = try secret(table, "api_key", "the bouncer's API key")
        if apiKey != nil && bouncerCertificate != nil {
            throw fail(
                table.has("api_key") ? "api_key" : "api_key_file",
                "give api_key or a client certificate (cert_path, key_path), not both: the Local API would "
                    + "authenticate the certificate alone (CrowdSec's bouncers refuse both)")
        }
        if apiKey != nil || bouncerCertificate != nil {
            var bouncerConnection = connection
            bouncerConnection.certPath = bouncerCertificate?.0
            bouncerConnection.keyPath = bouncerCertificate?.1
            var bouncer = BouncerSettings(connection: bouncerConnection, apiKey: apiKey)
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
            throw fail(
                key,
                "is a bouncer setting: give api_key (cscli bouncers add NAME -o raw) or a client certificate "
                    + "(cert_path, key_path) too")
        }
        let login = try table.text("login")
        let password = try secret(table, "password", "the machine's password")
        var alerts: AlertSettings?
        if let machineCertificate {
            if login != nil || password != nil {
                throw fail(
                    login != nil ? "login" : "password",
                    "give login and password or a client certificate (alert_cert_path, alert_key_path), not both: "
                        + "the Local API logs a machine with a certificate in by the certificate alone")
            }
            var machineConnection = connection
            machineConnection.certPath = machineCertificate.0
            machineConnection.keyPath = machineCertificate.1
            alerts = AlertSettings(connection: machineConnection)
        } else if let login, let password {
            alerts = AlertSettings(connection: connection, login: login, password: password)
        } else if login != nil || password != nil {
            throw fail(
                login == nil ? "login" : "password",
                "alerts need both login and password (cscli machines add NAME --password P)")
        }
        if var alerts {
            alerts.carryDecisions = try table.boolean("alert_decisions") ?? false
            if let limit = try table.integer("alert_queue", 1...1_000_000, "1 to 1000000 alerts") {
                alerts.queueLimit = limit
            }
            configuration.alerts = alerts
        } else if let key = ["alert_decisions", "alert_queue"].first(where: { table.has($0) }) {
            throw fail(key, "is an alert setting: give login and password (or alert_cert_path) too")
        }
        guard configuration.bouncer != nil || configuration.alerts != nil else {
            throw fail(
                nil,
                "does nothing: give api_key or cert_path (a bouncer's) to enforce decisions, login and password "
                    + "or alert_cert_path (a machine's) to push alerts, or both")
        }
        return configuration
    }

    /// The secret of `key`, given in the file (`key = "..."`) or read from the file `KEY_file`
    /// names (a systemd credential, say): its text without the trailing line end. A reload reads it
    /// again.
    static func secret(_ table: SectionTable, _ key: String, _ what: String) throws(ConfigurationError) -> String? {
        let inline = try table.text(key)
        guard let path = try table.path(key + "_file") else { return inline }
        let fileKey = key + "_file"
        if inline != nil { throw table.fail(fileKey, "give \(key) or \(fileKey), not both") }
        let text: String
        do throws(Errno) {
            text = try TextFile.read(path, limit: 65_536)
        } catch {
            throw table.fail(
                fileKey, "cannot read \(path) (\(error)); give a file root can read that holds \(what)")
        }
        var secret = Substring(text)
        while secret.last?.isNewline == true { secret.removeLast() }
        guard !secret.isEmpty else { throw table.fail(fileKey, "\(path) is empty; write \(what) in it") }
        guard !secret.contains(where: \.isNewline) else {
            throw table.fail(fileKey, "\(path) holds more than one line; write \(what) alone in it")
        }
        return String(secret)
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
