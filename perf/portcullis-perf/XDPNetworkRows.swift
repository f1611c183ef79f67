// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem
@_spi(Testing) import XDPFirewall
import XDPTesting

/// The `xdp` suite's rows for networks: the filter with every structure in use (the exact maps
/// full, fixed-length prefixes, a CIDR trie, a blocklist, the allowlist) against the exact-only
/// filter as it was before them (`pc_xdp_exact_only` in xdp_reference.bpf.o, with the same exact
/// bans), per packet, in alternating rounds; and the time to load and swap a blocklist against
/// batching as many exact bans. Every key lies in 198.18.0.0/15 or 2001:2::/48.
extension XDPSuite {
    func networkCosts(filterPath: String, referencePath: String) throws -> [Measurement] {
        let filter = try LoadedProgram(filterAt: filterPath, pinDirectory: nil)
        let maps = filter.maps!
        let exactOnly = try LoadedProgram(objectAt: referencePath, programName: "pc_xdp_exact_only")
        let end = BanExpiry.after(seconds: 3600)!

        // First, on empty maps: loading and swapping the list, against batching as many exact bans
        // (which go again before the exact bans of the packet rows).
        // A /17, two hosts that share a /24 or /64 with the covered-miss probes, and IPv6 hosts.
        let list =
            [
                try IPNetwork(parsing: "198.19.128.0/17"), try IPNetwork(parsing: "198.19.0.77"),
                try IPNetwork(parsing: "2001:2::77"),
            ]
            + (0..<max(listEntries - 3, 1)).map {
                IPNetwork(containing: benchmarkIPv6(group: 2, index: $0), length: 128)
            }

        var swaps: [Double] = []
        var batches: [Double] = []
        let listed = (0..<listEntries).map { BanRequest(benchmarkIPv6(group: 3, index: $0), end) }
        for _ in 0..<options.rounds {
            var start = SystemClock.monotonicNanoseconds()
            try maps.replaceList(origin: 200, with: list)
            swaps.append(Double(SystemClock.monotonicNanoseconds() - start) / 1e9)
            start = SystemClock.monotonicNanoseconds()
            for first in stride(from: 0, to: listed.count, by: 8192) {
                try maps.ban(batch: Array(listed[first..<min(first + 8192, listed.count)]))
            }
            batches.append(Double(SystemClock.monotonicNanoseconds() - start) / 1e9)
            try maps.unban(batch: listed.map(\.address))
        }
        var results = [
            Measurement(
                suite: "xdp", name: "blocklist load and swap (\(listEntries) entries)", unit: "s",
                value: median(swaps), reference: "batched exact bans, as many", referenceValue: median(batches),
                rounds: options.rounds)
        ]

        // Exact bans: 65,536 IPv4 addresses from 198.18.0.4 on (198.19.1.0 and above stay for the
        // networks), and exactBans IPv6 addresses (2001:2:0:1::N), in both programs' maps.
        let exact4 = (0..<65_536).map { BanRequest(benchmarkIPv4($0), end) }
        let exact6 = (0..<exactBans).map { BanRequest(benchmarkIPv6(group: 1, index: $0), end) }
        for requests in [exact4, exact6] {
            for start in stride(from: 0, to: requests.count, by: 8192) {
                try maps.ban(batch: Array(requests[start..<min(start + 8192, requests.count)]))
            }
        }
        try fill(exactOnly, "ref_bans_v4", exact4.map(\.address.ipv4Key), end: end)
        try fill(exactOnly, "ref_bans_v6", exact6.map(\.address.ipv6Key), end: end)

        // Prefixes: 63 IPv4 /24s (198.19.1-63.0) and `prefixes` IPv6 /64s in the upper half of the
        // /48 (2001:2:0:8000::/64 on); the probes stay in its lower half.
        for third in 1..<64 {
            try maps.ban(network: IPNetwork(containing: IPAddress(ipv4: 198, 19, UInt8(third), 0), length: 24), end)
        }
        for index in 0..<prefixes {
            try maps.ban(
                network: IPNetwork(containing: benchmarkIPv6(group: UInt16(0x8000 + index), index: 0), length: 64), end)
        }
        // The allowlist as a daemon writes it (the list is in already). No CIDR ban yet: the
        // issue's configuration (exact bans, prefixes, a list); the CIDR trie comes last.
        try maps.replaceAllowlist([try IPNetwork(parsing: "198.18.0.3"), try IPNetwork(parsing: "2001:2::3")])
        let server4 = IPAddress("198.18.255.254")!
        let server6 = IPAddress("2001:2::fffe")!
        func frame(_ text: String) -> [UInt8] {
            let address = IPAddress(text)!
            return TestFrame.udp(from: address, to: address.family == .ipv4 ? server4 : server6)
        }
        // name, frame, the filter's verdict, the exact-only filter's verdict.
        let cases: [(String, [UInt8], XDPVerdict, XDPVerdict)] = [
            ("IPv4 miss", frame("198.18.0.2"), .pass, .pass),
            // 198.19.0.0/24 holds a listed host: a miss there asks every structure.
            ("IPv4 miss in a covered /24", frame("198.19.0.5"), .pass, .pass),
            ("IPv4 exact hit", frame("198.18.0.9"), .drop, .drop),
            ("IPv4 /24 hit", frame("198.19.7.1"), .drop, .pass),
            ("IPv4 list hit", frame("198.19.200.1"), .drop, .pass),
            ("IPv6 miss", frame("2001:2:0:3::1"), .pass, .pass),
            // 2001:2::/64 holds a listed host: a miss there asks every structure.
            ("IPv6 miss in a covered /64", frame("2001:2::2"), .pass, .pass),
            ("IPv6 exact hit", TestFrame.udp(from: benchmarkIPv6(group: 1, index: 5), to: server6), .drop, .drop),
            ("IPv6 /64 hit", TestFrame.udp(from: benchmarkIPv6(group: 0x8001, index: 9), to: server6), .drop, .pass),
            ("IPv6 list hit", TestFrame.udp(from: benchmarkIPv6(group: 2, index: 7), to: server6), .drop, .pass),
        ]
        func measure(_ cases: [(String, [UInt8], XDPVerdict, XDPVerdict)], suffix: String) throws {
            for (name, bytes, expected, referenceExpected) in cases {
                let (times, referenceTimes) = try alternatingRuns(
                    name, bytes, filter: (filter, expected), reference: (exactOnly, referenceExpected))
                let ratio = median(zip(times, referenceTimes).map { $0 / max($1, 1) })
                results.append(
                    Measurement(
                        suite: "xdp", name: "networks loaded\(suffix), \(name)", unit: "ns/packet",
                        value: median(times),
                        reference: "exact-only filter, same exact bans", referenceValue: median(referenceTimes),
                        rounds: options.rounds, ratio: ratio))
            }

        }
        try measure(cases, suffix: "")
        // A CIDR ban a family too: the trie every covered miss then also asks.
        try maps.ban(network: try IPNetwork(parsing: "198.19.64.0/18"), end)
        try maps.ban(network: try IPNetwork(parsing: "2001:2:0:4000::/50"), end)
        try measure(
            cases.filter { $0.0.contains("miss") } + [("IPv4 CIDR hit", frame("198.19.70.1"), .drop, .pass)],
            suffix: ", CIDR trie in use")
        return results
    }

    /// Fills an exact map of the exact-only program with one batch update per 8,192 keys.
    private func fill<Key>(_ program: LoadedProgram, _ name: String, _ keys: [Key], end: BanExpiry) throws {
        let fd = bpf_map__fd(try program.object.map(name))
        let value = pc_ban(expires_ns: end.nanosecondsForReference, dropped: 0, origin: 0, tag: 0)
        try updateBatches(fd: fd, keys: keys, what: name) { [pc_ban](repeating: value, count: $0) }
    }
}

extension BanExpiry {
    /// The map value's end (0: for good), for the reference program's own maps.
    var nanosecondsForReference: UInt64 {
        switch self {
        case .permanent: 0
        case .at(let end): end
        }
    }
}
