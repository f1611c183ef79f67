// SPDX-License-Identifier: Apache-2.0
import PortcullisDaemon
import PortcullisSystem
import Testing
import TestSupport

@Suite("Exit summary")
struct SummaryTests {
    @Test("--summary-json has the text summary's ignored and match_limit counts")
    func summaryFields() throws {
        try withStoreDaemon(configure: { $0.threshold = 3 }) { daemon, _, _, _ in
            let text = JSONOutput.line(daemon.status.summary(cpuSeconds: 0))
            #expect(text.contains("\"ignored\":0"), "\(text)")
            #expect(text.contains("\"match_limit\":0"), "\(text)")
        }
    }
}
