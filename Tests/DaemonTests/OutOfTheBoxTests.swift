// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

/// The configuration the package installs (etc/portcullis.toml, with etc/filter.d beside it as
/// /etc/portcullis/filter.d), as `portcullisd --check-config` finds it before the first start.
extension DaemonProcessTests {
    static let example =
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path + "/etc/portcullis.toml"

    @Test(
        "the installed example checks out before the first start: the interfaces of the default routes, the sshd jail on the journal with Portcullis's filter, the ban log's directory yet to be made"
    )
    func installedExampleChecksOut() throws {
        try withTestNetwork("ex") { network, _ in
            let logs = NSTemporaryDirectory() + "pc-example-\(getpid())/portcullis"
            defer { try? FileManager.default.removeItem(atPath: (logs as NSString).deletingLastPathComponent) }
            let check = [daemonPath, "--config", Self.example, "--check-config", "--ban-log", logs + "/bans.log"]
            var result = try network.run(in: network.receiver, check)
            #expect(result.status == 1 && result.stderr.contains("no default route"), "\(result.stderr)")

            try network.run(
                in: network.receiver, ["ip", "route", "add", "default", "via", "198.18.0.1", "dev", network.receiver])
            result = try network.run(in: network.receiver, check)
            #expect(result.status == 0, "\(result.stderr)")
            #expect(
                result.stdout.contains(
                    "would protect \(network.receiver) (no interface set; the default routes' "
                        + "interfaces: \(network.receiver) (IPv4))"), "\(result.stdout)")
            #expect(result.stdout.contains("_UID=0 SYSLOG_IDENTIFIER=sshd"), "the filter's match: \(result.stdout)")
            #expect(result.stdout.contains("configuration OK: 1 jail(s): sshd"), "\(result.stdout)")
            #expect(!FileManager.default.fileExists(atPath: logs), "the check makes no directory")

            try network.run(
                in: network.receiver,
                ["ip", "-6", "route", "add", "default", "via", "2001:2::1", "dev", network.receiver])
            result = try network.run(in: network.receiver, check)
            #expect(result.stdout.contains("interfaces: \(network.receiver) (IPv4, IPv6))"), "\(result.stdout)")
            // An interface given is the one protected, default route or not.
            result = try network.run(in: network.receiver, check + ["--interface", "lo"])
            #expect(result.stdout.contains("would protect lo (configured)"), "\(result.stdout)")
        }
    }
}
