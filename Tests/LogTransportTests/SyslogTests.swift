// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import LogTransport
import PortcullisSystem
import Testing
import TestSupport

@Suite("Syslog source")
struct SyslogTests {
    /// The line `datagram` becomes.
    func line(_ datagram: String) -> String? {
        var bytes = Array(datagram.utf8)
        var out = [UInt8](repeating: 0, count: 1024)
        let length = bytes.withUnsafeMutableBytes { input in
            out.withUnsafeMutableBytes { output in
                SyslogMessage.format(UnsafeRawBufferPointer(input), into: output.baseAddress!, capacity: output.count)
            }
        }
        return length.map { String(decoding: out[0..<$0], as: UTF8.self) }
    }

    @Test(
        "RFC 3164 and RFC 5424 messages become TAG[PID]: MESSAGE, as logger, rsyslog and syslog(3) send them",
        arguments: [
            ("<13>Dec  1 23:13:03 sshd[19883]: Failed password for root", "sshd[19883]: Failed password for root"),
            ("<13>Dec  1 23:13:03 vm nginx[7]: GET / 404", "nginx[7]: GET / 404"),
            ("<13>Dec 11 23:13:03 root: hello from 198.18.0.1", "root: hello from 198.18.0.1"),
            ("<38>Dec  1 23:13:03 host sshd: no pid", "sshd: no pid"),
            (
                "<13>2026-12-01T23:13:03.5+00:00 host sshd[5]: rsyslog's forward format",
                "sshd[5]: rsyslog's forward format"
            ),
            ("<86>sshd[4]: no time stamp\n", "sshd[4]: no time stamp"),
            (
                "<13>1 2026-12-01T23:13:03.547698+00:00 vm sshd 19884 - [timeQuality tzKnown=\"1\" isSynced=\"0\"] Failed x",
                "sshd[19884]: Failed x"
            ),
            ("<13>1 - vm app - - - hello", "app: hello"),
            ("<13>1 - - - - - - no app name", "-: no app name"),
            (
                "<13>1 - h app 9 ID [a b=\"]\\\"x\"][c] \u{FEFF}bom and two SD elements",
                "app[9]: bom and two SD elements"
            ),
            ("<13>1 - h app - - -", "app: "),
            ("no header at all", "-: no header at all"),
            ("<13>Dec  1 23:13:03 vm a message without a tag", "-: vm a message without a tag"),
            ("<999999>odd priority: kept", "priority: kept"),  // no PRI: "<999999>odd" read as a host name,
            ("<13>Dec  1 23:13:03 sshd[12: unclosed pid", "-: sshd[12: unclosed pid"),
        ])
    func formats(datagram: String, expected: String) {
        #expect(line(datagram) == expected)
    }

    @Test("a message longer than the line's room is refused, not cut")
    func tooLong() {
        var bytes = Array(("<13>sshd[1]: " + String(repeating: "x", count: 100)).utf8)
        var out = [UInt8](repeating: 0, count: 64)
        let length = bytes.withUnsafeMutableBytes { input in
            out.withUnsafeMutableBytes {
                SyslogMessage.format(UnsafeRawBufferPointer(input), into: $0.baseAddress!, capacity: $0.count)
            }
        }
        #expect(length == nil)
    }

