// SPDX-License-Identifier: Apache-2.0
import CLab
import CPortcullis
import CPortcullisNATS
import Foundation
import Glibc
import PortcullisSystem
import Synchronization
import Testing

/// A small fleet's network for one test: a hub namespace with a bridge (198.18.10.254, where the
/// NATS server listens), one namespace per host (198.18.10.1, .2...) joined to it by a veth pair
/// whose host end bears the host's name, and an attacker namespace (198.18.10.100). Removed by
/// `remove()`, with everything in them.
public struct FleetNetwork: Sendable {
    public let hub: String
    public let hosts: [String]
    public let attacker: String
    public static let hubAddress = "198.18.10.254"
    public static let attackerAddress = "198.18.10.100"
    public static func hostAddress(_ index: Int) -> String { "198.18.10.\(index + 1)" }
    /// The host ends' MAC addresses (the attacker's frames are sent to one).
    public static func hostMAC(_ index: Int) -> String { String(format: "02:00:c6:12:0a:%02x", index + 1) }
    public static let attackerMAC = "02:00:c6:12:0a:64"

    /// Namespaces (and the interfaces in them) named `pct<pid><tag>h`, `...<tag>0`, `...<tag>1`...
    public init(_ tag: String, hosts count: Int) throws {
        TestNetwork.sweepLeftovers()
        let base = "\(TestNetwork.prefix)\(getpid())\(tag)"
        hub = base + "h"
        hosts = (0..<count).map { base + String($0) }
        attacker = base + "x"
        precondition(hub.utf8.count <= 14, "interface names are at most 15 bytes (a peer adds one)")
        do {
            try setUp()
        } catch {
            remove()
            throw error
        }
    }

    private func setUp() throws {
        try check("ip", "netns", "add", hub)
        try check("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        try check("ip", "-n", hub, "addr", "add", Self.hubAddress + "/24", "dev", "br0")
        try check("ip", "-n", hub, "link", "set", "lo", "up")
        try check("ip", "-n", hub, "link", "set", "br0", "up")
        for (index, name) in (hosts + [attacker]).enumerated() {
            let address = name == attacker ? Self.attackerAddress : Self.hostAddress(index)
            try check("ip", "netns", "add", name)
            let mac = name == attacker ? Self.attackerMAC : Self.hostMAC(index)
            try check(
                "ip", "link", "add", name, "address", mac, "netns", name, "type", "veth", "peer", "name", name + "p",
                "netns", hub)
            try check("ip", "-n", hub, "link", "set", name + "p", "master", "br0")
            try check("ip", "-n", hub, "link", "set", name + "p", "up")
            try check("ip", "-n", name, "addr", "add", address + "/24", "dev", name)
            try check("ip", "-n", name, "link", "set", "lo", "up")
            try check("ip", "-n", name, "link", "set", name, "up")
        }
    }

    /// Deletes every namespace (the veths, the bridge and any XDP program go with them).
    public func remove() {
        for namespace in hosts + [attacker, hub] { _ = try? shell("ip", "netns", "del", namespace) }
    }

    /// Runs a command inside `namespace` (network namespace only: the BPF pins stay the host's).
    @discardableResult
    public func run(in namespace: String, _ arguments: [String], timeout: Double = 60) throws -> ProcessResult {
        try runProcess("/usr/bin/nsenter", ["--net=/run/netns/\(namespace)", "--"] + arguments, timeout: timeout)
    }

    /// The testbed's attack from the attacker namespace to host `index`: `portcullis-testbed flood`
    /// (its packet engine) sending `rate` frames a second for `seconds` from one spoofed source,
    /// 198.18.0.1. - Returns: the frames it says it sent.
    public func attack(_ index: Int, testbed: String, rate: Int, seconds: Double) throws -> Int {
        let result = try run(
            in: attacker,
            [
                testbed, "flood", "--engine", "packet", "--interface", attacker, "--source-mac", Self.attackerMAC,
                "--server-mac", Self.hostMAC(index), "--attackers-v4", "1", "--rate", String(rate), "--valid-rate",
                "0", "--duration", String(seconds),
            ])
        guard result.status == 0, let sent = result.stdout.firstMatch(of: /"invalid_v4":(\d+)/).flatMap({ Int($0.1) })
        else {
            throw TestNetworkError(
                command: "portcullis-testbed flood to host \(index)", output: result.stdout + result.stderr)
        }
        return sent
    }

    private func check(_ arguments: String...) throws {
        let result = try runProcess("/usr/bin/env", arguments)
        guard result.status == 0 else {
            throw TestNetworkError(command: arguments.joined(separator: " "), output: result.stderr)
        }
    }
}

/// A real NATS server with JetStream (Debian's `nats-server -js`) for one test, in a namespace on
/// an address of it, with a scratch store and configuration; started, killed and started again by
/// its pid.
public final class NATSServer: @unchecked Sendable {
    public static let path = "/usr/sbin/nats-server"
    /// Whether Debian's nats-server is installed; in CI its absence fails the test.
    public static func available() -> Bool {
        if FileManager.default.isExecutableFile(atPath: path) { return true }
        if Privileges.inCI { Issue.record("nats-server is missing: tools/install-deps installs Debian's nats-server") }
        return false
    }

