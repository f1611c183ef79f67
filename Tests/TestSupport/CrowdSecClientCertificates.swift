// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Client certificates for a scratch Local API served over TLS: a test CA in its directory, and
/// certificates it signs with the OU the Local API tells bouncers and agents by.
extension CrowdSecLAPI {
    public static let bouncerOU = "bouncer-ou"
    public static let agentOU = "agent-ou"

    public var clientCA: String { directory + "/client-ca.pem" }

    /// From the next `start()` on (after `serveTLS()`, stopped), the LAPI verifies a client
    /// certificate when one is given (`VerifyClientCertIfGiven`) against `clientCA`, and takes it
    /// from a bouncer of OU `bouncer-ou` and an agent of OU `agent-ou`; an api_key or a password
    /// still works without one.
    public func verifyClientCertificates() throws {
        try makeClientCA()
        let text = try String(contentsOfFile: config, encoding: .utf8)
        let served = "      key_file: \(directory)/key.pem\n"
        guard text.contains(served) else { throw Failure("call serveTLS() first") }
        try text.replacingOccurrences(
            of: served,
            with: served + "      client_verification: VerifyClientCertIfGiven\n      ca_cert_path: \(clientCA)\n"
                + "      bouncers_allowed_ou: [\"\(Self.bouncerOU)\"]\n      agents_allowed_ou: [\"\(Self.agentOU)\"]\n"
        ).write(toFile: config, atomically: true, encoding: .utf8)
    }

    private func makeClientCA() throws {
        guard !FileManager.default.fileExists(atPath: clientCA) else { return }
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", directory + "/client-ca.key", "-out", clientCA, "-subj", "/CN=portcullis test CA",
        ])
    }

    /// A client certificate `NAME.pem` and its key `NAME.key` in the LAPI's directory, of CN
    /// `name` and OU `unit`, signed by the test CA.
    public func clientCertificate(_ name: String, unit: String) throws -> (cert: String, key: String) {
        try makeClientCA()
        let base = directory + "/" + name
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", base + ".key",
            "-out", base + ".csr", "-subj", "/CN=\(name)/OU=\(unit)",
        ])
        try openssl([
            "x509", "-req", "-in", base + ".csr", "-CA", clientCA, "-CAkey", directory + "/client-ca.key",
            "-CAcreateserial", "-days", "1", "-out", base + ".pem",
        ])
        return (base + ".pem", base + ".key")
    }

    private func openssl(_ arguments: [String]) throws {
        let made = try runProcess("/usr/bin/openssl", arguments)
        guard made.status == 0 else { throw Failure("openssl \(arguments[0]): \(made.stderr)") }
    }
}
