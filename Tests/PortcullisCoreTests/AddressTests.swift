// SPDX-License-Identifier: Apache-2.0
import Testing
@_spi(Testing) @testable import XDPFirewall
import PortcullisCore

@Suite("Addresses and expiry")
struct AddressTests {
    @Test(arguments: [
        ("198.18.0.1", "198.18.0.1", IPAddress.Family.ipv4),
        ("2001:2::1", "2001:2::1", .ipv6),
        ("2001:0002:0000:0000:0000:0000:0000:0001", "2001:2::1", .ipv6),
        ("::ffff:198.18.0.7", "198.18.0.7", .ipv4),
        ("::", "::", .ipv6),
        ("2001:2::198.18.0.1", "2001:2::c612:1", .ipv6),
    ])
    func parsesAndPrintsCanonically(text: String, canonical: String, family: IPAddress.Family) throws {
        let address = try #require(IPAddress(text))
        #expect(address.family == family)
        #expect(address.description == canonical)
        #expect(IPAddress(canonical) == address)
    }

    @Test(arguments: [
        "", "198.18.0", "198.18.0.256", "2001:2::1::2", "fe80::1%eth0", "example.org", " 198.18.0.1",
        "198.18.0.1/32", "01.2.3.4",
    ])
    func rejectsWhatIsNotAnAddress(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func banKeysAreNetworkOrderBytes() throws {
        let v4 = try #require(IPAddress("198.18.0.1"))
        #expect(withUnsafeBytes(of: v4.ipv4Key) { Array($0) } == [198, 18, 0, 1])
        let v6 = try #require(IPAddress("2001:2::ff"))
        #expect(
            withUnsafeBytes(of: v6.ipv6Key) { Array($0) } == [0x20, 0x01, 0, 2] + Array(repeating: 0, count: 11) + [
                0xff
            ])
        #expect(IPAddress(v6.ipv6Key) == v6)
        #expect(IPAddress(v4.ipv4Key) == v4)
    }

    @Test func expiryArithmeticRefusesOverflow() {
        #expect(BanExpiry.after(seconds: 30, now: 1_000) == .at(bootNanoseconds: 30_000_001_000))
        #expect(BanExpiry.after(seconds: UInt64.max, now: 0) == nil)
        #expect(BanExpiry.after(seconds: 18_446_744_073, now: UInt64.max - 10) == nil)
        #expect(BanExpiry.permanent.expiresNanoseconds == 0)
        // A ban "ending at boot time 0" must not turn into a permanent one.
        #expect(BanExpiry.at(bootNanoseconds: 0).expiresNanoseconds == 1)
    }

    @Test func locatorNamesEveryPlaceItLooked() {
        #expect(throws: FirewallError.self) { try BPFObjectLocator().locate("no-such-object.bpf.o") }
        do {
            _ = try BPFObjectLocator().locate("no-such-object.bpf.o")
        } catch {
            guard case .bpfObjectMissing(let file, let searched) = error else {
                Issue.record("wrong error \(error)"); return
            }
            #expect(file == "no-such-object.bpf.o")
            #expect(error.description.contains("no-such-object.bpf.o not found"))
            #expect(searched.contains("/usr/local/lib/portcullis/no-such-object.bpf.o"))
            #expect(searched.contains { $0.hasSuffix("/no-such-object.bpf.o") && !$0.hasPrefix("/usr/") })
            #expect(error.description.contains("tools/build-bpf"))
        }
        #expect(throws: FirewallError.bpfObjectMissing(file: "x.o", searched: ["/nonexistent/x.o"])) {
            try BPFObjectLocator().locate(explicit: "/nonexistent/x.o")
        }
    }
}
