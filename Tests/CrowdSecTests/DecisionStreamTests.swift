// SPDX-License-Identifier: Apache-2.0
import Testing

@testable import PortcullisCrowdSec

@Suite("CrowdSec stream answers")
struct DecisionStreamTests {
    @Test("a deleted entry deletes by value: scope and value suffice, its duration may be unreadable or missing")
    func deletionsByValue() throws {
        let text = """
            {"new":[{"duration":"forever","id":9,"scope":"Ip","type":"ban","value":"198.18.0.9"}],
             "deleted":[
              {"duration":"-3.5s","id":1,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"198.18.0.7"},
              {"duration":"not one","id":2,"origin":"CAPI","scope":"Range","type":"ban","value":"198.18.1.0/24"},
              {"scope":"Ip","value":"198.18.0.8"},
              {"id":4,"type":"ban","value":"198.18.0.10"},
              {"id":5,"scope":"Ip","value":7}
            ]}
            """
        let stream = try DecisionStream(json: Array(text.utf8))
        #expect(stream.deleted.map(\.value) == ["198.18.0.7", "198.18.1.0/24", "198.18.0.8"])
        #expect(stream.deleted.map(\.scope) == ["Ip", "Range", "Ip"])
        #expect(stream.deleted.map(\.id) == [1, 2, 0] && stream.deleted.map(\.origin) == ["cscli", "CAPI", ""])
        #expect(abs(stream.deleted[0].seconds + 3.5) < 1e-9 && stream.deleted[1].seconds == 0)
        // A new entry stays strict: its duration must read. Two deleted ones lack a scope or a string value.
        #expect(stream.new.isEmpty && stream.malformed == 3)
    }

    @Test("deleted entries are handed over before new ones, whatever the answer's order; nothing of a broken answer")
    func streaming() throws {
        let text = """
            {"new":[{"duration":"1h","id":2,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"198.18.0.2"},
             {"duration":"2h","id":3,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"2001:2::3"}],
             "extra":{"nested":[1,2.5e3,true,null,"\\u00e9"]},
             "deleted":[{"scope":"Ip","value":"198.18.0.1"}]}
            """
        var order: [String] = []
        var reserved = DecisionStream.Counts()
        let counts = try DecisionStream.forEach(
            json: Array(text.utf8), reserve: { reserved = $0 }, new: { order.append("new " + $0.value) },
            deleted: { order.append("deleted " + $0.value) })
        #expect(order == ["deleted 198.18.0.1", "new 198.18.0.2", "new 2001:2::3"])
        #expect(counts == DecisionStream.Counts(new: 2, deleted: 1, malformed: 0))
        #expect(reserved == DecisionStream.Counts(new: 2, deleted: 1))
        // Broken at its very end: refused before anything is handed over.
        var handed = 0
        #expect(throws: LAPIError.self) {
            try DecisionStream.forEach(
                json: Array(text.dropLast().utf8), new: { _ in handed += 1 }, deleted: { _ in handed += 1 })
        }
        #expect(handed == 0)
    }

    @Test("what is not JSON, not an object, or of lists that are not arrays, is refused with what it is")
    func refusals() {
        let cases: [(String, String)] = [
            ("", "not JSON (0 bytes)"), ("{\"new\": [1,]}", "not JSON (13 bytes)"), ("[]", "not a JSON object"),
            ("{\"new\": {}}", "'new' is not an array"), ("{\"deleted\": \"x\"}", "'deleted' is not an array"),
            ("{\"new\": [\"\\q\"]}", "not JSON"), ("{\"new\": [01]}", "not JSON"), ("{\"new\": []} x", "not JSON"),
            (String(repeating: "[", count: 600) + String(repeating: "]", count: 600), "not JSON"),
        ]
        for (text, message) in cases {
            let said = error(text).map { "\($0)" } ?? "accepted"
            #expect(said.contains(message), "\(text.prefix(40)): \(said)")
        }
    }

    func error(_ text: String) -> LAPIError? {
        do {
            _ = try DecisionStream(json: Array(text.utf8))
            return nil
        } catch {
            return error
        }
    }

    @Test("strings with escapes read as JSON says; repeated texts are the same")
    func texts() throws {
        let text = """
            {"new":[{"duration":"1m","id":1,"origin":"c\\u0073cli","scenario":"a \\"b\\" \\ud83d\\ude00","scope":"Ip","type":"ban","value":"198.18.0.1"},
            {"duration":"1m","id":-2,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"198.18.0.2"}],"deleted":null}
            """
        let stream = try DecisionStream(json: Array(text.utf8))
        #expect(stream.new.map(\.origin) == ["cscli", "cscli"] && stream.new.map(\.id) == [1, -2])
        #expect(stream.new[0].scenario == "a \"b\" 😀")
    }
}
