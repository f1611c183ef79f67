// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

extension Attachment {
    /// Whether the bans written into a set of maps reach the packets of an interface.
    public enum Enforcement: Sendable, Equatable {
        /// The filter runs on the interface and reads these maps.
        case enforced
        /// No filter on the interface (detached, the interface re-created, a driver reset).
        case notAttached
        /// The filter on the interface reads other maps (another pin directory, or a program
        /// replaced by one loaded elsewhere): bans written here drop nothing.
        case otherMaps
    }

    /// Whether the filter attached to `interface` reads `maps`: the kernel ids of the ban maps
    /// among the map ids of the attached program (`bpf_obj_get_info_by_fd`).
    ///
    /// Asks the kernel only (`AttachedFilter.find`), never libxdp: the daemon calls this every
    /// turn of its main loop, and Debian 12's libxdp 1.3.1 leaks a program descriptor per lookup.
    /// - Throws: when the check itself failed (no descriptor left, the interface gone): that is
    ///   not "detached", and the caller must not say it is.
    public static func enforcement(of maps: BanMaps, on interface: String) throws(FirewallError) -> Enforcement {
        let ifindex = try index(of: interface)
        guard let filter = try AttachedFilter.find(ifindex: ifindex) else { return .notAttached }
        return try program(filter.program.fd, reads: maps) ? .enforced : .otherMaps
    }

    /// Whether the program `fd` reads the ban maps of `maps`.
    static func program(_ fd: Int32, reads maps: BanMaps) throws(FirewallError) -> Bool {
        let wanted = [try mapID(maps.bansV4.fd), try mapID(maps.bansV6.fd)]
        return wanted.allSatisfy(try programMapIDs(fd).contains)
    }

    private static func mapID(_ fd: Int32) throws(FirewallError) -> UInt32 {
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        try bpfCall("read the ban map's id") { bpf_obj_get_info_by_fd(fd, &info, &length) }
        return info.id
    }

    private static func programMapIDs(_ fd: Int32) throws(FirewallError) -> [UInt32] {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try bpfCall("read the attached program's maps") { bpf_obj_get_info_by_fd(fd, &info, &length) }
        var ids = [UInt32](repeating: 0, count: Int(info.nr_map_ids))
        guard !ids.isEmpty else { return [] }
        var again = bpf_prog_info()
        again.nr_map_ids = UInt32(ids.count)
        length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try ids.withUnsafeMutableBufferPointer { (buffer) throws(FirewallError) in
            again.map_ids = UInt64(UInt(bitPattern: buffer.baseAddress))
            try bpfCall("read the attached program's maps") { bpf_obj_get_info_by_fd(fd, &again, &length) }
        }
        return Array(ids.prefix(Int(again.nr_map_ids)))
    }
}

/// The filter's program on an interface, found through the kernel alone: the program ids of the
/// interface's XDP attachments (`bpf_xdp_query`), each opened by id and named by its info; under
/// libxdp's dispatcher, the components libxdp pinned for it. Every descriptor it opens is closed
/// with the value (libxdp's `xdp_multiprog__get_from_ifindex` would do the same walk, but 1.3.1
/// leaks a descriptor each time: one every turn of the daemon's loop, out of descriptors in
/// about 35 minutes under systemd's default limit).
struct AttachedFilter {
    let program: BPFDescriptor
    let mode: AttachMode
    /// Whether it runs as a component of libxdp's dispatcher rather than attached directly.
    var underDispatcher = false

    /// The name libxdp's dispatcher program has (`xdp-dispatcher.c` in xdp-tools).
    static let dispatcherName = "xdp_dispatcher"
    /// Where libxdp pins a dispatcher's components (`$LIBXDP_BPFFS`, by default `/sys/fs/bpf/xdp`,
    /// then `dispatch-IFINDEX-DISPATCHERID/progN-prog`); a dispatcher has at most 10.
    static var dispatcherDirectory: String { (getenv("LIBXDP_BPFFS").map { String(cString: $0) } ?? "/sys/fs/bpf/xdp") }
    static let dispatcherSlots = 10

    /// The filter on `ifindex`, or nil when none of its XDP programs is the filter.
    static func find(ifindex: Int32) throws(FirewallError) -> AttachedFilter? {
        var query = bpf_xdp_query_opts()
        // Up to its last field: libbpf refuses non-zero bytes past it, and the padding after it
        // is not guaranteed zero (an optimised build left garbage there: EINVAL).
        query.sz = MemoryLayout<bpf_xdp_query_opts>.offset(of: \.attach_mode)! + MemoryLayout<UInt8>.size
        try bpfCall("query the XDP programs of interface \(ifindex)") { bpf_xdp_query(ifindex, 0, &query) }
        for (id, mode) in [(query.drv_prog_id, AttachMode.native), (query.skb_prog_id, .generic)] where id != 0 {
            // Gone since the query (detached meanwhile): as if it had not been there.
            guard let program = try open(id: id) else { continue }
            let name = try self.name(of: program.fd)
            if name == PC_PROG_NAME { return AttachedFilter(program: program, mode: mode) }
            guard name == dispatcherName else { continue }
            for slot in 0..<dispatcherSlots {
                let path = "\(dispatcherDirectory)/dispatch-\(ifindex)-\(id)/prog\(slot)-prog"
                guard let component = try BPFDescriptor.openPinned(path) else { continue }
                if try self.name(of: component.fd) == PC_PROG_NAME {
                    return AttachedFilter(program: component, mode: mode, underDispatcher: true)
                }
            }
        }
        return nil
    }

    private static func open(id: UInt32) throws(FirewallError) -> BPFDescriptor? {
        switch systemCallResult(convention: .negativeErrno, { bpf_prog_get_fd_by_id(id) }) {
        case .success(let fd): return BPFDescriptor(fd)
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error): throw systemError("open XDP program \(id)", error.code)
        }
    }

    private static func name(of fd: Int32) throws(FirewallError) -> String {
        let info = try self.info(of: fd, "read an XDP program's name")
        return withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// The kernel's tag of the program `fd` (`bpf_prog_info.tag`, in hex): a hash of its
    /// instructions with the map descriptors zeroed, so the same code loaded twice has the same
    /// tag whatever maps it was given, and changed code another.
    static func tag(of fd: Int32) throws(FirewallError) -> String {
        let info = try self.info(of: fd, "read an XDP program's tag")
        return withUnsafeBytes(of: info.tag) { bytes in
            bytes.map { byte in (byte < 16 ? "0" : "") + String(byte, radix: 16) }.joined()
        }
    }

    private static func info(of fd: Int32, _ operation: String) throws(FirewallError) -> bpf_prog_info {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        try bpfCall(operation) { bpf_obj_get_info_by_fd(fd, &info, &length) }
        return info
    }
}
