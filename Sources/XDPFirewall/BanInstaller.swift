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
/// Loaded from the filter's object with only this program (and `pc_install_list_hosts`, the list
/// layer's writer in place, where this kernel verifies it) and its slots; the maps are the ones
/// given (their descriptors reused), so it works on pinned and private maps alike.
final class BanInstaller: @unchecked Sendable {
    private let object: BPFObject
    private let programFD: Int32
    /// `pc_install_list_hosts`, or nil (`listProblem` says why).
    let listProgramFD: Int32?
    /// Why the list layer's writer is not loaded (nil: it is).
    let listProblem: String?
    private let slotsFD: BPFDescriptor
    let slots: UnsafeMutablePointer<pc_install_slot>
    private let mappedBytes: Int
    /// The slots are one buffer: callers take turns.
    let lock = Mutex<Void>(())

    static let capacity = Int(PC_INSTALL_SLOTS)

    /// - Parameter maps: the descriptors of the maps the programs write, by name: the exact maps
    ///   and the list layer's hosts maps.
    init(objectPath: String, maps: [String: Int32]) throws(FirewallError) {
        let object: BPFObject
        var listProblem: String?
        do throws(FirewallError) {
            object = try Self.load(objectPath, maps: maps, programs: [PC_INSTALL_PROG_NAME, PC_INSTALL_LIST_PROG_NAME])
        } catch {
            // A kernel that refuses the list writer (its sleepable map-in-map lookups): the ban
            // installer alone, and the list layer written from user space.
            listProblem = "\(error)"
            object = try Self.load(objectPath, maps: maps, programs: [PC_INSTALL_PROG_NAME])
        }
        programFD = try object.programFD(named: PC_INSTALL_PROG_NAME)
        listProgramFD = listProblem == nil ? try object.programFD(named: PC_INSTALL_LIST_PROG_NAME) : nil
        self.listProblem = listProblem
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

    /// The object at `path` with only `programs` to load, the maps in `maps` reused and the
    /// slots made; nothing else created.
    private static func load(
        _ path: String, maps: [String: Int32], programs: Set<String>
    ) throws(FirewallError)
        -> BPFObject
    {
        let object = try BPFObject(path: path, pinDirectory: nil)
        var program = bpf_object__next_program(object.handle, nil)
        while let current = program {
            bpf_program__set_autoload(current, programs.contains(String(cString: bpf_program__name(current))))
            program = bpf_object__next_program(object.handle, current)
        }
        var map = bpf_object__next_map(object.handle, nil)
        while let current = map {
            let name = String(cString: bpf_map__name(current))
            if let fd = maps[name] {
                try bpfCall("reuse \(name) for the ban installer") { bpf_map__reuse_fd(current, fd) }
            } else if name != PC_MAP_INSTALL {
                bpf_map__set_autocreate(current, false)
            }
            map = bpf_object__next_map(object.handle, current)
        }
        try object.load()
        return object
    }

    /// Installs `requests` in runs of `capacity`.
    /// - Returns: the outcome of each request, in order, up to the first run that failed, and
    ///   that run's error (its requests and those after it were not tried).
    func install(_ requests: [BanRequest]) -> (outcomes: [pc_install_outcome], error: FirewallError?) {
        runs(of: requests.count, fill: { fill($1, requests[$0]) }, run: run)
    }

    /// Fills the slots with `total` requests (`fill(index, slot)`) and runs them (`run(count)`), in
    /// runs of `capacity`, the slots held meanwhile.
    /// - Returns: the outcome of each request, in order, up to the first run that failed, and
    ///   that run's error (its requests and those after it were not tried).
    func runs(
        of total: Int, fill: (Int, UnsafeMutablePointer<pc_install_slot>) -> Void, run: (Int) -> FirewallError?
    ) -> (outcomes: [pc_install_outcome], error: FirewallError?) {
        lock.withLock { _ in
            var outcomes: [pc_install_outcome] = []
            outcomes.reserveCapacity(total)
            var start = 0
            while start < total {
                let count = min(Self.capacity, total - start)
                for index in 0..<count { fill(start + index, slots + index) }
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
        return Self.run(programFD, context: &args, count: count)
    }

    /// One `BPF_PROG_RUN` of `program` with `context`. - Returns: why it failed, or nil.
    static func run<Context>(_ program: Int32, context: inout Context, count: Int) -> FirewallError? {
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        do throws(FirewallError) {
            try withUnsafeMutableBytes(of: &context) { (raw) throws(FirewallError) in
                options.ctx_in = UnsafeRawPointer(raw.baseAddress)
                options.ctx_size_in = UInt32(raw.count)
                try bpfCall("run the ban installer") { bpf_prog_test_run_opts(program, &options) }
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
        Self.fill(slot, request, operation: 0)
    }

    /// Writes `request` into `slot`, with `operation` in its reserved field (the list writer's).
    static func fill(_ slot: UnsafeMutablePointer<pc_install_slot>, _ request: BanRequest, operation: UInt16) {
        let address = request.address
        slot.pointee.expires_ns = request.expiry.expiresNanoseconds
        slot.pointee.origin = request.origin
        slot.pointee.outcome = 0
        slot.pointee.reserved = operation
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
