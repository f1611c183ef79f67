// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import PortcullisCrowdSec
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// The `xdp` suite's rows for the CrowdSec bouncer: a Local API answer of N decisions (as
/// `/v1/decisions/stream` writes it: Ip decisions and a tenth of /24 Ranges, all in
/// 198.18.0.0/15) parsed, and installed as the bouncer does after a full pull (one swap) and
/// after a delta (in place), against the floors measured in the same rounds: the JSON parse
/// alone (Foundation's JSONSerialization, what the decoder sits on) and batched exact bans of as
/// many addresses (one bpf_map_update_batch per 8,192).
extension XDPSuite {
    func decisionCosts(filterPath: String) throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: filterPath, pinDirectory: nil)
        let maps = filter.maps!
        let count = decisions
        func answer(offset: Int) -> [UInt8] {
            var text = "{\"deleted\":null,\"new\":["
            for index in 0..<count {
                let ip = index % 10 != 9
                let value =
                    ip
                    ? benchmarkIPv4((offset + index) % XDPSuite.rangeCapacity).description
                    : "198.19.\((offset + index) / 10 % 256).0/24"
                if index > 0 { text += "," }
                text +=
                    "{\"duration\":\"3h59m58.123456789s\",\"id\":\(offset + index),\"origin\":\"CAPI\","
                    + "\"scenario\":\"crowdsecurity/ssh-bf\",\"scope\":\"\(ip ? "Ip" : "Range")\",\"type\":\"ban\","
                    + "\"value\":\"\(value)\"}"
            }
            return Array((text + "]}").utf8)
        }
        let startup = answer(offset: 0)
        let delta = answer(offset: count)
        let exact = (0..<count).map { BanRequest(benchmarkIPv6(group: 4, index: $0), BanExpiry.after(seconds: 3600)!) }
        var parse: [Double] = [], parseFloor: [Double] = []
        var swap: [Double] = [], inPlace: [Double] = [], batched: [Double] = []
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = SystemClock.monotonicNanoseconds()
            try body()
            return Double(SystemClock.monotonicNanoseconds() - start) / 1e9
        }
        for _ in 0..<options.rounds {
            let installer = ListInstaller(maps: maps, prefix: "crowdsec/")
            var set = DecisionSet()
            var stream = DecisionStream()
            parse.append(try seconds { stream = try DecisionStream(json: startup) })
            parseFloor.append(try seconds { _ = try JSONSerialization.jsonObject(with: Data(startup)) })
            guard stream.new.count == count else {
                throw MeasurementError(description: "decisions: \(stream.new.count) parsed of \(count)")
            }
            // After a full pull: the set, and every crowdsec/ entry replaced in one swap.
            swap.append(
                try seconds {
                    _ = set.apply(stream, now: SystemClock.bootNanoseconds())
                    _ = try installer.replaceAll(set.wanted())
                })
            // A delta of as many new decisions, in place.
            let next = try DecisionStream(json: delta)
            inPlace.append(try seconds { _ = try installer.apply(set.apply(next, now: SystemClock.bootNanoseconds())) })
            batched.append(
                try seconds {
                    for first in stride(from: 0, to: exact.count, by: 8192) {
                        try maps.ban(batch: Array(exact[first..<min(first + 8192, exact.count)]))
                    }
                })
            try maps.unban(batch: exact.map(\.address))
            _ = try installer.replaceAll([])
        }
        let batchedName = "batched exact bans, as many"
        return [
            Measurement(
                suite: "xdp", name: "crowdsec answer of \(count) decisions parsed", unit: "s", value: median(parse),
                reference: "JSONSerialization of the same answer alone", referenceValue: median(parseFloor),
                rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec full pull of \(count) decisions installed (one swap)", unit: "s",
                value: median(swap), reference: batchedName, referenceValue: median(batched), rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec delta of \(count) new decisions installed in place", unit: "s",
                value: median(inPlace), reference: batchedName, referenceValue: median(batched),
                rounds: options.rounds),
        ]
    }
}
