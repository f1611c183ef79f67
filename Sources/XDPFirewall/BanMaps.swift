// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization

/// Typed access to the filter's maps: bans (IPv4 and IPv6), counters and the layout marker.
///
/// Opened from a pin directory (the CLI, the daemon) or from a freshly loaded program (tests,
/// benchmarks). All methods are safe to call while the XDP program runs: each map operation is
/// atomic per entry in the kernel.
public final class BanMaps: @unchecked Sendable {
    let bansV4: BPFDescriptor
    let bansV6: BPFDescriptor
    let stats: BPFDescriptor
    let meta: BPFDescriptor
    let origins: BPFDescriptor
    let prefixV4: BPFDescriptor
    let prefixV6: BPFDescriptor
    let cidrV4: BPFDescriptor
    let cidrV6: BPFDescriptor
    let allowV4: BPFDescriptor
    let allowV6: BPFDescriptor
    let listsV4: BPFDescriptor
    let listsV6: BPFDescriptor
    let listHostsV4: BPFDescriptor
    let listHostsV6: BPFDescriptor
    let config: BPFDescriptor
    let cover: BPFDescriptor
    /// Drops by origin and family; nil for pins made before it (`MapSpec.mayBeMissingFromPins`).
    let drops: BPFDescriptor?
    /// Each CPU's drops not yet on their entry; nil for pins made before it.
    let pending: BPFDescriptor?
    /// The time the kernel's timer keeps (read by the program only); nil for pins made before it.
    let clock: BPFDescriptor?
    /// The coverage bitmap, mapped (bits are set with atomic ORs: other writers set bits too).
    let coverBits: UnsafeMutablePointer<UInt64>
    /// Entries each ban map can hold.
    public let capacity: UInt32
    /// The pin directory the maps were opened from or pinned in (nil: private maps): blocklist
    /// writers lock it (`flock`) to take turns.
    var pinDirectoryPath: String?
    let possibleCPUs: Int
    /// The flags of the list layer's hosts hashes: what the template in `pc_lhosts_v4/v6` holds
    /// (preallocated from layout 4 on; pins of layout 3, an earlier build's, allocate per entry).
    let listHostsFlags: UInt32
    /// The kernel ban installer, loaded at the first `banKeepingLonger` (or `loadInstaller`).
    let installer = Mutex(InstallerState())

    struct InstallerState {
        var tried = false
        var installer: BanInstaller?
        var problem: String?
        /// The list layer written from user space even where the kernel's list writer loads (tests).
        var listWriterOff = false
    }

    /// - Parameter maps: a descriptor for each of `MapSpec.all`, by name.
    init(_ maps: [String: BPFDescriptor], capacity: UInt32) throws(FirewallError) {
        func map(_ spec: MapSpec) throws(FirewallError) -> BPFDescriptor {
            guard let descriptor = maps[spec.name] else {
                throw .bpfObjectInvalid(path: spec.name, detail: "the map \(spec.name) is missing")
            }
            return descriptor
        }
        bansV4 = try map(.bansV4)
        bansV6 = try map(.bansV6)
        stats = try map(.stats)
        meta = try map(.meta)
        origins = try map(.origins)
        prefixV4 = try map(.prefixV4)
        prefixV6 = try map(.prefixV6)
        cidrV4 = try map(.cidrV4)
        cidrV6 = try map(.cidrV6)
        allowV4 = try map(.allowV4)
        allowV6 = try map(.allowV6)
        listsV4 = try map(.listsV4)
        listsV6 = try map(.listsV6)
        listHostsV4 = try map(.listHostsV4)
        listHostsV6 = try map(.listHostsV6)
        config = try map(.config)
        cover = try map(.cover)
        drops = maps[MapSpec.drops.name]
        pending = maps[MapSpec.pending.name]
        clock = maps[MapSpec.clock.name]
        var key: UInt32 = 0
        var marker = pc_meta()
        let metaFD = meta.fd
        try bpfCall("read \(PC_MAP_META)") { bpf_map_lookup_elem(metaFD, &key, &marker) }
        listHostsFlags =
            marker.magic == PC_ABI_MAGIC && marker.abi_version == PC_ABI_VERSION_ALLOCATING_HOSTS
            ? UInt32(BPF_F_NO_PREALLOC) : 0
        let mapped = mmap(nil, Int(PC_COVER_WORDS) * 8, PROT_READ | PROT_WRITE, MAP_SHARED, cover.fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw systemError("map \(PC_MAP_COVER) into memory", errno)
        }
        coverBits = mapped.assumingMemoryBound(to: UInt64.self)
        self.capacity = capacity
        let cpus = libbpf_num_possible_cpus()
        guard cpus > 0 else { throw systemError("count possible CPUs", -cpus) }
        possibleCPUs = Int(cpus)
    }

