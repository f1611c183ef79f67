// SPDX-License-Identifier: Apache-2.0
import Foundation

/// Two network namespaces joined by a veth pair, made for one test and removed by `remove()`:
/// `sender` (198.18.0.1, .2 / 2001:2::1, ::2) and `receiver` (198.18.0.254 / 2001:2::fe).
/// Only benchmarking-range addresses are used; neighbours are static, so no ARP/ND is needed and
/// every datagram sent reaches the receiver's XDP program.
public struct TestNetwork: Sendable {
    public let sender: String
    public let receiver: String
    /// Interface names equal the namespace names.
    public var senderInterface: String { sender }
    public var receiverInterface: String { receiver }

    public static let senderAddresses4 = ["198.18.0.1", "198.18.0.2"]
    public static let senderAddresses6 = ["2001:2::1", "2001:2::2"]
    public static let receiverAddress4 = "198.18.0.254"
    public static let receiverAddress6 = "2001:2::fe"
    static let prefix = "pct"

    /// Creates the namespaces; on any failure removes what it made and throws.
    public init(_ tag: String) throws {
        Self.sweepLeftovers()
        // The tag says which test made it; the number keeps two networks of one process apart
        // even when their tests share a tag.
        let number = ScratchNumber.next()
        sender = "\(Self.prefix)\(getpid())\(tag)\(number)s"
        receiver = "\(Self.prefix)\(getpid())\(tag)\(number)r"
        precondition(sender.utf8.count <= 15, "interface names are at most 15 bytes")
        do {
            try setUp()
        } catch {
            remove()
            throw error
        }
    }

    private func setUp() throws {
        let senderMAC = "02:00:c6:12:00:01"
        let receiverMAC = "02:00:c6:12:00:fe"
        try check("ip", "netns", "add", sender)
        try check("ip", "netns", "add", receiver)
        try check(
            "ip", "link", "add", sender, "address", senderMAC, "netns", sender, "type", "veth",
            "peer", "name", receiver, "address", receiverMAC, "netns", receiver)
        for address in Self.senderAddresses4 {
            try check("ip", "-n", sender, "addr", "add", address + "/24", "dev", sender)
        }
        for address in Self.senderAddresses6 {
            try check("ip", "-n", sender, "addr", "add", address + "/64", "dev", sender, "nodad")
        }
        try check("ip", "-n", receiver, "addr", "add", Self.receiverAddress4 + "/24", "dev", receiver)
        try check("ip", "-n", receiver, "addr", "add", Self.receiverAddress6 + "/64", "dev", receiver, "nodad")
        for namespace in [sender, receiver] {
            try check("ip", "-n", namespace, "link", "set", "lo", "up")
            try check("ip", "-n", namespace, "link", "set", namespace, "up")
        }
        try check(
            "ip", "-n", sender, "neigh", "add", Self.receiverAddress4, "lladdr", receiverMAC, "dev", sender, "nud",
            "permanent")
        try check(
            "ip", "-n", sender, "neigh", "add", Self.receiverAddress6, "lladdr", receiverMAC, "dev", sender, "nud",
            "permanent")
    }

    /// Deletes both namespaces (the veth pair and any XDP program on it go with them).
    public func remove() {
        for namespace in [sender, receiver] { _ = try? shell("ip", "netns", "del", namespace) }
    }

    /// Runs a command inside `namespace` with only the network namespace switched (`nsenter`), so
    /// the BPF filesystem and its pins stay the host's (`ip netns exec` would remount /sys).
    @discardableResult
    public func run(in namespace: String, _ arguments: [String], timeout: Double = 60) throws -> ProcessResult {
        try runProcess("/usr/bin/nsenter", ["--net=/run/netns/\(namespace)", "--"] + arguments, timeout: timeout)
    }

    /// Sends `count` UDP datagrams (payload "B") from `source` in the sender namespace to the
    /// receiver. - Returns: how many `sendto` calls succeeded.
    public func sendUDP(from source: String, count: Int) throws -> Int {
        let destination = source.contains(":") ? Self.receiverAddress6 : Self.receiverAddress4
        let script = """
            import socket, sys
            src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
            family = socket.AF_INET6 if ':' in src else socket.AF_INET
            s = socket.socket(family, socket.SOCK_DGRAM)
            s.bind((src, 0))
            sent = 0
            for _ in range(n):
                sent += s.sendto(b'B', (dst, 9)) == 1
            print(sent)
            """
        let result = try run(in: sender, ["python3", "-c", script, source, destination, String(count)])
        guard result.status == 0, let sent = Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw TestNetworkError(command: "send UDP from \(source)", output: result.stderr)
        }
        return sent
    }

    /// Removes namespaces left by test processes that died before cleaning up.
    static func sweepLeftovers() {
        guard let list = try? shell("ip", "netns", "list") else { return }
        for line in list.stdout.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix(prefix) else { continue }
            let digits = name.dropFirst(prefix.count).prefix { $0.isNumber }
            if let pid = Int32(digits), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
                _ = try? shell("ip", "netns", "del", name)
            }
        }
    }

    private func check(_ arguments: String...) throws {
        let result = try runProcess("/usr/bin/env", arguments)
        guard result.status == 0 else {
            throw TestNetworkError(command: arguments.joined(separator: " "), output: result.stderr)
        }
    }
}

/// Runs `body` as root with a fresh `TestNetwork` and scratch pin directory, removing both after it
/// whatever happens.
public func withTestNetwork<R>(_ tag: String, _ body: (TestNetwork, ScratchPinDirectory) throws -> R) throws -> R {
    try Privileges.require()
    let network = try TestNetwork(tag)
    let scratch = ScratchPinDirectory("net-\(tag)")
    defer {
        network.remove()
        scratch.remove()
    }
    return try body(network, scratch)
}

public struct TestNetworkError: Error, CustomStringConvertible {
    public let command: String
    public let output: String
    public init(command: String, output: String) {
        self.command = command
        self.output = output
    }
    public var description: String { "\(command) failed: \(output)" }
}
