// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem
@_spi(Testing) import XDPFirewall

/// xdp-filter (xdp-tools 1.3.1), the in-run peer of the `xdp` suite: the `xdpfilt_alw_ip.o` that
/// Debian's libxdp package installs (its blocklist mode: an address flagged MAP_FLAG_SRC drops the
/// frames it sends), loaded with its maps private to this process and filled as xdp-filter's own
/// tool fills them (`xdp-filter ip --mode src ADDR`: key the address as on the wire, value the flags
/// on every CPU of its per-CPU hash).
struct XDPFilterPeer {
    static let defaultPath = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_ip.o"
    /// xdp-tools' common_kern_user.h: MAP_FLAG_SRC; the counter above COUNTER_SHIFT starts at 0.
    static let sourceFlag: UInt64 = 1

    let program: LoadedProgram
    private let cpus: Int

    /// Loads the peer with room for `entries` addresses per family (its object says 10,000; the
    /// suite's tables are larger, and the same table is the fair comparison).
    /// - Returns: nil, having said why on stderr, when the object is not installed.
    static func load(path: String, entries: UInt32) throws -> XDPFilterPeer? {
        guard FileManager.default.fileExists(atPath: path) else {
            FileHandle.standardError.write(
                Data(
                    ("portcullis-perf: xdp-filter's \(path) is missing (Debian: apt-get install libxdp1); "
                        + "the rows beside xdp-filter are skipped\n").utf8))
            return nil
        }
        let program = try LoadedProgram(
            objectAt: path, programName: "xdpfilt_alw_ip", sizes: ["filter_ipv4": entries, "filter_ipv6": entries])
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw MeasurementError(description: "cannot count the possible CPUs") }
        return XDPFilterPeer(program: program, cpus: cpus)
    }

    /// Flags `addresses` (one family's or both) as sources to drop.
    func block(_ addresses: [IPAddress]) throws {
        let v4 = addresses.filter { $0.family == .ipv4 }.map(\.ipv4Key)
        let v6 = addresses.filter { $0.family == .ipv6 }.map(\.ipv6Key)
        try fill("filter_ipv4", v4)
        try fill("filter_ipv6", v6)
    }

    private func fill<Key>(_ name: String, _ keys: [Key]) throws {
        let fd = bpf_map__fd(try program.object.map(name))
        try updateBatches(fd: fd, keys: keys, what: "xdp-filter's \(name)") { count in
            [UInt64](repeating: Self.sourceFlag, count: count * cpus)
        }
    }

    /// Frames xdp-filter has returned `verdict` for (its xdp_stats_map, summed over CPUs).
    func frames(_ verdict: XDPVerdict) throws -> UInt64 {
        let map = try program.object.map("xdp_stats_map")
        guard bpf_map__value_size(map) == 16 else {
            throw MeasurementError(description: "xdp-filter's xdp_stats_map holds another record than packets, bytes")
        }
        let fd = bpf_map__fd(map)
        var key = verdict.rawValue
        // struct xdp_stats_record: packets, bytes (u64 each), per CPU.
        var values = [UInt64](repeating: 0, count: 2 * cpus)
        guard bpf_map_lookup_elem(fd, &key, &values) == 0 else {
            throw MeasurementError(description: "read xdp-filter's xdp_stats_map: errno \(errno)")
        }
        return stride(from: 0, to: values.count, by: 2).reduce(0) { $0 &+ values[$1] }
    }
}

/// Writes `keys` into the map `fd` with one `bpf_map_update_batch` per 8,192 of them, the values of
/// each chunk made by `values` (given the chunk's size: a value per key, or per key and CPU).
func updateBatches<Key, Value>(fd: Int32, keys: [Key], what: String, values: (Int) -> [Value]) throws {
    for start in stride(from: 0, to: keys.count, by: 8192) {
        let chunk = Array(keys[start..<min(start + 8192, keys.count)])
        let chunkValues = values(chunk.count)
        var count = UInt32(chunk.count)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        let result = chunk.withUnsafeBytes { keyBytes in
            chunkValues.withUnsafeBytes { valueBytes in
                bpf_map_update_batch(fd, keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
            }
        }
        guard result == 0 else { throw MeasurementError(description: "fill \(what): errno \(errno)") }
    }
}
