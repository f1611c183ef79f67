// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import PortcullisSystem
import Testing
import TestSupport

/// portcullisd under a service manager: what it says on `$NOTIFY_SOCKET` (sd_notify, as systemd
/// reads it for `Type=notify`) and the syslog levels it gives its lines when its output is the
/// journal (`$JOURNAL_STREAM`). A datagram socket of the test stands in for systemd.
@Suite("portcullisd under systemd", .enabled(if: Privileges.runnable), .serialized)
struct ServiceManagerTests {
    /// The service manager's end: a datagram socket bound to a scratch path.
    final class NotifySocket {
        let path = NSTemporaryDirectory() + "pc-notify-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
        let fd: Int32

        init() throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            try #require(fd >= 0)
            var address = try #require(UnixSocketAddress.of(path))
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            try #require(bound == 0, "bind \(path): \(String(cString: strerror(errno)))")
        }

        /// The next message, or nil after `seconds` without one.
        func next(within seconds: Double) -> String? {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, Int32(max(seconds, 0) * 1000)) == 1 else { return nil }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &buffer, buffer.count, 0)
            return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : nil
        }

        /// Messages until one contains `state` (which is returned), skipping the watchdog's.
        func wait(for state: String, within seconds: Double = 30) -> String? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let message = next(within: deadline.timeIntervalSinceNow) else { return nil }
                if message.split(separator: "\n").contains(Substring(state)) { return message }
            }
            return nil
        }

        deinit {
            close(fd)
            unlink(path)
        }
    }

    func start(
        _ network: TestNetwork, _ scratch: ScratchPinDirectory, _ transport: TransportScratch,
        environment: [String: String]
    ) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments =
            [
                "--net=/run/netns/\(network.receiver)", "--", Products.directory + "/portcullisd",
                "--interface", network.receiverInterface, "--pin-dir", scratch.path,
                "--control", ControlScratch.path(),
            ] + transport.arguments("shm")
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return (process, output)
    }

    func stop(_ process: Process) { stopDaemonProcess(process) }

    @Test(
        "READY=1 once it reads, WATCHDOG=1 within each half watchdog interval, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1"
    )
    func notifications() throws {
        try withTestNetwork("n") { network, scratch in
            let manager = try NotifySocket()
            let transport = TransportScratch()
            defer { transport.remove() }
            let (daemon, _) = try start(
                network, scratch, transport, environment: ["NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "1000000"])
            defer { stop(daemon) }
            let ready = try #require(manager.wait(for: "READY=1"), "READY=1 within 30 s")
            #expect(ready.contains("STATUS=protecting \(network.receiverInterface) with 1 jail(s): default"))
            // A 1 s watchdog: a keep-alive every 0.5 s at most, so at least 3 in 2 s.
            var keepAlives = 0
            let deadline = Date().addingTimeInterval(2)
            while Date() < deadline, let message = manager.next(within: deadline.timeIntervalSinceNow) {
                if message == "WATCHDOG=1" { keepAlives += 1 }
            }
            #expect(keepAlives >= 3, "\(keepAlives) keep-alives in 2 s with WATCHDOG_USEC=1000000")
            kill(daemon.processIdentifier, SIGHUP)
            #expect(manager.wait(for: "RELOADING=1", within: 10) != nil, "RELOADING=1 after SIGHUP")
            #expect(manager.wait(for: "READY=1", within: 10) != nil, "READY=1 after the reload")
            kill(daemon.processIdentifier, SIGTERM)
            #expect(manager.wait(for: "STOPPING=1", within: 10) != nil, "STOPPING=1 after SIGTERM")
        }
    }

    @Test("output that is the journal (JOURNAL_STREAM names it) carries syslog levels: <6> for information")
    func journalLevels() throws {
        try withTestNetwork("j") { network, scratch in
            // $JOURNAL_STREAM names the pipe the daemon's stdout and stderr are: as systemd's would.
            let manager = try NotifySocket()
            let transport = TransportScratch()
            defer { transport.remove() }
            let output = Pipe()
            var status = stat()
            try #require(fstat(output.fileHandleForWriting.fileDescriptor, &status) == 0)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments =
                [
                    "--net=/run/netns/\(network.receiver)", "--", Products.directory + "/portcullisd",
                    "--interface", network.receiverInterface, "--pin-dir", scratch.path, "--control", "none",
                ] + transport.arguments("shm")
            process.environment = ProcessInfo.processInfo.environment.merging([
                "JOURNAL_STREAM": "\(status.st_dev):\(status.st_ino)", "NOTIFY_SOCKET": manager.path,
            ]) { $1 }
            process.standardOutput = output
            process.standardError = output
            try process.run()
            #expect(manager.wait(for: "READY=1") != nil)
            stop(process)
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let lines = text.split(separator: "\n")
            #expect(!lines.isEmpty)
            #expect(lines.allSatisfy { $0.hasPrefix("<6>portcullisd: ") }, "\(text)")
        }
    }
}