    public let namespace: String
    public let address: String
    public let port: Int
    public let directory: String
    public var url: String { "nats://\(address):\(port)" }
    private var process: Process?

    /// - Parameters:
    ///   - configuration: more of the server's configuration (accounts, users, a cluster), or none.
    ///   - name: told apart from the other servers of the namespace (its directory).
    public init(
        namespace: String, address: String, port: Int = 4222, configuration: String = "", name: String = ""
    ) throws {
        self.namespace = namespace
        self.address = address
        self.port = port
        directory = NSTemporaryDirectory() + "pc-nats-\(getpid())-\(namespace)\(name)"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory + "/store", withIntermediateDirectories: true)
        try """
        listen: "\(address):\(port)"
        jetstream {
          store_dir: "\(directory)/store"
          max_memory_store: 64MB
          max_file_store: 1GB
        }
        \(configuration)
        """.write(toFile: directory + "/server.conf", atomically: true, encoding: .utf8)
    }

    /// Copies `path` next to the server's configuration (for an `include` of it there).
    public func add(file path: String) throws {
        let target = directory + "/" + URL(fileURLWithPath: path).lastPathComponent
        try? FileManager.default.removeItem(atPath: target)
        try FileManager.default.copyItem(atPath: path, toPath: target)
    }

    /// Starts the server (its store kept from an earlier run) and waits until it accepts.
    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = [
            "--net=/run/netns/\(namespace)", "--", Self.path, "-c", directory + "/server.conf", "-l",
            directory + "/server.log",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        guard try waitListening(namespace: namespace, address: address, port: port, process: process) != nil else {
            return
        }
        let said = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
        kill()
        throw TestNetworkError(command: "nats-server", output: "did not listen within 30 s: \(said.suffix(600))")
    }

    /// Whether it was started and runs.
    public var isRunning: Bool { process?.isRunning ?? false }

