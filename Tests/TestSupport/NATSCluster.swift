// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc

/// Clustered NATS servers with JetStream (Debian's nats-server) for one test, in one namespace on
/// one address, as docs/fleet.md's recipe has them: server `n0`, `n1`... listening for clients on
/// 4222, 4223..., for routes on 6222, 6223... (each route with the cluster's user and password),
/// their monitoring on 8222, 8223.... Killed and started again one by one by pid; removed whole.
public final class NATSCluster: @unchecked Sendable {
    public let servers: [NATSServer]
    public let namespace: String
    public let address: String
    public static let routeUser = "route"
    public static let routePassword = "portcullis-route-secret"

    public init(namespace: String, address: String, count: Int = 3) throws {
        self.namespace = namespace
        self.address = address
        var servers: [NATSServer] = []
        do {
            for index in 0..<count {
                let routes = (0..<count).filter { $0 != index }.map {
                    "\"nats-route://\(Self.routeUser):\(Self.routePassword)@\(address):\(6222 + $0)\""
                }
                servers.append(
                    try NATSServer(
                        namespace: namespace, address: address, port: 4222 + index,
                        configuration: """
                            server_name: "n\(index)"
                            http: "\(address):\(8222 + index)"
                            cluster {
                              name: "portcullis"
                              listen: "\(address):\(6222 + index)"
                              authorization {
                                user: "\(Self.routeUser)"
                                password: "\(Self.routePassword)"
                              }
                              routes: [\(routes.joined(separator: ", "))]
                            }
                            """, name: "n\(index)"))
            }
        } catch {
            for server in servers { server.remove() }
            throw error
        }
        self.servers = servers
    }

    /// The client URLs, one a server.
    public var urls: [String] { servers.map(\.url) }

    /// Which server a URL (`nats://ADDRESS:PORT`, as a host's status names it) is.
    public func index(of url: String) -> Int? {
        servers.firstIndex { $0.url == url }
    }

    /// Starts every server, and waits until JetStream's meta group has a leader every server knows.
    public func start() throws {
        for server in servers { try server.start() }
        guard waitForMetaLeader(within: 30) else {
            throw TestNetworkError(command: "nats-server cluster", output: "no JetStream meta leader within 30 s")
        }
    }

    /// Starts server `index` again (its store kept) and waits until it knows the meta leader.
    public func restart(_ index: Int) throws {
        try servers[index].start()
        guard waitForMetaLeader(within: 30) else {
            throw TestNetworkError(command: "nats-server n\(index)", output: "did not rejoin the cluster within 30 s")
        }
    }

    /// Kills every server by its pid and removes their directories.
    public func remove() {
        for server in servers { server.remove() }
    }

    /// Server `index`'s monitoring answer to `path` (`/jsz?...`), parsed; nil when it does not answer.
    public func monitor(_ index: Int, _ path: String) -> [String: Any]? {
        guard servers[index].isRunning,
            let result = try? runProcess(
                "/usr/bin/nsenter",
                [
                    "--net=/run/netns/\(namespace)", "--", "/usr/bin/curl", "-s", "--max-time", "2",
                    "http://\(address):\(8222 + index)\(path)",
                ], timeout: 10),
            result.status == 0
        else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any]
    }

    /// Whether every running server names the same meta leader, within `seconds`.
    public func waitForMetaLeader(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let leaders = servers.indices.filter { servers[$0].isRunning }.map { index -> String in
                let meta = monitor(index, "/jsz")?["meta_cluster"] as? [String: Any]
                return meta?["leader"] as? String ?? ""
            }
            if let first = leaders.first, !first.isEmpty, leaders.allSatisfy({ $0 == first }) { return true }
            usleep(100_000)
        }
        return false
    }

    /// The stream's details as server `index` sees them (its `cluster` names the leader and replicas).
    public func stream(_ name: String, on index: Int) -> [String: Any]? {
        let accounts = monitor(index, "/jsz?accounts=true&streams=true")?["account_details"] as? [[String: Any]]
        for account in accounts ?? [] {
            for stream in account["stream_detail"] as? [[String: Any]] ?? [] where stream["name"] as? String == name {
                return stream
            }
        }
        return nil
    }

    /// The server that leads `stream` (as the running servers see it), when one does.
    public func streamLeader(_ stream: String) -> Int? {
        for index in servers.indices where servers[index].isRunning {
            let cluster = self.stream(stream, on: index)?["cluster"] as? [String: Any]
            if let leader = cluster?["leader"] as? String, leader.hasPrefix("n"), let found = Int(leader.dropFirst()),
                servers.indices.contains(found), servers[found].isRunning
            {
                return found
            }
        }
        return nil
    }

    /// Whether `stream` has a leader whose replicas are all current (a server back has caught up),
    /// within `seconds`.
    public func waitForStream(_ stream: String, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let leader = streamLeader(stream),
                let cluster = self.stream(stream, on: leader)?["cluster"] as? [String: Any],
                let replicas = cluster["replicas"] as? [[String: Any]],
                replicas.count == servers.count - 1,
                replicas.allSatisfy({ ($0["current"] as? NSNumber)?.boolValue == true })
            {
                return true
            }
            usleep(100_000)
        }
        return false
    }
}
