// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisCrowdSec
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// A Local API answer of `count` decisions as `/v1/decisions/stream` writes it, the decisions
/// numbered from `offset` on, each on a network of its own (answers of other offsets name other
/// networks): Ip decisions alternately in 198.18.0.0/15 and 2001:2:0:5::/64, and a tenth
/// Ranges, /64s of 2001:2::/48. At most 262,136 decisions from offset 0 (the IPv4 addresses of
/// the range, twice over).
func crowdSecAnswer(offset: Int, count: Int) -> [UInt8] {
    var text = "{\"deleted\":null,\"new\":["
    text.reserveCapacity(count * 160)
    for index in offset..<offset + count {
        let ip = index % 10 != 9
        let value =
            !ip
            ? benchmarkIPv6(group: UInt16(0x4000 + index / 10), index: 0).description + "/64"
            : index % 2 == 0
                ? benchmarkIPv4(index / 2).description : benchmarkIPv6(group: 5, index: index).description
        if index > offset { text += "," }
        text +=
            "{\"duration\":\"3h59m58.123456789s\",\"id\":\(index),\"origin\":\"CAPI\","
            + "\"scenario\":\"crowdsecurity/ssh-bf\",\"scope\":\"\(ip ? "Ip" : "Range")\",\"type\":\"ban\","
            + "\"value\":\"\(value)\"}"
    }
    return Array((text + "]}").utf8)
}