    @Test(
        "routes: a jail reads its tags' lines (all without tags), whole, or the message alone for the built-in scanner")
    func routes() {
        func select(_ route: SyslogRoute, _ line: String) -> String? {
            var bytes = Array(line.utf8)
            return bytes.withUnsafeMutableBytes { buffer in
                route.select(UnsafeRawBufferPointer(buffer)).map { String(decoding: $0, as: UTF8.self) }
            }
        }
        let sshd = SyslogRoute(tags: ["sshd", "sshd-session"], messageOnly: false)
        #expect(select(sshd, "sshd[4]: Failed password") == "sshd[4]: Failed password")
        #expect(select(sshd, "sshd-session[4]: Failed password") == "sshd-session[4]: Failed password")
        #expect(select(sshd, "sshdx[4]: Failed password") == nil)
        #expect(select(sshd, "nginx: GET") == nil)
        let app = SyslogRoute(tags: ["app"], messageOnly: true)
        #expect(
            select(app, "app[9]: 2026-12-01 10:00:00 client 198.18.0.1 x") == "2026-12-01 10:00:00 client 198.18.0.1 x")
        #expect(select(app, "app: message") == "message")
        #expect(select(app, "app: ") == "")
        let all = SyslogRoute(tags: [], messageOnly: false)
        #expect(select(all, "-: anything") == "-: anything")
    }

    @Test("bad settings are refused in one line: a relative path, a UDP address off loopback, a bad tag")
    func settings() {
        var options = SyslogOptions()
        options.path = "relative.sock"
        #expect(throws: TransportError.self) { try options.validate() }
        options = SyslogOptions()
        options.udp = "198.18.0.1:514"
        #expect(throws: TransportError.self) { try options.validate() }
        options.udp = "127.0.0.1"
        #expect(throws: TransportError.self) { try options.validate() }
        options.udp = "[::1]:5514"
        // UDP names no sender: refused unless the operator says any local user may feed it.
        do {
            try options.validate()
            Issue.record("--syslog-udp accepted without --syslog-udp-any-sender")
        } catch {
            #expect("\(error)".contains("add --syslog-udp-any-sender") && !"\(error)".contains("\n"), "\(error)")
        }
        options.udpAnySender = true
        #expect(throws: Never.self) { try options.validate() }
        options.tags = ["ss hd"]
        #expect(throws: TransportError.self) { try options.validate() }
    }

    @Test(
        "logger --socket feeds the reader (RFC 3164 and 5424); a live reader's socket refuses a second, a dead one's is replaced; the socket goes at close"
    )
    func loggerFeedsTheSocket() throws {
        let directory = NSTemporaryDirectory() + "pc-syslog-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = SyslogOptions()
        options.path = directory + "/syslog.sock"
        let reader = try SyslogReader(options: options)
        #expect(throws: TransportError.self, "a live reader's socket") { try SyslogReader(options: options) }
        for arguments in [["-t", "sshd", "-i"], ["--rfc5424", "-t", "app"], ["--rfc3164", "-t", "app"]] {
            let result = try runProcess("/usr/bin/logger", ["--socket", options.path] + arguments + ["offence 1"])
            #expect(result.status == 0, "\(result.stderr)")
        }
        let batch = LineBatch()
        var got = 0
        let deadline = Date().addingTimeInterval(10)
        while got < 3 && Date() < deadline { got += try reader.wait(into: batch, timeoutMilliseconds: 100) }
        let lines = (0..<batch.count).map { String(decoding: batch.line($0), as: UTF8.self) }
        #expect(lines.count == 3 && lines[0].hasPrefix("sshd[") && lines[0].hasSuffix("]: offence 1"), "\(lines)")
        #expect(lines.dropFirst() == ["app: offence 1", "app: offence 1"], "\(lines)")
        #expect(reader.statistics.linesReceived == 3)
        reader.close()
        #expect(!FileManager.default.fileExists(atPath: options.path))

        // A crashed reader's socket (bound, then its process gone): replaced.
        let stale = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = try #require(UnixSocketAddress.of(options.path))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        close(stale)
        let again = try SyslogReader(options: options)
        again.close()
    }

    @Test(
        "a flood from a refused user takes no place in the socket's queue: a trusted non-blocking sender's messages all arrive, the flood is counted",
        .enabled(if: Privileges.runnable))
    func refusedFloodCrowdsOutNobody() throws {
        try Privileges.require()
        let directory = NSTemporaryDirectory() + "pc-syslog-flood-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = SyslogOptions()
        options.path = directory + "/syslog.sock"
        let reader = try SyslogReader(options: options)
        defer { reader.close() }
        #expect(reader.filtersInKernel)
        // nobody's logger sends 2,000 messages (blocking, as logger does) while nothing is read.
        // Before, the first max_dgram_qlen of them filled the queue and logger waited there for good.
        let flood = 2_000
        let lines = directory + "/flood.txt"
        try String(repeating: "client 198.18.77.1 exceeded request rate limit\n", count: flood)
            .write(toFile: lines, atomically: true, encoding: .utf8)
        chmod(lines, 0o644)
        let flooder = Process()
        flooder.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        flooder.arguments = [
            "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/logger", "--socket", options.path, "-t",
            "flood", "-f", lines,
        ]
        try flooder.run()
        defer { if flooder.isRunning { kill(flooder.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(60)
        while flooder.isRunning && Date() < deadline { usleep(10_000) }
        #expect(!flooder.isRunning, "the flood went through (dropped), not queued")
        #expect(reader.statistics.writersRefused == UInt64(flood))
        // A trusted sender that does not block: as many messages as the queue holds, all taken.
        let sender = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(sender) }
        var address = try #require(UnixSocketAddress.of(options.path))
        var refusedSends = 0
        let trusted = 8
        for number in 0..<trusted {
            let text = "<13>sshd[1]: client 198.18.77.\(number + 2) exceeded request rate limit"
            let sent = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(
                        sender, text, text.utf8.count, Int32(MSG_DONTWAIT), $0,
                        socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if sent < 0 { refusedSends += 1 }
        }
        #expect(refusedSends == 0, "no EAGAIN for the trusted sender")
        let batch = LineBatch()
        var got = 0
        while try reader.poll(into: batch) > 0 { got = batch.count }
        #expect(got == trusted)
        #expect(reader.statistics.linesReceived == UInt64(trusted))
    }
}
