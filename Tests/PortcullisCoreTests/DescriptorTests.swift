// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem
import Testing

@Suite("descriptors")
struct DescriptorTests {
    @Test("the watch says once when 80% of the limit are open, and once when under 70% again")
    func watchSaysCrossings() {
        nonisolated(unsafe) var open = 10
        let watch = DescriptorWatch(limit: { 100 }, count: { open })
        #expect(watch.check() == nil)
        open = 80
        #expect(watch.check()?.contains("80 of 100 file descriptors are open: a leak") == true)
        open = 95
        #expect(watch.check() == nil, "said once per episode")
        open = 75
        #expect(watch.check() == nil, "not yet under 70%")
        open = 69
        #expect(watch.check() == "69 of 100 file descriptors are open again")
        #expect(watch.check() == nil)
    }

}
