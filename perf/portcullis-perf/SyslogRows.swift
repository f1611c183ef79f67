// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import LogTransport
import PortcullisSystem

/// The syslog source's row of the `transports` suite: a sender thread sends `--syslog-messages`
/// RFC 3164 datagrams (`<38>Dec  1 23:13:03 sshd[PID]: NUMBER LINE`, as `logger` does) to the
/// source's socket, blocking when its queue is full (lossless), while one reader receives them;
/// against a file reader tailing a file of the very lines the syslog reader makes, from its start,
/// in alternating rounds.
extension TransportsSuite {
    func syslogRow(
        _ row: (String, () throws -> Figure, String, () throws -> Figure) throws -> Void
    ) throws {
        let directory = scratch + "/pcperf-syslog-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var syslog = TransportConfiguration(kind: .syslog)
        syslog.syslog.path = directory + "/syslog.sock"
        let count = syslogMessages
        let digits = [UInt8]("0123456789abcdef".utf8)
        let messages: [[UInt8]] = (0..<count).map { number in
            var hex = [UInt8](repeating: 0x30, count: 16)
            var value = number
            for index in stride(from: 15, through: 0, by: -1) {
                hex[index] = digits[value & 15]
                value >>= 4
            }
            return Array("<38>Dec  1 23:13:03 sshd[\(1000 + number % 30000)]: ".utf8) + hex + Array(Self.suffix.utf8)
        }
        // The reference file holds the lines the syslog reader makes of them.
        var file = TransportConfiguration(kind: .file)
        file.file.path = directory + "/perf.log"
        file.file.startAtBeginning = true
        var text = Data()
        var line = [UInt8](repeating: 0, count: 1024)
        for message in messages {
            let length = message.withUnsafeBytes { datagram in
                line.withUnsafeMutableBytes {
                    SyslogMessage.format(datagram, into: $0.baseAddress!, capacity: $0.count)
                }
            }
            guard let length else { throw MeasurementError(description: "a syslog message did not fit its line") }
            text += line[0..<length] + [0x0A]
        }
        FileManager.default.createFile(atPath: file.file.path, contents: text)
        try row(
            "syslog socket 1→1 (\(count) messages)", { try Self.timedSyslog(syslog, messages: messages) },
            "file tail, same lines", { try Self.timedRead(file, lines: count) })
    }

    /// One round: a new reader receives what a sender thread sends. - Returns: its lines/s.
    private static func timedSyslog(_ configuration: TransportConfiguration, messages: [[UInt8]]) throws -> Figure {
        let start = SystemClock.monotonicNanoseconds()
        let reader = try configuration.makeReader()
        let path = configuration.syslog.path
        let sender = try SystemThread.spawn {
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            defer { close(fd) }
            guard var address = UnixSocketAddress.of(path) else { return }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard connected == 0 else { return }
            for message in messages {
                // Blocking: a full queue makes the sender wait, as syslog(3) does.
                if message.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) < 0 && errno != EINTR { return }
            }
        }
        // Closed before the sender is joined: a sender blocked on a reader gone sees its sends fail.
        defer {
            reader.close()
            sender.join()
        }
        let count = try readLines(reader, expected: messages.count)
        return figure(count: count, expected: messages.count, since: start)
    }
}
