// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import Testing
@testable import PortcullisCore

/// The key inet_pton gives for `text` (IPv4 as ::ffff:a.b.c.d), or nil when it refuses.
func referenceKey(_ text: String) -> IPAddress? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 {
        return withUnsafeBytes(of: v4) { IPAddress(ipv4: $0[0], $0[1], $0[2], $0[3]) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return IPAddress(bytes: withUnsafeBytes(of: v6) { Array($0) }) }
    return nil
}

func parse(_ text: String) -> IPAddress? {
    let bytes = Array(text.utf8)
    var key = IPAddress(high: 0, low: 0)
    let ok = bytes.withUnsafeBufferPointer { buffer -> Bool in
        guard let base = buffer.baseAddress else { return false }
        return IPAddress.parse(base, count: buffer.count, into: &key)
    }
    return ok ? key : nil
}

func scan(_ text: String, scanner: LineScanner = LineScanner()) -> ScanOutcome {
    Array(text.utf8).withUnsafeBytes { scanner.scan($0) }
}

func offence(_ address: String) -> ScanOutcome {
    .offence(referenceKey(address)!)
}

@Suite("Address parser and line scanner")
struct ScannerTests {
    @Test(
        "every textual form inet_pton accepts, and what it refuses",
        arguments: [
            "198.18.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4",
            "::", "::1", "1::", "2001:2::1", "2001:0002:0000:0000:0000:0000:0000:0001", "2001:2:0:0:0:0:0:1",
            "2001:2::", "::ffff:198.18.0.1", "::198.18.0.1", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:8", "1::8",
            "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "ABCD:EF01::a", "fe80::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            // refused
            "", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.04", "1..2.3", ".1.2.3", "1.2.3.", " 1.2.3.4",
            "1.2.3.4 ", "1.2.3.-4", ":", ":::", "1:::2", "1::2::3", ":1::2", "1::2:", "12345::", "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::", "1:2:3:4:5:6:7::8", "::1.2.3", "::1.2.3.4.5", "1:2:3:4:5:6:7:1.2.3.4", "g::1",
            "fe80::1%eth0", "2001:2::1/64", "[2001:2::1]", "::ffff:1.2.3.256", "1.2.3.4:80",
        ])
    func addressesMatchInetPton(text: String) {
        #expect(parse(text) == referenceKey(text), "\(text)")
    }

