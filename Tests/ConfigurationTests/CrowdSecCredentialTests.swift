// SPDX-License-Identifier: Apache-2.0
import Foundation
@testable import PortcullisConfiguration
import Testing

/// `[crowdsec]`'s credentials: a client certificate alone, the secrets read from files (systemd's
/// `LoadCredential=`), and the mixes CrowdSec's bouncers refuse.
@Suite("Configuration file: CrowdSec credentials")
struct CrowdSecCredentialTests {
    private func load(_ text: String) throws(ConfigurationError) -> CrowdSecConfiguration? {
        try ConfigurationFile(path: "file.toml", text: "[crowdsec]\napi_url = \"https://lapi:8080/\"\n" + text)
            .crowdsec
    }

    private func error(_ text: String) -> String {
        do {
            _ = try load(text)
            return "no error"
        } catch {
            return "\(error)"
        }
    }

    /// A scratch file holding `text`, removed after `body`.
    private func withSecret(_ text: String, _ body: (String) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "pc-secret-\(getpid())-\(UUID().uuidString.prefix(8))"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        try body(path)
    }

    @Test("a client certificate alone is a bouncer (no api_key sent); the machine's own certificate pushes alerts")
    func certificateOnly() throws {
        let bouncerOnly = try #require(try load("cert_path = \"/b.pem\"\nkey_path = \"/b.key\"\n"))
        let bouncer = try #require(bouncerOnly.bouncer)
        #expect(
            bouncer.apiKey == nil && bouncer.connection.certPath == "/b.pem" && bouncer.connection.keyPath == "/b.key")
        #expect(bouncerOnly.alerts == nil)

        let both = try #require(
            try load(
                "cert_path = \"/b.pem\"\nkey_path = \"/b.key\"\nalert_cert_path = \"/a.pem\"\nalert_key_path = \"/a.key\"\n"
            ))
        let alerts = try #require(both.alerts)
        #expect(alerts.login == nil && alerts.password == nil && alerts.connection.certPath == "/a.pem")
        #expect(alerts.identity == "the client certificate /a.pem")
        #expect(both.bouncer?.connection.certPath == "/b.pem", "each presents its own certificate")

        // The bouncer by certificate, the machine by password: its login presents no certificate (the
        // Local API would take the bouncer's for the machine's).
        let mixed = try #require(
            try load("cert_path = \"/b.pem\"\nkey_path = \"/b.key\"\nlogin = \"m\"\npassword = \"p\"\n"))
        #expect(mixed.alerts?.connection.certPath == nil && mixed.alerts?.login == "m")
        #expect(mixed.bouncer?.connection.certPath == "/b.pem")
    }

    @Test(
        "certificate mistakes: one line naming the key",
        arguments: [
            (
                "api_key = \"k\"\ncert_path = \"/b.pem\"\nkey_path = \"/b.key\"\n",
                "crowdsec.api_key: give api_key or a client certificate (cert_path, key_path), not both"
            ),
            (
                "login = \"m\"\npassword = \"p\"\nalert_cert_path = \"/a.pem\"\nalert_key_path = \"/a.key\"\n",
                "crowdsec.login: give login and password or a client certificate"
            ),
            ("alert_cert_path = \"/a.pem\"\n", "crowdsec.alert_cert_path: a client certificate needs both"),
            (
                "update_frequency = 5\nalert_cert_path = \"/a.pem\"\nalert_key_path = \"/a.key\"\n",
                "is a bouncer setting"
            ),
        ])
    func certificateRefused(text: String, message: String) {
        let described = error(text)
        #expect(described.contains(message) && !described.contains("\n"), "\(described)")
    }

    @Test("a client certificate needs https")
    func certificateNeedsHTTPS() {
        do {
            _ = try ConfigurationFile(
                path: "file.toml",
                text: "[crowdsec]\napi_url = \"http://lapi:8080/\"\ncert_path = \"/b.pem\"\nkey_path = \"/b.key\"\n")
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains("crowdsec.cert_path: a client certificate needs an https:// api_url"))
        }
    }

    @Test("api_key_file and password_file: the secret without its line end; read again at each load")
    func secretFiles() throws {
        try withSecret("0123abcd\n") { key in
            try withSecret("pass word\r\n") { password in
                let text = "api_key_file = \"\(key)\"\nlogin = \"m\"\npassword_file = \"\(password)\"\n"
                let read = try #require(try load(text))
                #expect(read.bouncer?.apiKey == "0123abcd" && read.bouncer?.connection.certPath == nil)
                #expect(read.alerts?.password == "pass word" && read.alerts?.login == "m")
                // A reload reads the file again: a changed key is a changed bouncer.
                try "4567efgh".write(toFile: key, atomically: true, encoding: .utf8)
                let again = try #require(try load(text))
                #expect(again.bouncer?.apiKey == "4567efgh" && again.bouncer != read.bouncer)
            }
        }
    }

    @Test("secret files refused: both ways given, missing, empty, several lines, beside a certificate")
    func secretFilesRefused() throws {
        try withSecret("k\n") { key in
            #expect(
                error("api_key = \"k\"\napi_key_file = \"\(key)\"\n").contains(
                    "crowdsec.api_key_file: give api_key or api_key_file, not both"))
            #expect(
                error("api_key_file = \"\(key)\"\ncert_path = \"/b.pem\"\nkey_path = \"/b.key\"\n").contains(
                    "crowdsec.api_key_file: give api_key or a client certificate"))
            #expect(
                error("login = \"m\"\npassword = \"p\"\npassword_file = \"\(key)\"\n").contains(
                    "crowdsec.password_file: give password or password_file, not both"))
        }
        let missing = error("api_key_file = \"/nonexistent/crowdsec-key\"\n")
        #expect(
            missing.contains("crowdsec.api_key_file: cannot read /nonexistent/crowdsec-key (")
                && missing.contains("holds the bouncer's API key") && !missing.contains("\n"), "\(missing)")
        try withSecret("\n") { empty in
            let described = error("api_key_file = \"\(empty)\"\n")
            #expect(described.contains("crowdsec.api_key_file: \(empty) is empty; write the bouncer's API key in it"))
        }
        try withSecret("a\nb\n") { twoLines in
            let described = error("login = \"m\"\npassword_file = \"\(twoLines)\"\n")
            #expect(described.contains("crowdsec.password_file: \(twoLines) holds more than one line"), "\(described)")
        }
        #expect(error("api_key_file = \"key\"\n").contains("crowdsec.api_key_file: give an absolute path"))
    }
}