    /// Kills the server by its pid (SIGKILL: no goodbye to the clients), its store kept.
    public func kill() {
        guard let process else { return }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    /// Empties its store (call it killed): a server that lost its disk.
    public func wipeStore() throws {
        try FileManager.default.removeItem(atPath: directory + "/store")
        try FileManager.default.createDirectory(atPath: directory + "/store", withIntermediateDirectories: true)
    }

    /// Kills it and removes its directory.
    public func remove() {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Puts `value` under `key` of `bucket` as a client of the server would (a test's own writes:
    /// a malformed value, a key that is not an address). - Returns: what failed, or nil.
    public func put(
        bucket: String, key: String, value: String, user: String? = nil, password: String? = nil
    ) throws -> String? {
        try withJetStream(user: user, password: password) { jetStream in
            var store: OpaquePointer?
            var status = js_KeyValue(&store, jetStream, bucket)
            guard status == NATS_OK else { return "bucket: " + String(cString: natsStatus_GetText(status)) }
            defer { kvStore_Destroy(store) }
            var revision: UInt64 = 0
            status = kvStore_PutString(&revision, store, key, value)
            return status == NATS_OK ? nil : "put: " + String(cString: natsStatus_GetText(status))
        }
    }

    /// Puts every one of `entries` under its key of `bucket` on one connection (a host's flood).
    /// - Returns: the first failure, or nil.
    public func put(bucket: String, entries: [(key: String, value: String)]) throws -> String? {
        try withJetStream { jetStream in
            var store: OpaquePointer?
            let status = js_KeyValue(&store, jetStream, bucket)
            guard status == NATS_OK else { return "bucket: " + String(cString: natsStatus_GetText(status)) }
            defer { kvStore_Destroy(store) }
            for entry in entries {
                var revision: UInt64 = 0
                let put = kvStore_PutString(&revision, store, entry.key, entry.value)
                if put != NATS_OK { return "put \(entry.key): " + String(cString: natsStatus_GetText(put)) }
            }
            return nil
        }
    }

    /// Makes `bucket` as the daemons would, but taking values of at most `maxValueSize` bytes (a
    /// larger put is rejected by the server). - Returns: what failed, or nil.
    public func create(bucket: String, maxValueSize: Int32) throws -> String? {
        try withJetStream { jetStream in
            var config = kvConfig()
            kvConfig_Init(&config)
            var store: OpaquePointer?
            let status = bucket.withCString { name in
                config.Bucket = name
                config.History = 1
                config.MaxValueSize = maxValueSize
                config.StorageType = js_FileStorage
                return js_CreateKeyValue(&store, jetStream, &config)
            }
            if let store { kvStore_Destroy(store) }
            return status == NATS_OK ? nil : "create: " + String(cString: natsStatus_GetText(status))
        }
    }

    /// Runs `body` with a JetStream context of a connection to the server made from its namespace
    /// (this process reaches the address by entering it for the connection), closed after.
    /// - Returns: what failed, or `body`'s answer.
    private func withJetStream(
        user: String? = nil, password: String? = nil, _ body: @escaping @Sendable (OpaquePointer) -> String?
    ) throws -> String? {
        let url = self.url
        return try inNamespace {
            var connection: OpaquePointer?
            var options: OpaquePointer?
            natsOptions_Create(&options)
            defer { natsOptions_Destroy(options) }
            natsOptions_SetURL(options, url)
            if let user { natsOptions_SetUserInfo(options, user, password) }
            var status = natsConnection_Connect(&connection, options)
            guard status == NATS_OK else { return "connect: " + String(cString: natsStatus_GetText(status)) }
            defer { natsConnection_Destroy(connection) }
            var jetStream: OpaquePointer?
            status = natsConnection_JetStream(&jetStream, connection, nil)
            guard status == NATS_OK, let jetStream else {
                return "jetstream: " + String(cString: natsStatus_GetText(status))
            }
            defer { jsCtx_Destroy(jetStream) }
            return body(jetStream)
        }
    }

    /// Runs `body` on a thread that entered the server's network namespace (setns), so that its
    /// sockets are made there.
    private func inNamespace<R: Sendable>(_ body: @escaping @Sendable () -> R) throws -> R {
        let path = "/run/netns/\(namespace)"
        let result = Mutex<R?>(nil)
        let failure = Mutex<String?>(nil)
        let thread = try SystemThread.spawn {
            let entered = clab_enter_net_namespace(path)
            guard entered == 0 else {
                failure.withLock { $0 = "setns \(path): errno \(-entered)" }
                return
            }
            let value = body()
            result.withLock { $0 = value }
        }
        thread.join()
        if let failure = failure.withLock({ $0 }) { throw TestNetworkError(command: "setns", output: failure) }
        return result.withLock { $0 }!
    }
}
