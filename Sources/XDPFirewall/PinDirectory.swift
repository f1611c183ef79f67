// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// The directory on a BPF filesystem where the filter's maps are pinned, so that bans outlive the
/// process that made them and every Portcullis command sees the same maps.
public struct PinDirectory: Sendable, CustomStringConvertible {
    /// Where maps are pinned unless `--pin-dir` says otherwise.
    public static let defaultPath = "/sys/fs/bpf/portcullis"

    public let path: String

    public init(_ path: String = PinDirectory.defaultPath) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    public var description: String { path }

    /// Path of a pinned map in this directory.
    func mapPath(_ name: String) -> String { "\(path)/\(name)" }

    /// Whether the directory exists and holds at least one of the filter's maps.
    public var holdsMaps: Bool {
        MapSpec.all.contains { access(mapPath($0.name), F_OK) == 0 }
    }

    /// Makes sure the directory exists (mode 0700) on a BPF filesystem, mounting one at
    /// `/sys/fs/bpf` if nothing is mounted there yet (as `bpftool` and `ip` do).
    public func prepare() throws(FirewallError) {
        try checkAbsolute()
        if path.hasPrefix("/sys/fs/bpf/") || path == "/sys/fs/bpf" {
            try Self.mountBPFFilesystemIfNeeded()
        }
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if case .failure(let error) = systemCallResult({ mkdir(prefix, 0o700) }), error.code != EEXIST {
                throw systemError("create pin directory \(prefix)", error.code)
            }
        }
        guard Self.isBPFFilesystem(path) else { throw .notBPFFilesystem(path: path) }
    }

    /// Pin directories are absolute paths (on the BPF filesystem, normally under /sys/fs/bpf).
    func checkAbsolute() throws(FirewallError) {
        guard path.hasPrefix("/") else { throw .notBPFFilesystem(path: path) }
    }

    /// Removes the filter's pinned maps and, if it is then empty, the directory itself. Maps stay
    /// alive while an attached program still uses them.
    public func removeMaps() throws(FirewallError) {
        for spec in MapSpec.all {
            if case .failure(let error) = systemCallResult({ unlink(mapPath(spec.name)) }), error.code != ENOENT {
                throw systemError("remove pinned map \(mapPath(spec.name))", error.code)
            }
        }
        rmdir(path)
    }

    static func isBPFFilesystem(_ path: String) -> Bool {
        var info = statfs()
        return statfs(path, &info) == 0 && UInt(bitPattern: Int(info.f_type)) == UInt(BPF_FS_MAGIC)
    }

    private static func mountBPFFilesystemIfNeeded() throws(FirewallError) {
        guard !isBPFFilesystem("/sys/fs/bpf") else { return }
        try systemCall(
            { mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") },
            orThrow: { systemError("mount the BPF filesystem at /sys/fs/bpf", $0.code) })
    }
}

/// What a pinned map must look like to be reused: its type and key/value sizes come from the ABI
/// header (bpf/portcullis_abi.h) through the imported C types, never from literals.
struct MapSpec: Sendable {
    let name: String
    let type: bpf_map_type
    let keySize: Int
    let valueSize: Int
    /// Entries a pinned map must have (nil: any; the ban maps' size is the operator's).
    var maxEntries: UInt32? = nil

    static let bansV4 = MapSpec(
        name: PC_MAP_BANS_V4, type: BPF_MAP_TYPE_HASH,
        keySize: MemoryLayout<pc_ipv4_key>.size, valueSize: MemoryLayout<pc_ban>.size)
    static let bansV6 = MapSpec(
        name: PC_MAP_BANS_V6, type: BPF_MAP_TYPE_HASH,
        keySize: MemoryLayout<pc_ipv6_key>.size, valueSize: MemoryLayout<pc_ban>.size)
    static let stats = MapSpec(
        name: PC_MAP_STATS, type: BPF_MAP_TYPE_PERCPU_ARRAY,
        keySize: MemoryLayout<UInt32>.size, valueSize: MemoryLayout<pc_stat>.size)
    static let meta = MapSpec(
        name: PC_MAP_META, type: BPF_MAP_TYPE_ARRAY,
        keySize: MemoryLayout<UInt32>.size, valueSize: MemoryLayout<pc_meta>.size)

    static let origins = MapSpec(
        name: PC_MAP_ORIGINS, type: BPF_MAP_TYPE_ARRAY,
        keySize: MemoryLayout<UInt32>.size, valueSize: MemoryLayout<pc_origin>.size)