/// The `xdp` suite's rows for the CrowdSec bouncer: a Local API answer of N decisions
/// (`crowdSecAnswer`) parsed, and installed as the bouncer does after a full pull (one swap)
/// and after a delta (in place), against the floors measured in the same rounds: the JSON parse
/// alone (Foundation's JSONSerialization, what the decoder sits on) and batched exact bans of as
/// many addresses (one bpf_map_update_batch per 8,192), the full pull also without its decision
/// set (the list layer's part alone). Then per decision: a delta of N against
/// the full pull of N (what a delta costs more per entry), a delta of N/2 against the delta of N
/// (1: linear), and the decision set's share of the full pull (what the bouncer's set costs,
/// beside the maps).
extension XDPSuite {
    func decisionCosts(filterPath: String) throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: filterPath, pinDirectory: nil)
        let maps = filter.maps!
        let count = decisions
        let startup = crowdSecAnswer(offset: 0, count: count)
        let delta = crowdSecAnswer(offset: count, count: count)
        let halfDelta = crowdSecAnswer(offset: count, count: count / 2)
        let exact = (0..<count).map { BanRequest(benchmarkIPv6(group: 4, index: $0), BanExpiry.after(seconds: 3600)!) }
        var parse: [Double] = [], parseFloor: [Double] = []
        var swap: [Double] = [], setShare: [Double] = [], inPlace: [Double] = [], halfInPlace: [Double] = []
        var batched: [Double] = []
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = SystemClock.monotonicNanoseconds()
            try body()
            return Double(SystemClock.monotonicNanoseconds() - start) / 1e9
        }
        /// A full pull of `startup` into a new set and installer: the seconds of the set alone, and of the whole.
        func fullPull(_ stream: DecisionStream) throws -> (set: Double, whole: Double, ListInstaller, DecisionSet) {
            let installer = ListInstaller(maps: maps, prefix: "crowdsec/")
            var set = DecisionSet()
            let start = SystemClock.monotonicNanoseconds()
            _ = set.apply(stream, now: SystemClock.bootNanoseconds())
            let wanted = set.wanted()
            let built = Double(SystemClock.monotonicNanoseconds() - start) / 1e9
            let installed = try seconds { _ = try installer.replaceAll(wanted) }
            guard try maps.listEntries().count == count else {
                throw MeasurementError(description: "decisions: \(try maps.listEntries().count) installed of \(count)")
            }
            return (built, built + installed, installer, set)
        }
        for _ in 0..<options.rounds {
            var stream = DecisionStream()
            parse.append(try seconds { stream = try DecisionStream(json: startup) })
            parseFloor.append(try seconds { _ = try JSONSerialization.jsonObject(with: Data(startup)) })
            guard stream.new.count == count else {
                throw MeasurementError(description: "decisions: \(stream.new.count) parsed of \(count)")
            }
            // After a full pull: the set, and every crowdsec/ entry replaced in one swap.
            var (built, whole, installer, set) = try fullPull(stream)
            setShare.append(built)
            swap.append(whole)
            // A delta of as many new decisions, in place.
            let next = try DecisionStream(json: delta)
            inPlace.append(try seconds { _ = try installer.apply(set.apply(next, now: SystemClock.bootNanoseconds())) })
            guard try maps.listEntries().count == 2 * count else {
                throw MeasurementError(
                    description: "delta: \(try maps.listEntries().count) in the maps of \(2 * count)")
            }
            batched.append(
                try seconds {
                    for first in stride(from: 0, to: exact.count, by: 8192) {
                        try maps.ban(batch: Array(exact[first..<min(first + 8192, exact.count)]))
                    }
                })
            try maps.unban(batch: exact.map(\.address))
            // A delta of half as many, on the same full pull.
            _ = try installer.replaceAll([])
            (_, _, installer, set) = try fullPull(stream)
            let half = try DecisionStream(json: halfDelta)
            halfInPlace.append(
                try seconds { _ = try installer.apply(set.apply(half, now: SystemClock.bootNanoseconds())) })
            _ = try installer.replaceAll([])
        }
        // What the parsed answer and the decision set hold on the heap (once: no timing).
        func heapBytes() -> Double { Double(cportcullis_heap_in_use()) }
        let empty = heapBytes()
        var held = try DecisionStream(json: startup)
        let parsedBytes = heapBytes() - empty
        var heldSet = DecisionSet()
        _ = heldSet.apply(held, now: SystemClock.bootNanoseconds())
        held = DecisionStream()
        let setBytes = heapBytes() - empty
        withExtendedLifetime(heldSet) {}
        let megabytes = Double(startup.count) / 1e6
        let batchedName = "batched exact bans, as many"
        let fullPerEntry = median(swap) / Double(count) * 1e6
        let deltaPerEntry = median(inPlace) / Double(count) * 1e6
        return [
            Measurement(
                suite: "xdp", name: "crowdsec answer of \(count) decisions parsed", unit: "s", value: median(parse),
                reference: "JSONSerialization of the same answer alone", referenceValue: median(parseFloor),
                rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec full pull of \(count) decisions installed (one swap)", unit: "s",
                value: median(swap), reference: batchedName, referenceValue: median(batched), rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec full pull of \(count): the maps written (one swap)", unit: "s",
                value: median(zip(swap, setShare).map { $0 - $1 }), reference: batchedName,
                referenceValue: median(batched), rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec delta of \(count) new decisions installed in place", unit: "s",
                value: median(inPlace), reference: batchedName, referenceValue: median(batched),
                rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec delta of \(count) in place, per decision", unit: "µs",
                value: deltaPerEntry, reference: "full pull of \(count), per decision", referenceValue: fullPerEntry,
                rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec delta of \(count / 2) in place, per decision", unit: "µs",
                value: median(halfInPlace) / Double(count / 2) * 1e6,
                reference: "delta of \(count), per decision", referenceValue: deltaPerEntry, rounds: options.rounds),
            Measurement(
                suite: "xdp", name: "crowdsec answer of \(count) parsed: heap held", unit: "MB",
                value: parsedBytes / 1e6, reference: "the answer's size", referenceValue: megabytes, rounds: 1),
            Measurement(
                suite: "xdp", name: "crowdsec decision set of \(count): heap held", unit: "MB",
                value: setBytes / 1e6, reference: "the answer's size", referenceValue: megabytes, rounds: 1),
            Measurement(
                suite: "xdp", name: "crowdsec full pull of \(count): the decision set built", unit: "s",
                value: median(setShare), reference: "the whole full pull", referenceValue: median(swap),
                rounds: options.rounds),
        ]
    }
}
