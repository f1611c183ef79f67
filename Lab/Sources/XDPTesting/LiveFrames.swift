// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem
@_spi(Testing) import XDPFirewall

/// What the testbed's traffic generator needs beyond test runs: its configuration and counter
/// maps, and `BPF_PROG_TEST_RUN` in live-frames mode, where every `XDP_TX` really leaves through
/// an interface (the technique of xdp-trafficgen).
extension LoadedProgram {
    /// Element `index` of the PERCPU_ARRAY map `name`: one value (as bytes) per possible CPU.
    public func perCPUArrayElement(map name: String, index: UInt32 = 0) throws(FirewallError) -> [[UInt8]] {
        let map = try object.map(name)
        let cpus = try possibleCPUs()
        let stride = (Int(bpf_map__value_size(map)) + 7) & ~7
        var key = index
        var values = [UInt8](repeating: 0, count: stride * cpus)
        let size = values.count
        try bpfCall("read map \(name)") { bpf_map__lookup_elem(map, &key, 4, &values, size, 0) }
        return (0..<cpus).map { Array(values[($0 * stride)..<($0 * stride + Int(bpf_map__value_size(map)))]) }
    }

    /// Sets element `index` of the PERCPU_ARRAY map `name`: `values[cpu]` for each possible CPU
    /// (each exactly the map's value size; CPUs beyond `values` get zeros).
    public func setPerCPUArrayElement(map name: String, index: UInt32 = 0, to values: [[UInt8]]) throws(FirewallError) {
        let map = try object.map(name)
        let cpus = try possibleCPUs()
        let size = Int(bpf_map__value_size(map))
        let stride = (size + 7) & ~7
        var bytes = [UInt8](repeating: 0, count: stride * cpus)
        for (cpu, value) in values.prefix(cpus).enumerated() {
            try checkValueSize(map, name: name, size: value.count)
            bytes.replaceSubrange((cpu * stride)..<(cpu * stride + size), with: value)
        }
        var key = index
        let total = bytes.count
        try bpfCall("write map \(name)") { bpf_map__update_elem(map, &key, 4, &bytes, total, UInt64(BPF_ANY)) }
    }

    /// Sets element `index` of the ARRAY map `name` to `bytes` (exactly the map's value size).
    public func setArrayElement(map name: String, index: UInt32 = 0, to bytes: [UInt8]) throws(FirewallError) {
        let map = try object.map(name)
        try checkValueSize(map, name: name, size: bytes.count)
        var key = index
        var value = bytes
        let size = bytes.count
        try bpfCall("write map \(name)") {
            bpf_map__update_elem(map, &key, 4, &value, size, UInt64(BPF_ANY))
        }
    }

    /// CPUs a per-CPU map holds a value for.
    private func possibleCPUs() throws(FirewallError) -> Int {
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { throw .system(operation: "count the possible CPUs", errno: Int32(-cpus), detail: "") }
        return cpus
    }

    private func checkValueSize(_ map: OpaquePointer, name: String, size: Int) throws(FirewallError) {
        let declared = Int(bpf_map__value_size(map))
        guard declared == size else {
            throw .bpfObjectInvalid(
                path: object.path,
                detail: "map \(name) holds \(declared)-byte values, the program expects \(size); "
                    + "rebuild the BPF objects (tools/build-bpf) and the program together")
        }
    }

    /// Why the kernel will not run this program on live frames, or nil when it does: one
    /// `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` on `frame`, arriving on `interfaceIndex`.
    /// Live frames need Linux 5.18 or later, and some kernels refuse them even to root with every
    /// capability (EPERM); that is a missing kernel feature, not a missing privilege. The caller
    /// makes sure that the program transmits nothing in this state (the flood program with its
    /// configuration unset drops every frame: its window ended at 0).
    public func liveFramesRefusal(probing frame: [UInt8], interfaceIndex: Int32) -> FirewallError? {
        do throws(FirewallError) {
            try transmitLiveFrames(frame, count: 1, interfaceIndex: interfaceIndex)
            return nil
        } catch {
            return error
        }
    }

    /// Runs the program `count` times on copies of `frame` as if they had arrived on interface
    /// `interfaceIndex` (of the caller's network namespace); frames it returns `XDP_TX` for are
    /// transmitted out of that interface. The kernel works in batches of `batchSize` frames.
    public func transmitLiveFrames(
        _ frame: [UInt8], count: UInt32, interfaceIndex: Int32,
        batchSize: UInt32 = 64
    ) throws(FirewallError) {
        var context = xdp_md()
        context.data = 0
        context.data_end = UInt32(frame.count)
        context.ingress_ifindex = UInt32(interfaceIndex)
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        options.repeat = Int32(clamping: count)
        options.flags = UInt32(BPF_F_TEST_XDP_LIVE_FRAMES)
        options.batch_size = batchSize
        options.data_size_in = UInt32(frame.count)
        options.ctx_size_in = UInt32(MemoryLayout<xdp_md>.size)
        try frame.withUnsafeBufferPointer { (bytes) throws(FirewallError) in
            try withUnsafeMutablePointer(to: &context) { (context) throws(FirewallError) in
                options.data_in = UnsafeRawPointer(bytes.baseAddress)
                options.ctx_in = UnsafeRawPointer(context)
                try bpfCall("send live frames (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES)") {
                    bpf_prog_test_run_opts(programFD, &options)
                }
            }
        }
    }
}