    deinit { munmap(coverBits, Int(PC_COVER_WORDS) * 8) }

    /// Opens the maps pinned in `directory` and checks that they have this build's layout.
    ///
    /// - Throws: `mapsNotPinned` when nothing is pinned there, `incompatiblePins` for maps of
    ///   another layout, `permissionDenied` without CAP_BPF.
    public static func open(pinnedIn directory: PinDirectory) throws(FirewallError) -> BanMaps {
        try directory.checkAbsolute()
        // Check every map that is there before complaining about one that is not: a directory
        // holding a map of another layout must say so, not "nothing pinned".
        var found: [String: BPFDescriptor] = [:]
        var capacity: UInt32 = 0
        for spec in MapSpec.all {
            let path = directory.mapPath(spec.name)
            guard let descriptor = try BPFDescriptor.openPinned(path) else { continue }
            let info = try spec.check(fd: descriptor.fd, at: path)
            if spec.name == MapSpec.bansV4.name { capacity = info.max_entries }
            found[spec.name] = descriptor
        }
        guard MapSpec.all.allSatisfy({ found[$0.name] != nil || $0.mayBeMissingFromPins }) else {
            // Some of the maps, not all: pins of an older layout (it had fewer maps) say so.
            if let meta = found[PC_MAP_META] {
                var key: UInt32 = 0
                var marker = pc_meta()
                if bpf_map_lookup_elem(meta.fd, &key, &marker) == 0, marker.magic == PC_ABI_MAGIC,
                    !Self.usesLayout(marker)
                {
                    throw .incompatiblePins(
                        path: directory.path,
                        detail: "layout version \(marker.abi_version), this build uses \(PC_ABI_VERSION)")
                }
                let missing = MapSpec.all.filter { found[$0.name] == nil && !$0.mayBeMissingFromPins }.map(\.name)
                throw .incompatiblePins(
                    path: directory.path, detail: "maps missing: " + missing.joined(separator: ", "))
            }
            throw .mapsNotPinned(pinDirectory: directory.path)
        }
        let maps = try BanMaps(found, capacity: capacity)
        maps.pinDirectoryPath = directory.path
        try maps.checkLayoutMarker(path: directory.path)
        return maps
    }

    // MARK: Layout marker

    /// Whether this build reads and writes maps stamped `marker`: `PC_ABI_VERSION`, or
    /// `PC_ABI_VERSION_ALLOCATING_HOSTS` (used as they are), or unstamped (all zero: created by a
    /// load that had not finished; the maps' types are checked apart).
    static func usesLayout(_ marker: pc_meta) -> Bool {
        (marker.magic == 0 && marker.abi_version == 0)
            || (marker.magic == PC_ABI_MAGIC
                && (marker.abi_version == PC_ABI_VERSION || marker.abi_version == PC_ABI_VERSION_ALLOCATING_HOSTS))
    }

    /// Fails unless the meta map has a layout this build uses (`usesLayout`).
    func checkLayoutMarker(path: String) throws(FirewallError) {
        let marker = try readMeta()
        if !Self.usesLayout(marker) {
            throw .incompatiblePins(
                path: path,
                detail: "layout marker magic 0x\(String(marker.magic, radix: 16)) version \(marker.abi_version), "
                    + "expected 0x\(String(PC_ABI_MAGIC, radix: 16)) version \(PC_ABI_VERSION)")
        }
    }

    func readMeta() throws(FirewallError) -> pc_meta {
        var key: UInt32 = 0
        var marker = pc_meta()
        try bpfCall("read \(PC_MAP_META)") { bpf_map_lookup_elem(meta.fd, &key, &marker) }
        return marker
    }

