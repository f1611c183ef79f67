// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import Testing

@Suite("List policy")
struct ListPolicyTests {
    private func network(_ text: String) -> IPNetwork { try! IPNetwork(parsing: text) }

    @Test("networks shorter than the floor of their family are too wide")
    func floor() {
        let policy = ListPolicy(shortestIPv4: 8, shortestIPv6: 16)
        for wide in ["0.0.0.0/0", "128.0.0.0/1", "198.0.0.0/7", "::/0", "8000::/1", "2000::/15"] {
            #expect(policy.verdict(network(wide)) == .tooWide, "\(wide)")
        }
        for taken in ["198.0.0.0/8", "198.18.0.0/15", "198.18.0.7", "2001::/16", "2001:2::/48", "2001:2::7"] {
            #expect(policy.verdict(network(taken)) == nil, "\(taken)")
        }
        let fleet = ListPolicy(shortestIPv4: ListPolicy.fleetFloor.ipv4, shortestIPv6: ListPolicy.fleetFloor.ipv6)
        #expect(fleet.verdict(network("198.0.0.0/8")) == .tooWide)
        #expect(fleet.verdict(network("2001::/16")) == .tooWide)
        #expect(fleet.verdict(network("198.18.0.0/16")) == nil && fleet.verdict(network("2001:2::/32")) == nil)
    }

    @Test("a network inside or overlapping a never-bannable range is refused, in both families")
    func neverBannable() {
        let policy = ListPolicy(shortestIPv4: 0, shortestIPv6: 0)
        for text in [
            "0.0.0.0/0", "::/0", "0.1.2.3", "0.0.0.0/8", "127.0.0.1", "169.254.1.0/24", "224.0.0.1", "224.0.0.0/3",
            "239.255.255.255", "240.0.0.1", "255.255.255.255", "::", "::1", "fe80::1", "fe80::/64", "fe00::/7",
            "ff02::1", "ff00::/8", "8000::/1",
        ] {
            #expect(policy.verdict(network(text)) == .neverBannable, "\(text)")
        }
        for text in ["198.18.0.0/15", "1.0.0.0/8", "223.255.255.255", "fec0::1", "2001:2::/48", "2000::/3"] {
            #expect(policy.verdict(network(text)) == nil, "\(text)")
        }
        // What the list says and what the addresses say agree.
        for text in ["0.1.2.3", "240.0.0.1", "255.255.255.255", "224.0.0.1", "fe80::1", "ff02::1", "::", "::1"] {
            #expect(IPAddress(text)!.isNeverBannable, "\(text)")
        }
        #expect(!IPAddress("1.0.0.1")!.isNeverBannable && !IPAddress("223.0.0.1")!.isNeverBannable)
    }

    @Test("a network inside the allowlist is allowlisted; one that only holds an allowlisted address is not")
    func allowlisted() {
        let policy = ListPolicy(allowlist: [network("198.18.100.254"), network("2001:2:100::/64")])
        #expect(policy.verdict(network("198.18.100.254")) == .allowlisted)
        #expect(policy.verdict(network("2001:2:100::fe")) == .allowlisted)
        #expect(policy.verdict(network("2001:2:100::/96")) == .allowlisted)
        #expect(policy.verdict(network("198.18.100.253")) == nil)
        // The driver's allowlist passes the gateway whatever covers it.
        #expect(policy.verdict(network("198.18.100.0/24")) == nil)
        // The floor is asked first, then the ranges.
        #expect(policy.verdict(network("0.0.0.0/0")) == .tooWide)
    }

    @Test("a list is split into what is taken and the refusals by reason, said in one phrase")
    func filter() {
        let policy = ListPolicy(allowlist: [network("198.18.100.254")])
        let (taken, refused) = policy.filter(
            ["0.0.0.0/0", "::/0", "198.18.100.254", "224.0.0.1", "198.18.7.0/24", "2001:2::/48"].map(network))
        #expect(taken == [network("198.18.7.0/24"), network("2001:2::/48")])
        #expect(refused == [.tooWide: 2, .allowlisted: 1, .neverBannable: 1])
        #expect(ListPolicy.describe(refused) == "4 refused (2 too wide, 1 never bannable, 1 allowlisted)")
        #expect(ListPolicy.describe([:]) == "")
    }
}
