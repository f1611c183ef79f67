// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

/// The systemd unit (etc/systemd/portcullisd.service) as `systemd-analyze` judges it, offline: no
/// systemd needs to run. The package built from it is checked by `tools/package --check`, which
/// tools/test runs after the release build.
@Suite("systemd unit")
struct ServiceUnitTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let unit = repository + "/etc/systemd/portcullisd.service"
    static let analyze = "/usr/bin/systemd-analyze"

    /// systemd-analyze is Debian's systemd package; outside CI a machine without it skips.
    static var runnable: Bool { FileManager.default.isExecutableFile(atPath: analyze) || Privileges.inCI }

    @Test("systemd-analyze security --offline=true rates the unit's exposure 3.0 or less", .enabled(if: runnable))
    func exposure() throws {
        let result = try runProcess(Self.analyze, ["security", "--offline=true", "--no-pager", Self.unit])
        let output = result.stdout + result.stderr
        // "→ Overall exposure level for portcullisd.service: 2.5 OK"
        let line = try #require(
            output.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(output)")
        let score = try #require(
            line.split(separator: ":").last?.split(separator: " ").first.flatMap { Double($0) }, "\(line)")
        #expect(score <= 3.0, "exposure \(score): \(line)")
    }

    @Test("the unit keeps the choices BUILD.md explains", .enabled(if: runnable))
    func hardening() throws {
        let text = try String(contentsOfFile: Self.unit, encoding: .utf8)
        let settings = Set(text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map(String.init))
        for setting in [
            "Type=notify", "NotifyAccess=main", "ExecReload=/usr/bin/portcullis reload", "Restart=on-failure",
            "RuntimeDirectory=portcullis", "StateDirectory=portcullis", "NoNewPrivileges=yes",
            "ProtectSystem=strict", "ProtectKernelTunables=yes", "PrivateTmp=yes", "ProtectHome=yes",
            "ExecStartPre=+/bin/mkdir -p -m 0700 /sys/fs/bpf/portcullis /sys/fs/bpf/xdp",
            "BindPaths=-/sys/fs/bpf/portcullis -/sys/fs/bpf/xdp",
            "PrivateDevices=yes", "MemoryDenyWriteExecute=yes",
            "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_ADMIN CAP_CHOWN",
            "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
            "ExecStartPre=/usr/sbin/portcullisd --config /etc/portcullis/portcullis.toml --check-config",
        ] {
            #expect(settings.contains(setting), "\(setting) is not in the unit")
        }
    }
}
