// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisCore
import Testing

@Suite("Formatting: addresses, UTC times, offence lines")
struct FormattingTests {
    /// inet_ntop's text of an address.
    func referenceText(_ address: IPAddress) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        address.withUnsafeBytes { bytes in
            _ = inet_ntop(address.isIPv4 ? AF_INET : AF_INET6, bytes.baseAddress, &text, socklen_t(text.count))
        }
        return String(cString: text)
    }

    @Test("the formatter writes what inet_ntop writes, for chosen and for 20,000 random addresses")
    func formatterMatchesInetNtop() {
        let chosen = [
            "::", "::1", "1::", "2001:2::fffe", "2001:2:0:a::1", "1:0:0:1:0:0:0:1", "1:0:0:2:0:0:3:4",
            "::1.2.3.4", "::ffff:0:1.2.3.4", "0:0:1::", "fe80::1:0:0:0", "1:2:3:4:5:6:7:8", "198.18.0.1",
            "0.0.0.0", "255.255.255.255", "10.0.0.10",
        ]
        for text in chosen {
            let address = IPAddress(text)!
            #expect(address.description == referenceText(address), "\(text)")
        }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<20_000 {
            var high = UInt64.random(in: 0...UInt64.max, using: &generator)
            var low = UInt64.random(in: 0...UInt64.max, using: &generator)
            // Runs of zero groups in various places, which is where the forms differ.
            if round % 2 == 0 { high &= 0xFFFF_0000_FFFF_0000 >> (round % 5 * 16) }
            if round % 3 == 0 { low &= 0x0000_FFFF_0000_0000 }
            if round % 7 == 0 { (high, low) = (0, low & 0xFFFF_FFFF_0000_0000) }
            let address = IPAddress(high: high, low: low)
            #expect(address.description == referenceText(address))
            #expect(IPAddress(address.description) == address)
        }
    }

    @Test("UTC calendar fields are gmtime_r's, across leap years and centuries")
    func utcFieldsMatchGmtime() {
        var generator = SystemRandomNumberGenerator()
        let seconds =
            [0, 951_782_400, 4_107_542_399, 1_795_718_566]
            + (0..<5000).map { _ in
                Int.random(in: 0...4_102_444_800, using: &generator)
            }
        for second in seconds {
            var time = second
            var parts = tm()
            gmtime_r(&time, &parts)
            let utc = UTCTime(secondsSinceEpoch: second)
            #expect(
                utc.year == Int(parts.tm_year) + 1900 && utc.month == Int(parts.tm_mon) + 1
                    && utc.day == Int(parts.tm_mday))
            #expect(
                utc.hour == Int(parts.tm_hour) && utc.minute == Int(parts.tm_min) && utc.second == Int(parts.tm_sec))
        }
        #expect(UTCTime(secondsSinceEpoch: 1_795_718_566, millisecond: 7).iso8601 == "2026-11-26T18:42:46.007Z")
    }

    @Test("what OffenceLine writes is what the scanner reads, for both families")
    func writtenLinesScanBack() {
        let time = UTCTime(secondsSinceEpoch: 1_795_718_566)
        #expect(
            OffenceLine.text(time: time, address: IPAddress("198.18.0.1")!)
                == "2026-11-26 18:42:46 client 198.18.0.1 exceeded request rate limit")
        for text in ["198.18.0.1", "2001:2:0:a::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:198.19.0.1"] {
            let address = IPAddress(text)!
            let line = OffenceLine.text(time: time, address: address)
            #expect(line.utf8.count <= OffenceLine.maximumLength)
            #expect(Array(line.utf8).withUnsafeBytes { LineScanner().scan($0) } == .offence(address), "\(line)")
        }
    }
}
