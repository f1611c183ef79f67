// SPDX-License-Identifier: Apache-2.0
@testable import PortcullisService
import Testing

@Suite("Companion addresses")
struct CompanionAddressesTests {
    @Test("the host of a NATS server's or a Local API's URL: schemes, user and password, ports, IPv6 in brackets")
    func hosts() {
        #expect(CompanionAddresses.host(of: "nats://198.18.10.254:4222") == "198.18.10.254")
        #expect(CompanionAddresses.host(of: "tls://web-1:secret@nats-1.example:4222") == "nats-1.example")
        #expect(CompanionAddresses.host(of: "nats-2.example:4222") == "nats-2.example")
        #expect(CompanionAddresses.host(of: "nats-3.example") == "nats-3.example")
        #expect(CompanionAddresses.host(of: "tls://[2001:2::7]:4222") == "2001:2::7")
        #expect(CompanionAddresses.host(of: "2001:2::7") == "2001:2::7")
        #expect(CompanionAddresses.host(of: "http://127.0.0.1:8080/") == "127.0.0.1")
        #expect(CompanionAddresses.host(of: "https://lapi.example/v1/") == "lapi.example")
        #expect(CompanionAddresses.host(of: "nats://") == nil)
    }

    @Test(
        "an address is itself; a name is what the resolver gives (localhost: loopback); a name that does not resolve gives none"
    )
    func resolving() {
        #expect(CompanionAddresses.resolve("198.18.10.254") == ["198.18.10.254"])
        #expect(CompanionAddresses.resolve("2001:2::7") == ["2001:2::7"])
        let local = CompanionAddresses.resolve("localhost")
        #expect(!local.isEmpty && local.allSatisfy { $0 == "127.0.0.1" || $0 == "::1" }, "\(local)")
        #expect(CompanionAddresses.resolve("no-such-host.invalid").isEmpty)
    }
}
