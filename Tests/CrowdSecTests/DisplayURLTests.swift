// SPDX-License-Identifier: Apache-2.0
import PortcullisCrowdSec
import Testing

@Suite("api_url as logged")
struct DisplayURLTests {
    @Test("credentials in api_url are not printed: user:password@ becomes ***@; the rest stays")
    func credentialsHidden() {
        #expect(
            LAPIConnectionSettings(url: "http://user:secret@127.0.0.1:8080/").displayURL == "http://***@127.0.0.1:8080/"
        )
        #expect(LAPIConnectionSettings(url: "https://k@[::1]:8443/v1").displayURL == "https://***@[::1]:8443/v1/")
        #expect(LAPIConnectionSettings(url: "http://127.0.0.1:8080/a@b").displayURL == "http://127.0.0.1:8080/a@b/")
        #expect(LAPIConnectionSettings(url: "http://127.0.0.1:8080").displayURL == "http://127.0.0.1:8080/")
    }
}
