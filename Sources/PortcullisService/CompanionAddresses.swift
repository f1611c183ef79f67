// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon

/// The companions that could lift a ban (the fleet's NATS servers, CrowdSec's Local API) always
/// pass the filter: their addresses join the daemon's allowlist, so the driver's allowlist passes
/// them whatever a ban covers (a forged 0.0.0.0/0 a list let through, a /24 around them), and no
/// jail bans them. Resolved at the start and at each reload (a name by DNS: each of its addresses).
enum CompanionAddresses {
    /// The host of a server's or an API's URL: `nats://user:password@host:4222`, `tls://[2001:db8::1]:4222`,
    /// `host:4222`, `http://127.0.0.1:8080/` give `host`, `2001:db8::1`, `host`, `127.0.0.1`.
    static func host(of url: String) -> String? {
        var rest = Substring(url)
        if let scheme = rest.firstRange(of: "://") { rest = rest[scheme.upperBound...] }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            rest = rest[rest.index(after: rest.startIndex)..<close]
        } else if rest.filter({ $0 == ":" }).count == 1, let colon = rest.firstIndex(of: ":") {
            rest = rest[..<colon]
        }
        return rest.isEmpty ? nil : String(rest)
    }

    /// `host`'s addresses: itself when it is one, else what the resolver gives (none: it failed).
    static func resolve(_ host: String) -> [String] {
        var allowlist = Allowlist.none
        if (try? allowlist.add(host)) != nil { return [host] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var next = list
        while let info = next {
            next = info.pointee.ai_next
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard let address = info.pointee.ai_addr else { continue }
            let made: UnsafePointer<CChar>?
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                made = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                    withUnsafePointer(to: inet.pointee.sin_addr) {
                        inet_ntop(AF_INET, $0, &text, socklen_t(text.count))
                    }
                }
            case AF_INET6:
                made = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { inet in
                    withUnsafePointer(to: inet.pointee.sin6_addr) {
                        inet_ntop(AF_INET6, $0, &text, socklen_t(text.count))
                    }
                }
            default: made = nil
            }
            if made != nil, !addresses.contains(String(cString: text)) { addresses.append(String(cString: text)) }
        }
        return addresses
    }

    /// `loaded`'s daemon configuration with the companions' addresses allowed, and a note saying
    /// which (or which name did not resolve).
    static func allowing(_ loaded: LoadedConfiguration) -> DaemonConfiguration {
        var configuration = loaded.daemon
        var urls: [(what: String, url: String)] = (loaded.fleet?.settings.servers ?? []).map { ("NATS", $0) }
        if let bouncer = loaded.crowdsec?.bouncer { urls.append(("CrowdSec's Local API", bouncer.connection.url)) }
        if let alerts = loaded.crowdsec?.alerts, alerts.connection.url != loaded.crowdsec?.bouncer?.connection.url {
            urls.append(("CrowdSec's Local API", alerts.connection.url))
        }
        guard !urls.isEmpty else { return configuration }
        var allowed: [String] = []
        var unresolved: [String] = []
        for (what, url) in urls {
            guard let host = host(of: url) else { continue }
            let addresses = resolve(host)
            if addresses.isEmpty { unresolved.append(host) }
            for address in addresses where (try? configuration.allowlist.add(address)) != nil {
                allowed.append("\(what) \(address)" + (address == host ? "" : " (\(host))"))
            }
        }
        if !allowed.isEmpty {
            configuration.notes.append(
                "the companions pass the filter whatever is banned (the driver's allowlist): "
                    + allowed.joined(separator: ", "))
        }
        if !unresolved.isEmpty {
            configuration.notes.append(
                "cannot resolve \(unresolved.joined(separator: ", ")): a ban may cut this host off from it; "
                    + "give its address in the URL, or reload once it resolves")
        }
        return configuration
    }
}