    static func prefix(_ name: String, v6: Bool, type: bpf_map_type, value: Int = MemoryLayout<pc_ban>.size) -> MapSpec
    {
        MapSpec(
            name: name, type: type,
            keySize: v6 ? MemoryLayout<pc_prefix6_key>.size : MemoryLayout<pc_prefix4_key>.size, valueSize: value)
    }
    static let prefixV4 = prefix(PC_MAP_PREFIX_V4, v6: false, type: BPF_MAP_TYPE_HASH)
    static let prefixV6 = prefix(PC_MAP_PREFIX_V6, v6: true, type: BPF_MAP_TYPE_HASH)
    static let cidrV4 = prefix(PC_MAP_CIDR_V4, v6: false, type: BPF_MAP_TYPE_LPM_TRIE)
    static let cidrV6 = prefix(PC_MAP_CIDR_V6, v6: true, type: BPF_MAP_TYPE_LPM_TRIE)
    static let allowV4 = prefix(PC_MAP_ALLOW_V4, v6: false, type: BPF_MAP_TYPE_LPM_TRIE, value: 4)
    static let allowV6 = prefix(PC_MAP_ALLOW_V6, v6: true, type: BPF_MAP_TYPE_LPM_TRIE, value: 4)
    static let listsV4 = MapSpec(name: PC_MAP_LISTS_V4, type: BPF_MAP_TYPE_ARRAY_OF_MAPS, keySize: 4, valueSize: 4)
    static let listsV6 = MapSpec(name: PC_MAP_LISTS_V6, type: BPF_MAP_TYPE_ARRAY_OF_MAPS, keySize: 4, valueSize: 4)
    static let config = MapSpec(name: PC_MAP_CONFIG, type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: 4)
    static let listHostsV4 = MapSpec(
        name: PC_MAP_LIST_HOSTS_V4, type: BPF_MAP_TYPE_ARRAY_OF_MAPS, keySize: 4, valueSize: 4)
    static let listHostsV6 = MapSpec(
        name: PC_MAP_LIST_HOSTS_V6, type: BPF_MAP_TYPE_ARRAY_OF_MAPS, keySize: 4, valueSize: 4)
    static let cover = MapSpec(name: PC_MAP_COVER, type: BPF_MAP_TYPE_ARRAY, keySize: 4, valueSize: 8)
    static let drops = MapSpec(
        name: PC_MAP_DROPS, type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: MemoryLayout<UInt32>.size,
        valueSize: MemoryLayout<pc_stat>.size, maxEntries: UInt32(PC_DROP_SLOTS))
    /// The program's clock: its timer runs while the map is pinned, so removing the pins stops it.
    static let clock = MapSpec(
        name: PC_MAP_CLOCK, type: BPF_MAP_TYPE_ARRAY, keySize: MemoryLayout<UInt32>.size,
        valueSize: MemoryLayout<pc_clock>.size, maxEntries: 1)

    /// Each CPU's drops not yet on their entry.
    static let pending = MapSpec(
        name: PC_MAP_PENDING, type: BPF_MAP_TYPE_PERCPU_ARRAY, keySize: MemoryLayout<UInt32>.size,
        valueSize: MemoryLayout<pc_pending>.size, maxEntries: 1)

    static let all = [
        bansV4, bansV6, stats, meta, origins, prefixV4, prefixV6, cidrV4, cidrV6, allowV4, allowV6, listsV4,
        listsV6, listHostsV4, listHostsV6, config, cover, drops, clock, pending,
    ]

    /// Whether pins of this ABI version may lack it: `pc_drops`, `pc_clock` and `pc_pending` came
    /// after the others without changing them (a load adds them beside them; until then the drops
    /// are read from `PC_STAT_DROPPED` alone, a program without the clock reads CLOCK_BOOTTIME
    /// itself, and one without `pc_pending` counts every drop on its entry).
    var mayBeMissingFromPins: Bool { name == PC_MAP_DROPS || name == PC_MAP_CLOCK || name == PC_MAP_PENDING }

    /// Checks an open map against this spec.
    /// - Returns: the map's kernel info (its `max_entries` is the capacity that was chosen at creation).
    func check(fd: Int32, at path: String) throws(FirewallError) -> bpf_map_info {
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        try bpfCall("read map info of \(path)") { bpf_obj_get_info_by_fd(fd, &info, &length) }
        if info.type != type.rawValue {
            throw .incompatiblePins(path: path, detail: "map type \(info.type), expected \(type.rawValue)")
        }
        if info.key_size != keySize || info.value_size != valueSize {
            throw .incompatiblePins(
                path: path,
                detail: "key/value \(info.key_size)/\(info.value_size) bytes, expected \(keySize)/\(valueSize)")
        }
        if let maxEntries, info.max_entries != maxEntries {
            throw .incompatiblePins(path: path, detail: "\(info.max_entries) entries, expected \(maxEntries)")
        }
        return info
    }
}

/// An owned file descriptor of a BPF object (map or program), closed when released.
final class BPFDescriptor: @unchecked Sendable {
    let fd: Int32
    init(_ fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    /// Opens a pinned object; `nil` if nothing is pinned at `path`.
    static func openPinned(_ path: String) throws(FirewallError) -> BPFDescriptor? {
        switch systemCallResult(convention: .negativeErrno, { bpf_obj_get(path) }) {
        case .success(let fd): return BPFDescriptor(fd)
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error): throw systemError("open pinned map \(path)", error.code)
        }
    }

    /// Duplicates a descriptor owned by someone else (libbpf), so it outlives that owner.
    static func duplicate(_ fd: Int32, what: String) throws(FirewallError) -> BPFDescriptor {
        let copy = try systemCall(
            { fcntl(fd, F_DUPFD_CLOEXEC, 0) }, orThrow: { systemError("duplicate descriptor of \(what)", $0.code) })
        return BPFDescriptor(copy)
    }
}
