// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
import Testing

@Suite("Blocklist files")
struct BlocklistFileTests {
    @Test(
        "parsing stops at the first entry over the capacity of its kind (family, address or network), naming its line")
    func capacity() {
        let text = "198.18.0.1\n198.18.0.1\n198.18.1.0/24\n2001:2::1\n198.18.0.2 # two\n198.18.0.3\n198.18.0.4\n"
        let parsed = BlocklistFile.parse(text, capacity: 2)
        #expect(parsed.overflow?.contains("more than 2 IPv4 addresses by line 6") == true, "\(parsed)")
        #expect(parsed.networks.count == 5)
        #expect(BlocklistFile.parse(text, capacity: 4).overflow == nil)
    }
}
