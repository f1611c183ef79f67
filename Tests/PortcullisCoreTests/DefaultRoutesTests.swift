// SPDX-License-Identifier: Apache-2.0
import PortcullisSystem
import Testing

/// The interfaces the daemon protects when none is configured: those of the default routes, read
/// from the kernel's route tables in their /proc text.
@Suite("Default routes")
struct DefaultRoutesTests {
    static let ipv4Header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"

    /// A /proc/net/route line: interface, destination, gateway, flags, mask (the rest zero).
    static func ipv4(
        _ interface: String, _ destination: String, _ gateway: String, _ flags: String, _ mask: String
    )
        -> String
    {
        [interface, destination, gateway, flags, "0", "0", "0", mask, "0", "0", "0"].joined(separator: "\t")
    }

    /// A /proc/net/ipv6_route line: destination and its length, next hop, flags, device.
    static func ipv6(
        _ destination: String, _ length: String, _ nextHop: String, _ flags: String, _ device: String
    )
        -> String
    {
        let zero = String(repeating: "0", count: 32)
        return [destination, length, zero, "00", nextHop, "00000400", "00000001", "00000000", flags, device]
            .joined(separator: " ")
    }

    static let zero = String(repeating: "0", count: 32)

    @Test("the IPv4 default route's interface; a route to a network is none")
    func ipv4Default() {
        let table = [
            Self.ipv4Header, Self.ipv4("eth0", "000012C6", "00000000", "0001", "00FFFFFF"),
            Self.ipv4("eth0", "00000000", "010012C6", "0003", "00000000"),
        ].joined(separator: "\n")
        #expect(
            DefaultRoutes.routes(ipv4Table: table, ipv6Table: "")
                == [DefaultRoutes.Route(interface: "eth0", families: "IPv4")])
    }

    @Test("IPv4 and IPv6 on one interface are named once; on two, both in the tables' order")
    func bothFamilies() {
        let v4 = [Self.ipv4Header, Self.ipv4("eth0", "00000000", "010012C6", "0003", "00000000")]
            .joined(separator: "\n")
        let v6Same = Self.ipv6(Self.zero, "00", "20010002000000000000000000000001", "00000003", "eth0")
        #expect(
            DefaultRoutes.routes(ipv4Table: v4, ipv6Table: v6Same)
                == [DefaultRoutes.Route(interface: "eth0", families: "IPv4, IPv6")])
        let v6Other = Self.ipv6(Self.zero, "00", "20010002000000000000000000000001", "00000003", "wg0")
        #expect(
            DefaultRoutes.routes(ipv4Table: v4, ipv6Table: v6Other) == [
                DefaultRoutes.Route(interface: "eth0", families: "IPv4"),
                DefaultRoutes.Route(interface: "wg0", families: "IPv6"),
            ])
    }

    @Test("none: no default route, the kernel's unreachable IPv6 default on lo, a route that is down or rejects")
    func none() {
        let v4 = [
            Self.ipv4Header, Self.ipv4("eth0", "000012C6", "00000000", "0001", "00FFFFFF"),
            Self.ipv4("eth1", "00000000", "010012C6", "0002", "00000000"),
            Self.ipv4("eth2", "00000000", "00000000", "0201", "00000000"),
        ].joined(separator: "\n")
        let v6 = [
            Self.ipv6("20010002000000000000000000000000", "40", Self.zero, "00000001", "eth0"),
            Self.ipv6(Self.zero, "00", Self.zero, "00200200", "lo"),
        ].joined(separator: "\n")
        #expect(DefaultRoutes.routes(ipv4Table: v4, ipv6Table: v6).isEmpty)
        #expect(DefaultRoutes.routes(ipv4Table: "", ipv6Table: "").isEmpty)
    }

    @Test("a default route without a gateway (a point-to-point link) counts")
    func withoutGateway() {
        let v4 = [Self.ipv4Header, Self.ipv4("ppp0", "00000000", "00000000", "0001", "00000000")]
            .joined(separator: "\n")
        #expect(DefaultRoutes.routes(ipv4Table: v4, ipv6Table: "").map(\.interface) == ["ppp0"])
    }
}