    @Test("random addresses round-trip through inet_ntop and back, as inet_pton parses them")
    func randomRoundTrip() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Make zero runs and IPv4-mapped forms common, so :: compression and dotted tails are exercised.
            let shape = Int.random(in: 0..<4, using: &generator)
            if shape == 1 { for index in 0..<Int.random(in: 0...16, using: &generator) { bytes[index] = 0 } }
            if shape == 2 { bytes.replaceSubrange(0..<12, with: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]) }
            if shape == 3 { for index in Int.random(in: 0...15, using: &generator)..<16 { bytes[index] = 0 } }
            var address = in6_addr()
            withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes) }
            var text = [CChar](repeating: 0, count: 64)
            inet_ntop(AF_INET6, &address, &text, 64)
            let written = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let expected = IPAddress(bytes: bytes)
            #expect(parse(written) == expected, "\(written)")
            #expect(parse(written.uppercased()) == expected, "\(written.uppercased())")
            // And an IPv4 text of the last four bytes.
            let v4 = "\(bytes[12]).\(bytes[13]).\(bytes[14]).\(bytes[15])"
            #expect(parse(v4) == IPAddress(ipv4: bytes[12], bytes[13], bytes[14], bytes[15]))
        }
    }

    @Test("IPv4-mapped IPv6 text is the IPv4 client")
    func mappedIsIPv4() {
        #expect(parse("::ffff:198.18.0.1") == parse("198.18.0.1"))
        #expect(parse("::ffff:c612:1") == parse("198.18.0.1"))
        #expect(parse("198.18.0.1")!.isIPv4)
        #expect(!parse("2001:2::1")!.isIPv4)
    }

    @Test("valid and invalid offence lines")
    func lines() {
        let suffix = " exceeded request rate limit"
        #expect(scan("2026-11-26 18:42:46 client 198.18.0.1" + suffix) == offence("198.18.0.1"))
        #expect(scan("2026-11-26 18:42:46 client 2001:2::1" + suffix) == offence("2001:2::1"))
        #expect(scan("2026-11-26 18:42:46 client ::ffff:198.18.0.1" + suffix) == offence("198.18.0.1"))
        #expect(scan("2026-11-26 18:42:46 client 2001:0002:0:0:0:0:0:1" + suffix + "\r") == offence("2001:2::1"))
        #expect(scan("2026-12-31 23:59:60 client 1.2.3.4" + suffix) == offence("1.2.3.4"))
        // Wrong shapes.
        for line in [
            "", "2026-11-26 18:42:46", "2026-11-26 18:42:46 client 198.18.0.1",
            "2026-11-26 18:42:46 client 198.18.0.1 exceeded request rate limit!",
            "2026-11-26 18:42:46 client  198.18.0.1" + suffix.dropFirst(),
            "2026-13-26 18:42:46 client 198.18.0.1" + suffix, "2026-11-00 18:42:46 client 198.18.0.1" + suffix,
            "2026-11-26 24:42:46 client 198.18.0.1" + suffix, "2026-11-26 18:60:46 client 198.18.0.1" + suffix,
            "2026/11/26 18:42:46 client 198.18.0.1" + suffix, "x026-11-26 18:42:46 client 198.18.0.1" + suffix,
            "2026-11-26 18:42:46 server 198.18.0.1" + suffix,
            "2026-11-26 18:42:46 client 198.18.0.1 exceeded request rate limiT",
        ] {
            #expect(scan(line) == .notMatching, "\(line)")
        }
        // The right shape around something that is not an address.
        for address in [
            "198.18.0", "fe80::1%eth0", "example.org", "198.18.0.1/32", "1::2::3", "01.2.3.4",
            "198.18.0.1 198.18.0.2",
        ] {
            #expect(scan("2026-11-26 18:42:46 client \(address)" + suffix) == .invalidAddress, "\(address)")
        }
        // Overlong lines and fields.
        #expect(scan("2026-11-26 18:42:46 client " + String(repeating: "1", count: 600) + suffix) == .tooLong)
        #expect(scan("2026-11-26 18:42:46 client " + String(repeating: "1", count: 60) + suffix) == .invalidAddress)
        let short = LineScanner(maxLineLength: 40)
        #expect(scan("2026-11-26 18:42:46 client 198.18.0.1" + suffix, scanner: short) == .tooLong)
        // Truncated at every length: never an offence, never a crash.
        let full = Array(("2026-11-26 18:42:46 client 2001:2::1" + suffix).utf8)
        for length in 0..<full.count {
            let outcome = Array(full.prefix(length)).withUnsafeBytes { LineScanner().scan($0) }
            #expect(outcome == .notMatching || outcome == .invalidAddress, "prefix \(length)")
        }
    }

    @Test("binary garbage is never an offence and never a crash")
    func garbage() {
        var generator = SystemRandomNumberGenerator()
        let template = Array("2026-11-26 18:42:46 client 198.18.0.1 exceeded request rate limit".utf8)
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
            } else {
                bytes = template
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(
                        in: 0...255, using: &generator)
                }
            }
            let outcome = bytes.withUnsafeBytes { LineScanner().scan($0) }
            if case .offence(let key) = outcome {
                // Only a mutation that still reads as the format with a valid address may pass.
                let text = String(decoding: bytes[27..<(bytes.count - 28)], as: UTF8.self)
                #expect(referenceKey(text) == key)
            }
        }
    }
}

@Suite("allowlist")
struct AllowlistTests {
    @Test func networksContainTheirClients() throws {
        let allow = try Allowlist(["198.18.0.0/15", "2001:2::/48", "10.1.2.3"])
        #expect(allow.contains(parse("198.19.255.255")!))
        #expect(!allow.contains(parse("198.20.0.0")!))
        #expect(allow.contains(parse("::ffff:198.18.7.7")!))
        #expect(allow.contains(parse("2001:2:0:ffff::1")!))
        #expect(!allow.contains(parse("2001:3::1")!))
        #expect(allow.contains(parse("10.1.2.3")!))
        #expect(!allow.contains(parse("10.1.2.4")!))
        #expect(Allowlist.loopback.contains(parse("127.0.0.1")!) && Allowlist.loopback.contains(parse("::1")!))
        #expect(throws: SettingError.self) { _ = try Allowlist(["198.18.0.0/33"]) }
        #expect(throws: SettingError.self) { _ = try Allowlist(["banana/8"]) }
    }
}

@Suite("Scanner literals")
struct ScannerLiteralTests {
    @Test("the word constants spell the line format's literals")
    func literals() {
        func word(_ text: String, _ start: Int, _ length: Int) -> UInt64 {
            let bytes = Array(text.utf8)
            return (0..<length).reduce(UInt64(0)) { $0 | UInt64(bytes[start + $1]) << (8 * UInt64($1)) }
        }
        #expect(LineScanner.clientWord == word(" client ", 0, 8))
        let suffix = " exceeded request rate limit"
        #expect(LineScanner.suffixLength == suffix.utf8.count)
        #expect(LineScanner.suffix.0 == word(suffix, 0, 8))
        #expect(LineScanner.suffix.1 == word(suffix, 8, 8))
        #expect(LineScanner.suffix.2 == word(suffix, 16, 8))
        #expect(UInt64(LineScanner.suffix.3) == word(suffix, 24, 4))
    }
}
