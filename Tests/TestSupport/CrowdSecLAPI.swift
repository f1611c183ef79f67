// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// A real CrowdSec Local API (Debian's `crowdsec -no-cs`) for one test: a scratch configuration
/// (SQLite in a scratch directory, no Central API, no hub, no agent), listening on loopback inside
/// a test network namespace, started and stopped by its pid; `cscli` runs against it there.
public final class CrowdSecLAPI {
    public static let crowdsec = "/usr/bin/crowdsec"
    public static let cscli = "/usr/bin/cscli"
    /// Whether Debian's crowdsec is installed; in CI its absence fails the test.
    public static func available() -> Bool {
        if FileManager.default.isExecutableFile(atPath: crowdsec), FileManager.default.isExecutableFile(atPath: cscli) {
            return true
        }
        if Privileges.inCI { Issue.record("crowdsec is missing: tools/install-deps installs Debian's crowdsec") }
        return false
    }

    public let directory: String
    public let namespace: String
    public let port: Int
    /// After `serveTLS()`: served over HTTPS with a self-signed certificate for 127.0.0.1
    /// (`certificate`).
    public private(set) var tls = false
    public var url: String { "\(tls ? "https" : "http")://127.0.0.1:\(port)/" }
    public var certificate: String { directory + "/cert.pem" }
    public var config: String { directory + "/config.yaml" }
    private var process: Process?
    private var log: FileHandle?

    /// Writes the configuration and registers the machine `cscli` uses; `start()` runs it.
    public init(namespace: String, port: Int = 8080) throws {
        self.namespace = namespace
        self.port = port
        directory = NSTemporaryDirectory() + "pc-crowdsec-\(getpid())-\(namespace)"
        try? FileManager.default.removeItem(atPath: directory)
        for sub in ["", "/data", "/hub"] {
            try FileManager.default.createDirectory(atPath: directory + sub, withIntermediateDirectories: true)
        }
        try """
        common:
          daemonize: false
          log_media: file
          log_dir: \(directory)/
          log_level: info
        config_paths:
          config_dir: \(directory)/
          data_dir: \(directory)/data/
          simulation_path: \(directory)/simulation.yaml
          hub_dir: \(directory)/hub/
          index_path: \(directory)/hub/.index.json
          notification_dir: \(directory)/notifications/
          plugin_dir: /usr/lib/crowdsec/plugins/
        cscli:
          output: human
        db_config:
          type: sqlite
          db_path: \(directory)/data/crowdsec.db
          use_wal: true
        api:
          client:
            credentials_path: \(directory)/local_api_credentials.yaml
          server:
            listen_uri: 127.0.0.1:\(port)
            profiles_path: \(directory)/profiles.yaml
            trusted_ips: ["127.0.0.1", "::1"]
        prometheus:
          enabled: false
        """.write(toFile: config, atomically: true, encoding: .utf8)
        // CrowdSec's default profile: an alert of scope Ip with remediation becomes a 4 h ban.
        try """
        name: default_ip_remediation
        filters:
         - Alert.Remediation == true && Alert.GetScope() == "Ip"
        decisions:
         - type: ban
           duration: 4h
        on_success: break
        """.write(toFile: directory + "/profiles.yaml", atomically: true, encoding: .utf8)
        try "simulation: false\n".write(toFile: directory + "/simulation.yaml", atomically: true, encoding: .utf8)
        try "{}\n".write(toFile: directory + "/hub/.index.json", atomically: true, encoding: .utf8)
        let machine = try cscli([
            "machines", "add", "cscli-test", "--auto", "-f", directory + "/local_api_credentials.yaml",
        ])
        guard machine.status == 0 else { throw Failure("cscli machines add: \(machine.stderr)") }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Starts the LAPI and waits until it answers HTTP.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = ["--net=/run/netns/\(namespace)", "--", Self.crowdsec, "-c", config, "-no-cs"]
        FileManager.default.createFile(atPath: directory + "/stdout.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/stdout.log"))
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        self.log = log
        guard let probed = try waitListening(namespace: namespace, address: "127.0.0.1", port: port, process: process)
        else { return }
        let said = (try? String(contentsOfFile: directory + "/stdout.log", encoding: .utf8)) ?? ""
        stop()
        throw Failure("the LAPI did not listen within 30 s (\(probed)): \(said.suffix(600))")
    }

    /// From the next `start()` on (call it stopped), the LAPI serves HTTPS only, with a new
    /// self-signed certificate for 127.0.0.1. Add what the test needs before: `cscli` and `curl`
    /// started by the test process failed their TLS handshakes with it here (the LAPI said "bad
    /// record MAC"), while `curl` from a shell in the same namespace and portcullisd's libcurl did
    /// not; not understood.
    public func serveTLS() throws {
        let made = try runProcess(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                "-keyout", directory + "/key.pem", "-out", certificate, "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ])
        guard made.status == 0 else { throw Failure("openssl req: \(made.stderr)") }
        let text = try String(contentsOfFile: config, encoding: .utf8)
        try text.replacingOccurrences(
            of: "    trusted_ips: [\"127.0.0.1\", \"::1\"]\n",
            with: "    trusted_ips: [\"127.0.0.1\", \"::1\"]\n    tls:\n      cert_file: \(certificate)\n"
                + "      key_file: \(directory)/key.pem\n"
        ).write(toFile: config, atomically: true, encoding: .utf8)
        tls = true
    }

    /// Stops the LAPI by its pid (the database stays: `start()` again resumes it).
    public func stop() {
        guard let process else { return }
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        try? log?.close()
        self.process = nil
    }

    /// Stops it and removes its directory.
    public func remove() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `cscli -c CONFIG ARGUMENTS` in the namespace.
    @discardableResult
    public func cscli(_ arguments: [String], timeout: Double = 120) throws -> ProcessResult {
        try runProcess(
            "/usr/bin/nsenter", ["--net=/run/netns/\(namespace)", "--", Self.cscli, "-c", config] + arguments,
            timeout: timeout)
    }

    /// A new bouncer's API key.
    public func bouncerKey(_ name: String) throws -> String {
        let result = try cscli(["bouncers", "add", name, "-o", "raw"])
        let key = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status == 0, !key.isEmpty else { throw Failure("cscli bouncers add: \(result.stderr)") }
        return key
    }

    /// A new machine with a password, for the alert push.
    public func addMachine(_ name: String, password: String) throws {
        let result = try cscli(["machines", "add", name, "--password", password, "-f", "/dev/null", "--force"])
        guard result.status == 0 else { throw Failure("cscli machines add \(name): \(result.stderr)") }
    }

    /// `cscli ... -o json` parsed.
    public func json(_ arguments: [String]) throws -> Any {
        let result = try cscli(arguments + ["-o", "json"])
        guard result.status == 0 else { throw Failure("cscli \(arguments.joined(separator: " ")): \(result.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8), options: [.fragmentsAllowed])
    }
}
