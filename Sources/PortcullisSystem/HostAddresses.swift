// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisCore

/// This host's own addresses and default gateways, which the daemon never bans (fail2ban's
/// `ignoreself`, and more: a banned gateway cuts the host off).
public enum HostAddresses {
    /// The addresses of every interface (`getifaddrs`) and the default gateways of the main
    /// routing tables (`/proc/net/route`, `/proc/net/ipv6_route`) of this network namespace.
    public static func current() -> [IPAddress] {
        interfaceAddresses() + defaultGateways()
    }

    static func interfaceAddresses() -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var found: [IPAddress] = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ifa_addr {
                switch Int32(address.pointee.sa_family) {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        found.append(IPAddress(ipv4NetworkOrder: $0.pointee.sin_addr.s_addr))
                    }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        let bytes = withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) }
                        found.append(IPAddress(bytes: bytes))
                    }
                default: break
                }
            }
            entry = current.pointee.ifa_next
        }
        return found
    }

    static func defaultGateways() -> [IPAddress] {
        var gateways: [IPAddress] = []
        // /proc/net/route: Iface Destination Gateway Flags ... in hex, host byte order of the kernel.
        for fields in lines(of: "/proc/net/route").dropFirst().map({ $0.split(separator: "\t") }) where fields.count > 3
        {
            guard fields[1] == "00000000", let gateway = UInt32(fields[2], radix: 16), gateway != 0 else { continue }
            gateways.append(IPAddress(ipv4NetworkOrder: gateway))
        }
        // /proc/net/ipv6_route: destination, prefix length, source, its length, next hop, ... in hex.
        for fields in lines(of: "/proc/net/ipv6_route").map({
            $0.split(separator: " ", omittingEmptySubsequences: true)
        }) where fields.count > 4 {
            guard fields[1] == "00", fields[0].allSatisfy({ $0 == "0" }), fields[4].count == 32 else { continue }
            var bytes: [UInt8] = []
            var index = fields[4].startIndex
            while index < fields[4].endIndex {
                let next = fields[4].index(index, offsetBy: 2)
                bytes.append(UInt8(fields[4][index..<next], radix: 16) ?? 0)
                index = next
            }
            let gateway = IPAddress(bytes: bytes)
            if gateway != IPAddress(high: 0, low: 0) { gateways.append(gateway) }
        }
        return gateways
    }

    private static func lines(of path: String) -> [Substring] {
        PseudoFile.text(path).split(separator: "\n")
    }
}
