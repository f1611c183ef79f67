// SPDX-License-Identifier: Apache-2.0
import Glibc

/// The interfaces that carry this network namespace's default routes: what the daemon protects
/// when no interface is configured (the interface traffic from the internet comes in on).
public enum DefaultRoutes {
    /// An interface with the default route(s) it carries.
    public struct Route: Equatable, Sendable {
        public var interface: String
        /// "IPv4", "IPv6" or "IPv4, IPv6": which families' default route it carries.
        public var families: String

        public init(interface: String, families: String) {
            self.interface = interface
            self.families = families
        }
    }

    /// The kernel's flag of a route that is up (`RTF_UP`) and of one that only refuses
    /// (`RTF_REJECT`: the "unreachable" default the kernel keeps on `lo` for IPv6).
    static let routeUp: UInt32 = 0x0001
    static let routeReject: UInt32 = 0x0200

    /// The interfaces of the default routes of the main routing tables (`/proc/net/route`,
    /// `/proc/net/ipv6_route`), in the tables' order, each once.
    public static func current() -> [Route] {
        routes(ipv4Table: PseudoFile.text("/proc/net/route"), ipv6Table: PseudoFile.text("/proc/net/ipv6_route"))
    }

    /// The interfaces of the default routes in the tables' text, in their order, each once; `lo`
    /// and reject routes are none.
    /// - Parameters:
    ///   - ipv4Table: `/proc/net/route`: a header, then `Iface Destination Gateway Flags RefCnt Use
    ///     Metric Mask ...` separated by tabs, numbers in hex.
    ///   - ipv6Table: `/proc/net/ipv6_route`: destination, its prefix length, source, its length,
    ///     next hop, metric, reference count, use, flags (hex), device, separated by blanks.
    public static func routes(ipv4Table: String, ipv6Table: String) -> [Route] {
        var found: [(interface: String, family: String)] = []
        for line in ipv4Table.split(separator: "\n").dropFirst() {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard fields.count > 7, fields[1] == "00000000", fields[7] == "00000000",
                let flags = UInt32(fields[3], radix: 16), usable(flags, interface: fields[0])
            else { continue }
            found.append((String(fields[0]), "IPv4"))
        }
        for line in ipv6Table.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 9, fields[1] == "00", fields[0].allSatisfy({ $0 == "0" }),
                let flags = UInt32(fields[8], radix: 16), usable(flags, interface: fields[9])
            else { continue }
            found.append((String(fields[9]), "IPv6"))
        }
        var routes: [Route] = []
        for (interface, family) in found {
            if let index = routes.firstIndex(where: { $0.interface == interface }) {
                if !routes[index].families.contains(family) { routes[index].families += ", " + family }
            } else {
                routes.append(Route(interface: interface, families: family))
            }
        }
        return routes
    }

    private static func usable(_ flags: UInt32, interface: Substring) -> Bool {
        flags & routeUp != 0 && flags & routeReject == 0 && interface != "lo"
    }
}

/// Small files of /proc read whole (their size is 0 to stat, so they are read to the end).
enum PseudoFile {
    static func text(_ path: String) -> String {
        guard let file = fopen(path, "r") else { return "" }
        defer { fclose(file) }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), file) != nil { text += String(cString: buffer) }
        return text
    }
}
