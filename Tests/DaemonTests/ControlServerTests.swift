// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import PortcullisControl
import PortcullisSystem
import Synchronization
import Testing
import TestSupport

/// The control socket serves each peer with deadlines of its own (review N8).
@Suite("Control server")
struct ControlServerTests {
    /// A control server on a scratch socket, run on its own thread for `body`; stopped after.
    func withServer(
        streamer: @escaping @Sendable (ControlRequest, Int32) -> Bool, _ body: (String) throws -> Void
    ) throws {
        let path = ControlScratch.path()
        let server = try ControlServer(path: path, allowedGroup: nil) { request in
            var reply = ControlReply()
            if request.command == "status" {
                reply.message = "answered"
            }
            return reply
        }
        server.streamer = streamer
        let stop = Atomic<Bool>(false)
        let thread = try SystemThread.spawn { server.run(isStopping: { stop.load(ordering: .acquiring) }) }
        defer {
            stop.store(true, ordering: .releasing)
            thread.join()
            server.close()
        }
        try body(path)
    }

    /// A connected peer (nil when it cannot connect).
    func connect(_ path: String) -> Int32? {
        guard var address = UnixSocketAddress.of(path) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Sends a `list --json` request on `fd` and reads the reply line only (then never reads again).
    func askStreamAndStall(_ fd: Int32) -> Bool {
        let request = JSONOutput.line(ControlRequest(command: "list", format: "json")) + "\n"
        guard request.withCString({ send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }) > 0 else { return false }
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            if byte == 10 { return true }
        }
        return false
    }

    @Test(
        "a peer that never reads a big list --json stream and ten idle peers: another peer's status is answered meanwhile"
    )
    func stalledAndIdlePeers() throws {
        try withServer(
            streamer: { request, connection in
                guard request.command == "list" else { return false }
                var reply = ControlReply()
                reply.stream = true
                let header = JSONOutput.line(reply) + "\n"
                _ = header.withCString { send(connection, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                // A big listing: 256 MiB, far more than the socket buffers hold.
                let chunk = [UInt8](repeating: 0x20, count: 1 << 16)
                for _ in 0..<4096 {
                    guard
                        chunk.withUnsafeBytes({ send(connection, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }) > 0
                    else { break }
                }
                return true
            }
        ) { path in
            let stalled = try #require(connect(path))
            defer { close(stalled) }
            #expect(askStreamAndStall(stalled), "the stream's reply line")
            let idle = (0..<10).compactMap { _ in connect(path) }
            defer { for fd in idle { close(fd) } }
            #expect(idle.count == 10)
            let reply = try ControlClient.send(ControlRequest(command: "status"), to: path, timeoutMilliseconds: 10_000)
            #expect(reply.message == "answered")
        }
    }

    @Test(
        "more connections of one uid than it may hold at once: one more is told busy at once, and served once they go")
    func tooManyConnections() throws {
        let release = Atomic<Bool>(false)
        let held = Atomic<Int>(0)
        try withServer(
            streamer: { request, connection in
                guard request.command == "list" else { return false }
                var reply = ControlReply()
                reply.stream = true
                let header = JSONOutput.line(reply) + "\n"
                // Counted before the reply line goes: the client reads it, then counts.
                held.add(1, ordering: .releasing)
                _ = header.withCString { send(connection, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                while !release.load(ordering: .acquiring) { SystemClock.sleep(nanoseconds: 5_000_000) }
                return true
            }
        ) { path in
            var holders: [Int32] = []
            defer { for fd in holders { close(fd) } }
            for _ in 0..<ControlServer.connectionsPerUser {
                let fd = try #require(connect(path))
                holders.append(fd)
                #expect(askStreamAndStall(fd))
            }
            #expect(held.load(ordering: .acquiring) == ControlServer.connectionsPerUser)
            let busy = try ControlClient.send(ControlRequest(command: "status"), to: path, timeoutMilliseconds: 10_000)
            #expect(!busy.ok && busy.error?.hasPrefix("busy") == true, "\(busy)")
            release.store(true, ordering: .releasing)
            #expect(
                eventually(within: 10) {
                    (try? ControlClient.send(ControlRequest(command: "status"), to: path))?.message == "answered"
                })
        }
    }

    @Test("a request of 6 MB of nested brackets is refused before it is decoded (N19)")
    func nestedBrackets() throws {
        try withServer(streamer: { _, _ in false }) { path in
            let fd = try #require(connect(path))
            defer { close(fd) }
            let request = [UInt8](repeating: UInt8(ascii: "["), count: 6_000_000) + [10]
            var offset = 0
            while offset < request.count {
                let sent = request[offset...].withUnsafeBytes {
                    send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL))
                }
                guard sent > 0 else { break }
                offset += sent
            }
            var reply: [UInt8] = []
            var byte: UInt8 = 0
            while read(fd, &byte, 1) == 1, byte != 10 { reply.append(byte) }
            let text = String(decoding: reply, as: UTF8.self)
            #expect(text.contains("nested deeper than \(ControlServer.deepestNesting) levels"), "\(text)")
        }
        #expect(!ControlServer.nestsTooDeep(Array(#"{"command":"ban","addresses":["[[[[[[[[[[[[\"{{{{{{{{{"]}"#.utf8)))
    }
}
