// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// The kernel's side of `BanMaps.banKeepingLonger`: `pc_install_bans`, a `BPF_PROG_TYPE_SYSCALL`
/// program of the filter's object, installs a batch of bans in one `BPF_PROG_RUN`, each never
/// shortening a ban already there (see `struct pc_install_slot` in bpf/portcullis_abi.h). A batched
/// update cannot (`bpf_map_update_batch` refuses `BPF_NOEXIST`), and one `bpf_map_update_elem`
/// per ban costs a system call each (measured: see BUILD.md, workload suite).
///
/// Loaded from the filter's object with only this program and its slots; the ban maps are the
/// ones given (their descriptors reused), so it works on pinned and private maps alike.
final class BanInstaller: @unchecked Sendable {
    private let object: BPFObject
    private let programFD: Int32
    private let slotsFD: BPFDescriptor
    private let slots: UnsafeMutablePointer<pc_install_slot>
    private let mappedBytes: Int
    /// The slots are one buffer: callers take turns.
    private let lock = Mutex<Void>(())

    static let capacity = Int(PC_INSTALL_SLOTS)

    init(objectPath: String, bansV4: Int32, bansV6: Int32) throws(FirewallError) {
        let object = try BPFObject(path: objectPath, pinDirectory: nil)
        var program = bpf_object__next_program(object.handle, nil)
        while let current = program {
            bpf_program__set_autoload(current, String(cString: bpf_program__name(current)) == PC_INSTALL_PROG_NAME)
            program = bpf_object__next_program(object.handle, current)
        }
        var map = bpf_object__next_map(object.handle, nil)
        while let current = map {
            let name = String(cString: bpf_map__name(current))
            if name == PC_MAP_BANS_V4 || name == PC_MAP_BANS_V6 {
                let fd = name == PC_MAP_BANS_V4 ? bansV4 : bansV6
                try bpfCall("reuse \(name) for the ban installer") { bpf_map__reuse_fd(current, fd) }
            } else if name != PC_MAP_INSTALL {
                bpf_map__set_autocreate(current, false)
            }
            map = bpf_object__next_map(object.handle, current)
        }
        try object.load()
        programFD = try object.programFD(named: PC_INSTALL_PROG_NAME)
        slotsFD = try BPFDescriptor.duplicate(bpf_map__fd(try object.map(PC_MAP_INSTALL)), what: PC_MAP_INSTALL)
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let bytes = Self.capacity * MemoryLayout<pc_install_slot>.stride
        mappedBytes = (bytes + pageSize - 1) / pageSize * pageSize
        let (length, slotsDescriptor) = (mappedBytes, slotsFD.fd)
        let mapped: UnsafeMutableRawPointer
        switch mapMemoryResult({ mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, slotsDescriptor, 0) }) {
        case .success(let mapping): mapped = mapping
        case .failure(let error): throw systemError("map \(PC_MAP_INSTALL) into memory", error.code)
        }
        slots = mapped.assumingMemoryBound(to: pc_install_slot.self)
        self.object = object
    }

    deinit { munmap(slots, mappedBytes) }

    /// Installs `requests` in runs of `capacity`.
    /// - Returns: the outcome of each request, in order, up to the first run that failed, and
    ///   that run's error (its requests and those after it were not tried).
    func install(_ requests: [BanRequest]) -> (outcomes: [pc_install_outcome], error: FirewallError?) {
        lock.withLock { _ in
            var outcomes: [pc_install_outcome] = []
            outcomes.reserveCapacity(requests.count)
            var start = 0
            while start < requests.count {
                let count = min(Self.capacity, requests.count - start)
                for index in 0..<count { fill(slots + index, requests[start + index]) }
                if let error = run(count) { return (outcomes, error) }
                for index in 0..<count { outcomes.append(pc_install_outcome(UInt32(slots[index].outcome))) }
                start += count
            }
            return (outcomes, nil)
        }
    }

    /// One `BPF_PROG_RUN` over the first `count` slots. - Returns: why it failed, or nil.
    private func run(_ count: Int) -> FirewallError? {
        var args = pc_install_args(count: UInt32(count), reserved: 0)
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        do throws(FirewallError) {
            try withUnsafeMutableBytes(of: &args) { (raw) throws(FirewallError) in
                options.ctx_in = UnsafeRawPointer(raw.baseAddress)
                options.ctx_size_in = UInt32(raw.count)
                try bpfCall("run the ban installer") { bpf_prog_test_run_opts(programFD, &options) }
            }
        } catch {
            return error
        }
        if Int32(bitPattern: options.retval) != 0 {
            return .system(operation: "run the ban installer", errno: EINVAL, detail: "it refused \(count) slots")
        }
        return nil
    }

    private func fill(_ slot: UnsafeMutablePointer<pc_install_slot>, _ request: BanRequest) {
        let address = request.address
        slot.pointee.expires_ns = request.expiry.expiresNanoseconds
        slot.pointee.origin = request.origin
        slot.pointee.outcome = 0
        slot.pointee.family = address.isIPv4 ? 4 : 6
        // addr: 4 bytes (IPv4, the other 12 unused) or 16 (IPv6), network order.
        withUnsafeMutableBytes(of: &slot.pointee.addr) { addr in
            if address.isIPv4 {
                addr.storeBytes(of: address.ipv4NetworkOrder, as: UInt32.self)
            } else {
                addr.storeBytes(of: address.high, as: UInt64.self)
                addr.storeBytes(of: address.low, toByteOffset: 8, as: UInt64.self)
            }
        }
    }
}