    /// Stamps freshly created maps with this build's layout (pins stamped already keep theirs).
    func writeLayoutMarker() throws(FirewallError) {
        let current = try readMeta()
        guard current.magic == 0 && current.abi_version == 0 else { return }
        var key: UInt32 = 0
        var marker = pc_meta(magic: UInt32(PC_ABI_MAGIC), abi_version: UInt32(PC_ABI_VERSION))
        try bpfCall("write \(PC_MAP_META)") { bpf_map_update_elem(meta.fd, &key, &marker, UInt64(BPF_ANY)) }
    }

    // MARK: Bans

    /// Bans one address. Re-banning an address keeps its drop count (packets dropped between the
    /// lookup and the update are not carried over) and replaces its expiry.
    public func ban(
        _ address: IPAddress, _ expiry: BanExpiry, origin: UInt32 = UInt32(PC_ORIGIN_OPERATOR)
    )
        throws(FirewallError)
    {
        try insert(BanRequest(address, expiry, origin: origin), dropped: try lookup(address)?.dropped ?? 0)
    }

    /// Installs one ban with exactly one `bpf_map_update_elem`; the drop count starts at `dropped`.
    public func insert(_ request: BanRequest, dropped: UInt64 = 0) throws(FirewallError) {
        var value = request.value(dropped: dropped)
        try withKey(request.address) { (fd, key) throws(FirewallError) in
            try updateOne(fd: fd, key: key, value: &value, family: request.address.family)
        }
    }

