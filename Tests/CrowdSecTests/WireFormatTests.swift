// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import Testing

@testable import PortcullisCrowdSec

/// What goes to a Local API and what is read from it, now written with FoundationEssentials' coders
/// (it was Foundation's JSONSerialization, CharacterSet and ISO8601DateFormatter): Foundation here
/// is the reference.
@Suite("CrowdSec wire format")
struct WireFormatTests {
    @Test("a query item is escaped as Foundation's urlQueryAllowed less & and + escapes it")
    func percentEncoding() {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&+")
        var items = (1..<128).map { String(UnicodeScalar(UInt8($0))) }
        items += ["scenarios_containing=ssh bf,http-probing", "a&b+c=d", "100%", "é", "日本", "🛡️", "tab\there", ""]
        for item in items {
            #expect(
                percentEncodedQueryItem(item) == item.addingPercentEncoding(withAllowedCharacters: allowed), "\(item)")
        }
    }

    /// A JSON object's text with sorted keys: equal objects, equal texts.
    func canonical(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    func alert(_ target: String, isRange: Bool, seconds: UInt64) -> AlertPusher.Alert {
        AlertPusher.Alert(
            jail: "sshd", target: target, isRange: isRange, seconds: seconds,
            at: UTCTime(secondsSinceEpoch: 1_796_175_453))
    }

    @Test("an alert's JSON has the fields CrowdSec's LAPI requires, decisions only when carried")
    func alertBody() throws {
        let batch = [
            alert("198.18.0.7", isRange: false, seconds: 600), alert("2001:2::/64", isRange: true, seconds: 0),
        ]
        let jails: (String) -> JailDescription? = {
            $0 == "sshd" ? JailDescription(threshold: 5, findSeconds: 600) : nil
        }
        for carry in [false, true] {
            let body = AlertPusher.body(batch, jails: jails, carryDecisions: carry)
            let alerts = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [[String: Any]])
            #expect(alerts.count == 2)
            for (alert, (scope, target, duration)) in zip(
                alerts, [("Ip", "198.18.0.7", "600s"), ("Range", "2001:2::/64", "31536000s")])
            {
                let expected: [String: Any] = [
                    "scenario": "portcullis/sshd", "scenario_hash": "", "scenario_version": "",
                    "message": "\(scope) \(target) banned by Portcullis's jail sshd: 5 offences within 600 s",
                    "capacity": 5, "events_count": 5, "leakspeed": "600s", "simulated": false, "remediation": true,
                    "start_at": "2026-12-02T01:37:33Z", "stop_at": "2026-12-02T01:37:33Z",
                    "source": ["scope": scope, "value": target, scope == "Ip" ? "ip" : "range": target],
                    "events": [] as [Any],
                ]
                var full = expected
                if carry {
                    full["decisions"] = [
                        [
                            "type": "ban", "duration": duration, "value": target, "scope": scope,
                            "origin": "crowdsec", "scenario": "portcullis/sshd",
                        ]
                    ]
                }
                #expect(try canonical(alert) == canonical(full))
            }
        }
    }

    @Test("the login's request, and its answer's token and end")
    func login() throws {
        let request = try JSONEncoder().encode(AlertMessages.Login(machineID: "host-1", password: "p\"w"))
        let object = try #require(try JSONSerialization.jsonObject(with: request) as? [String: Any])
        #expect(
            try canonical(object) == canonical(["machine_id": "host-1", "password": "p\"w", "scenarios": [] as [Any]]))

        let now = Date(timeIntervalSince1970: 1_796_175_453)
        func answer(_ json: String) throws -> AlertMessages.LoginAnswer {
            try JSONDecoder().decode(AlertMessages.LoginAnswer.self, from: Data(json.utf8))
        }
        let utc = try answer(#"{"code":200,"token":"t","expire":"2026-12-02T02:37:33Z"}"#)
        #expect(utc.token == "t" && utc.secondsLeft(now: now) == 3600)
        let offset = try answer(#"{"token":"t","expire":"2026-12-02T03:37:33+01:00"}"#)
        #expect(offset.secondsLeft(now: now) == 3600)
        // As Foundation's ISO8601DateFormatter reads them.
        let reference = ISO8601DateFormatter()
        for text in ["2026-12-02T02:37:33Z", "2026-12-02T03:37:33+01:00"] {
            #expect(reference.date(from: text)?.timeIntervalSince(now) == 3600)
        }
        #expect(try answer(#"{"token":"t","expire":"soon"}"#).secondsLeft(now: now) == nil)
        #expect(try answer(#"{"token":"t","expire":3600}"#).secondsLeft(now: now) == nil)
        #expect(try answer(#"{"token":"t"}"#).secondsLeft(now: now) == nil)
        #expect(throws: DecodingError.self) { try answer(#"{"expire":"2026-12-02T02:37:33Z"}"#) }
    }

    @Test("an error answer's message, or its first 200 bytes")
    func errorMessage() {
        #expect(LAPIClient.message(in: Array(#"{"message":"access forbidden"}"#.utf8)) == "access forbidden")
        #expect(LAPIClient.message(in: Array(#"{"message":5}"#.utf8)) == #"{"message":5}"#)
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: 300)
        #expect(LAPIClient.message(in: long) == String(repeating: "x", count: 200))
    }
}
