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
    public static func enforcement(of maps: BanMaps, on interface: String) throws(FirewallError) -> Enforcement {
        let ifindex = try index(of: interface)
        let wanted = [try mapID(maps.bansV4.fd), try mapID(maps.bansV6.fd)]
        return try withFilterProgram(ifindex: ifindex) { (program, _) throws(FirewallError) -> Enforcement in
            guard let program else { return .notAttached }
            let used = try programMapIDs(xdp_program__fd(program))
            return wanted.allSatisfy(used.contains) ? .enforced : .otherMaps
        }
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