    /// Installs many bans with one `bpf_map_update_batch` call per family (about 3x cheaper per
    /// key than one update each). Every entry's drop count starts at zero, also for an address that
    /// was banned already (use `ban(_:_:)` to keep a count).
    ///
    /// - Returns: the number of bans installed.
    /// - Throws: `banMapFull` when a family's map fills up: its first `installed` requests (in
    ///   order) went in, and the other family's batch was still tried.
    @discardableResult
    public func ban(batch requests: [BanRequest]) throws(FirewallError) -> Int {
        var keys4: [pc_ipv4_key] = []
        var values4: [pc_ban] = []
        var keys6: [pc_ipv6_key] = []
        var values6: [pc_ban] = []
        for request in requests {
            let value = request.value(dropped: 0)
            if request.address.family == .ipv4 {
                keys4.append(request.address.ipv4Key)
                values4.append(value)
            } else {
                keys6.append(request.address.ipv6Key)
                values6.append(value)
            }
        }
        var firstError: FirewallError?
        var installed = 0
        for (fd, family) in [(bansV4.fd, IPAddress.Family.ipv4), (bansV6.fd, .ipv6)] {
            do throws(FirewallError) {
                installed +=
                    family == .ipv4
                    ? try updateBatch(fd: fd, keys: keys4, values: values4, family: family)
                    : try updateBatch(fd: fd, keys: keys6, values: values6, family: family)
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
        return installed
    }

    /// Removes a ban. - Returns: whether the address was banned.
    @discardableResult
    public func unban(_ address: IPAddress) throws(FirewallError) -> Bool {
        try withKey(address) { (fd, key) throws(FirewallError) -> Bool in
            switch systemCallResult({ bpf_map_delete_elem(fd, key) }) {
            case .success: return true
            case .failure(let error) where error.code == ENOENT: return false
            case .failure(let error): throw systemError("unban \(address)", error.code)
            }
        }
    }

    /// Removes many bans with `bpf_map_delete_batch`, skipping addresses that are not banned.
    /// - Returns: the number of bans removed.
    @discardableResult
    public func unban(batch addresses: [IPAddress]) throws(FirewallError) -> Int {
        let keys4 = addresses.filter { $0.family == .ipv4 }.map(\.ipv4Key)
        let keys6 = addresses.filter { $0.family == .ipv6 }.map(\.ipv6Key)
        return try deleteBatch(fd: bansV4.fd, keys: keys4) + deleteBatch(fd: bansV6.fd, keys: keys6)
    }

    /// The ban of one address, if it has one.
    public func lookup(_ address: IPAddress) throws(FirewallError) -> BanEntry? {
        var value = pc_ban()
        let pending = try pendingDrops()
        return try withKey(address) { (fd, key) throws(FirewallError) -> BanEntry? in
            switch systemCallResult({ bpf_map_lookup_elem(fd, key, &value) }) {
            case .success:
                return BanEntry(
                    address: address, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                    dropped: value.dropped &+ pending.count(ban: address, tag: value.tag), origin: value.origin)
            case .failure(let error) where error.code == ENOENT: return nil
            case .failure(let error): throw systemError("look up \(address)", error.code)
            }
        }
    }

    /// Every ban in both maps (IPv4 first), read with `bpf_map_lookup_batch`.
    public func entries() throws(FirewallError) -> [BanEntry] {
        try readAll(fd: bansV4.fd, keyType: pc_ipv4_key.self, name: PC_MAP_BANS_V4, address: IPAddress.init)
            + readAll(fd: bansV6.fd, keyType: pc_ipv6_key.self, name: PC_MAP_BANS_V6, address: IPAddress.init)
    }

    // MARK: Counters

    /// Reads the per-CPU counters and sums them over all possible CPUs.
    public func counters() throws(FirewallError) -> FilterCounters {
        var totals = FilterCounters()
        // Per-CPU values are read as one array of `possibleCPUs` values, each 8-byte aligned.
        var perCPU = [pc_stat](repeating: pc_stat(), count: possibleCPUs)
        for index in 0..<UInt32(PC_STAT_COUNT.rawValue) {
            var key = index
            try bpfCall("read \(PC_MAP_STATS)") { bpf_map_lookup_elem(stats.fd, &key, &perCPU) }
            var sum = FilterCounters.Count()
            for value in perCPU {
                sum.packets &+= value.packets
                sum.bytes &+= value.bytes
            }
            switch pc_stat_index(rawValue: index) {
            case PC_STAT_DROPPED: totals.dropped = sum
            case PC_STAT_PASSED: totals.passed = sum
            case PC_STAT_EXPIRED: totals.expired = sum
            case PC_STAT_ALLOWED: totals.allowed = sum
            default: totals.malformed = sum
            }
        }
        for slot in try dropSlots() {
            totals.dropped.packets &+= slot.packets
            totals.dropped.bytes &+= slot.bytes
        }
        return totals
    }

    // MARK: Plumbing

    func withKey<R>(
        _ address: IPAddress, _ body: (Int32, UnsafeRawPointer) throws(FirewallError) -> R
    ) throws(FirewallError) -> R {
        switch address.family {
        case .ipv4:
            var key = address.ipv4Key
            return try body(bansV4.fd, &key)
        case .ipv6:
            var key = address.ipv6Key
            return try body(bansV6.fd, &key)
        }
    }

    func familyName(_ family: IPAddress.Family) -> String { family == .ipv4 ? "IPv4" : "IPv6" }

    private func updateOne(
        fd: Int32, key: UnsafeRawPointer, value: inout pc_ban,
        family: IPAddress.Family
    ) throws(FirewallError) {
        switch systemCallResult({ bpf_map_update_elem(fd, key, &value, UInt64(BPF_ANY)) }) {
        case .success: return
        // A preallocated hash map reports a full table as E2BIG.
        case .failure(let error) where error.code == E2BIG:
            throw .banMapFull(family: familyName(family), capacity: capacity, installed: 0)
        case .failure(let error):
            throw systemError("ban in \(family == .ipv4 ? PC_MAP_BANS_V4 : PC_MAP_BANS_V6)", error.code)
        }
    }

    private func updateBatch<Key>(
        fd: Int32, keys: [Key], values: [pc_ban],
        family: IPAddress.Family
    ) throws(FirewallError) -> Int {
        guard !keys.isEmpty else { return 0 }
        var count = UInt32(keys.count)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        options.elem_flags = UInt64(BPF_ANY)
        // The kernel reports in `count` how many keys it handled, in order, before failing; after
        // an interruption (EINTR, retried) it starts again from the first key, which is harmless
        // for updates.
        let result = keys.withUnsafeBytes { keyBytes in
            values.withUnsafeBytes { valueBytes in
                systemCallResult {
                    count = UInt32(keys.count)
                    return bpf_map_update_batch(fd, keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
                }
            }
        }
        guard case .failure(let error) = result else { return keys.count }
        let code = error.code
        if code == E2BIG { throw .banMapFull(family: familyName(family), capacity: capacity, installed: Int(count)) }
        throw systemError("ban \(keys.count) addresses in one batch (\(count) done)", code)
    }

    private func deleteBatch<Key>(fd: Int32, keys: [Key]) throws(FirewallError) -> Int {
        var removed = 0
        var start = 0
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        // The kernel stops a batch at the first key that is absent (ENOENT) and reports how many
        // it deleted before it: skip that key and go on with the rest.
        while start < keys.count {
            var count: UInt32 = 0
            var retried = false
            let result = keys.withUnsafeBytes { bytes in
                systemCallResult {
                    // An interrupted batch (EINTR, retried here) has deleted `count` keys: go on after them.
                    if retried {
                        removed += Int(count)
                        start += Int(count)
                    }
                    retried = true
                    count = UInt32(keys.count - start)
                    return bpf_map_delete_batch(
                        fd, bytes.baseAddress! + start * MemoryLayout<Key>.stride, &count, &options)
                }
            }
            removed += Int(count)
            guard case .failure(let error) = result else { break }
            if error.code != ENOENT { throw systemError("unban \(keys.count) addresses in one batch", error.code) }
            start += Int(count) + 1
        }
        return removed
    }

    private func readAll<Key>(
        fd: Int32, keyType: Key.Type, name: String,
        address: (Key) -> IPAddress
    ) throws(FirewallError) -> [BanEntry] {
        var entries: [BanEntry] = []
        var position = BatchPosition()
        while try readChunk(fd: fd, name: name, at: &position, limit: 4096, address: address, into: &entries) {}
        return entries
    }

    /// Where a batched read of one map stands: before its first chunk, or at the kernel's
    /// opaque token (a hash map's bucket index; a key, where the kernel batches generically).
    public struct BatchPosition: Sendable {
        /// Room for the largest token of the ban maps (a prefix key of 20 bytes).
        var token = [UInt8](repeating: 0, count: 32)
        /// Whether a read has begun (else the next starts at the map's beginning).
        public internal(set) var started = false
    }

    /// Reads up to `limit` entries of one exact map from `position` with one
    /// `bpf_map_lookup_batch` (`MapReader`).
    /// - Returns: whether there is more (false: the map has been read to its end).
    func readChunk<Key>(
        fd: Int32, name: String, at position: inout BatchPosition, limit: Int, address: (Key) -> IPAddress,
        into entries: inout [BanEntry]
    ) throws(FirewallError) -> Bool {
        let pending = try pendingDrops()
        let more = try MapReader(fd: fd, name: name, keySize: MemoryLayout<Key>.size).readChunk(
            at: &position, limit: limit
        ) { key, value in
            let address = address(key.load(as: Key.self))
            entries.append(
                BanEntry(
                    address: address, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                    dropped: value.dropped &+ pending.count(ban: address, tag: value.tag), origin: value.origin))
        }
        // The exact maps are hashes, which every kernel that has the batch calls batches.
        guard let more else { throw systemError("list \(name)", EOPNOTSUPP) }
        return more
    }

    /// A walk over both ban maps a slice at a time (`entries(walking:limit:)`): the expiry
    /// thread's sweep, whose cost per step does not grow with the bans held.
    public struct Walk: Sendable {
        /// In the IPv6 map (else the IPv4 one).
        public internal(set) var ipv6 = false
        public internal(set) var position = BatchPosition()
        public init() {}
    }

    /// Up to about `limit` entries from where `walk` stands; at the end of the IPv6 map it
    /// starts over.
    public func entries(walking walk: inout Walk, limit: Int) throws(FirewallError) -> [BanEntry] {
        var entries: [BanEntry] = []
        let more =
            walk.ipv6
            ? try readChunk(
                fd: bansV6.fd, name: PC_MAP_BANS_V6, at: &walk.position, limit: limit,
                address: { (key: pc_ipv6_key) in IPAddress(key) }, into: &entries)
            : try readChunk(
                fd: bansV4.fd, name: PC_MAP_BANS_V4, at: &walk.position, limit: limit,
                address: { (key: pc_ipv4_key) in IPAddress(key) }, into: &entries)
        if !more { walk.ipv6.toggle() }
        return entries
    }
}
