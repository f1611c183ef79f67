// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

// The list layer: blocklists, CrowdSec's decisions and the fleet's bans, in generations swapped whole.

extension BanMaps {
    /// The generation of the lists of `family` in force (`PC_CONFIG_LISTS_GEN_*`).
    private func listGeneration(_ family: IPAddress.Family) throws(FirewallError) -> UInt32 {
        try readConfig(family == .ipv4 ? PC_CONFIG_LISTS_GEN_V4 : PC_CONFIG_LISTS_GEN_V6) & 1
    }

    /// The inner map in `slot` of an outer map (nil: none there), opened by its id.
    private func innerMap(_ outer: BPFDescriptor, slot: UInt32, name: String) throws(FirewallError) -> BPFDescriptor? {
        var slot = slot
        var id: UInt32 = 0
        switch systemCallResult({ bpf_map_lookup_elem(outer.fd, &slot, &id) }) {
        case .success: break
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error): throw systemError("read \(name)", error.code)
        }
        let fd = bpf_map_get_fd_by_id(id)
        guard fd >= 0 else { throw systemError("open a blocklist map (map id \(id))", errno) }
        return BPFDescriptor(fd)
    }

    /// The entries of the lists of `family` in force: hosts, then networks.
    private func listEntries(_ family: IPAddress.Family) throws(FirewallError) -> [NetworkBanEntry] {
        let generation = try listGeneration(family)
        let v4 = family == .ipv4
        var entries: [NetworkBanEntry] = []
        for (outer, name) in [
            (v4 ? listHostsV4 : listHostsV6, v4 ? PC_MAP_LIST_HOSTS_V4 : PC_MAP_LIST_HOSTS_V6),
            (v4 ? listsV4 : listsV6, v4 ? PC_MAP_LISTS_V4 : PC_MAP_LISTS_V6),
        ] {
            if let inner = try innerMap(outer, slot: generation, name: name) {
                entries += try networkEntries(in: inner, family: family, place: .list)
            }
        }
        return entries
    }

    /// Runs `body` holding the writers' lock of the pin directory, waiting for another writer: an
    /// `flock` of the directory (the BPF filesystem holds no regular files to lock; a directory
    /// opens and locks as well). Private maps (no pin directory) have no other writer.
    ///
    /// Held by whatever reads shared state of the maps and writes the next from it in another
    /// process's sight: naming origin slots, and building the next blocklist generation.
    func withWritersLock<T>(_ body: () throws(FirewallError) -> T) throws(FirewallError) -> T {
        guard let path = pinDirectoryPath else { return try body() }
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw systemError("open \(path) to lock its maps' writers", errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw systemError("lock the maps' writers of \(path)", errno) }
        }
        return try body()
    }

    /// Puts every key and value into a new map: one `bpf_map_update_batch` where the kernel
    /// batches the map's type, else one update each.
    private func fill(
        _ trie: BPFDescriptor, keys: [UInt8], values: [pc_ban], keySize: Int, family: IPAddress.Family
    ) throws(FirewallError) {
        guard !values.isEmpty else { return }
        var count = UInt32(values.count)
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        let batched = keys.withUnsafeBytes { keyBytes in
            values.withUnsafeBytes { valueBytes in
                systemCallResult {
                    count = UInt32(values.count)
                    return bpf_map_update_batch(trie.fd, keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
                }
            }
        }
        switch batched {
        case .success: return
        case .failure(let error) where error.code == ENOSPC || error.code == E2BIG:
            throw .banMapFull(family: familyName(family), capacity: UInt32(PC_LIST_ENTRIES), installed: Int(count))
        case .failure(let error) where error.code != EINVAL && error.code != ENOTSUP && error.code != EOPNOTSUPP:
            throw systemError("build the blocklist trie", error.code)
        case .failure:
            break  // this kernel does not batch tries: one update each
        }
        for index in 0..<values.count {
            var value = values[index]
            let result = keys.withUnsafeBytes { bytes in
                systemCallResult {
                    bpf_map_update_elem(trie.fd, bytes.baseAddress! + index * keySize, &value, UInt64(BPF_ANY))
                }
            }
            switch result {
            case .success: continue
            case .failure(let error) where error.code == ENOSPC || error.code == E2BIG:
                throw .banMapFull(family: familyName(family), capacity: UInt32(PC_LIST_ENTRIES), installed: index)
            case .failure(let error): throw systemError("build the blocklist trie", error.code)
            }
        }
    }

    /// The origin name of the list `name` (`list:NAME`), or nil for a name that is not 1 to 40
    /// letters, digits, `-`, `_` or `.`.
    public static func listOrigin(_ name: String) -> String? {
        let allowed = name.utf8.allSatisfy {
            (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0)
                || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
        }
        return allowed && (1...40).contains(name.utf8.count) ? "list:" + name : nil
    }

    /// Installs `networks` as the whole of the list `name` (an origin slot named `list:NAME`).
    @discardableResult
    public func loadList(_ name: String, _ networks: [IPNetwork]) throws(FirewallError) -> ListSwap {
        guard let origin = Self.listOrigin(name) else {
            throw .invalidListName(name)
        }
        // Naming the slot and swapping the list under one hold of the lock: two loaders of new
        // names at once would otherwise both take the same free slot.
        return try withWritersLock { () throws(FirewallError) -> ListSwap in
            guard let slot = try assignOriginSlots(for: [origin])[origin] else {
                throw .originSlotsFull(name: origin, holders: try originCensus())
            }
            return try swapList(origin: slot, with: networks)
        }
    }

    /// Every entry of every loaded list.
    public func listEntries() throws(FirewallError) -> [NetworkBanEntry] {
        try listEntries(.ipv4) + listEntries(.ipv6)
    }

    /// What a swap did.
    public struct ListSwap: Sendable {
        /// Entries of the list now in force, by family.
        public var ipv4 = 0
        public var ipv6 = 0
        /// Entries of other lists carried over into the new tries.
        public var kept = 0
        /// Networks left out because another origin's entry holds them (that entry stays).
        public var heldByOthers: [IPNetwork] = []
    }

    /// Installs `networks` as the whole of the list of `origin` (replacing what it held; an empty
    /// array unloads it). For each family the other generation's two maps (a hash of hosts, a trie
    /// of networks) are built aside with the other lists' entries and this list's, put in their
    /// slots, and the generation flipped with one element write: a packet meets one whole version.
    @discardableResult
    public func replaceList(origin: UInt32, with networks: [IPNetwork]) throws(FirewallError) -> ListSwap {
        // Every writer of lists (the daemon's [blocklist] feeds, `portcullis blocklist`) reads the
        // lists in force and builds the next generation from them: one at a time, or the later
        // flip would drop what the other had just loaded.
        try withWritersLock { () throws(FirewallError) -> ListSwap in try swapList(origin: origin, with: networks) }
    }

    /// Addresses, and networks, of one family the list layer holds at most (all lists together).
    public static let listCapacity = Int(PC_LIST_ENTRIES)

    /// Entries a new list hosts' hash is made for: twice its hosts (room for deltas in place),
    /// at least 4,096, at most the layer's capacity.
    static func hostsCapacity(_ hosts: Int) -> Int {
        let wanted = max(4096, hosts * 2)
        return min(Int(PC_LIST_ENTRIES), 1 << (Int.bitWidth - (wanted - 1).leadingZeroBitCount))
    }

    /// `replaceList` for a caller holding the writers' lock.
    func swapList(origin: UInt32, with networks: [IPNetwork]) throws(FirewallError) -> ListSwap {
        try swapLists(
            replacing: { $0 == origin },
            with: networks.map { ListEntry(network: $0, expiry: .permanent, origin: origin) })
    }

    /// Replaces every list entry whose origin `owned` accepts by `entries` (each with its own
    /// origin and end), in one swap per family whose lists change; for a caller holding the
    /// writers' lock. An entry for a network another origin's entry has already is left out
    /// (that entry stays as it was).
    func swapLists(
        replacing owned: (UInt32) -> Bool, with entries: some Collection<ListEntry>,
        families: [IPAddress.Family] = [.ipv4, .ipv6]
    ) throws(FirewallError)
        -> ListSwap
    {
        var swap = ListSwap()
        // Each family's new maps, put in their slots together once all are built.
        var built: [(family: IPAddress.Family, hosts: BPFDescriptor, trie: BPFDescriptor)] = []
        for family in families {
            let v4 = family == .ipv4
            let mine = entries.lazy.filter { $0.network.family == family }
            let current = try listEntries(family)
            // Nothing of these origins in this family, before or after: the family's lists stay as they are.
            if mine.isEmpty && !current.contains(where: { owned($0.origin) }) { continue }
            let others = current.filter { !owned($0.origin) }
            let keySize = v4 ? 8 : 20
            func make(_ type: bpf_map_type, _ name: String, entries: Int) throws(FirewallError) -> BPFDescriptor {
                var options = bpf_map_create_opts()
                options.sz = MemoryLayout<bpf_map_create_opts>.size
                options.map_flags = UInt32(BPF_F_NO_PREALLOC)
                let fd = bpf_map_create(
                    type, name, UInt32(keySize), UInt32(MemoryLayout<pc_ban>.size), UInt32(entries), &options)
                guard fd >= 0 else { throw systemError("create a blocklist map", errno) }
                return BPFDescriptor(fd)
            }
            // Another list's entry for the same network stays as it was (its origin and drops).
            let total = others.count + mine.count
            var taken = Set<IPNetwork>(minimumCapacity: total)
            var hostKeys: [UInt8] = []
            var hostValues: [pc_ban] = []
            var netKeys: [UInt8] = []
            var netValues: [pc_ban] = []
            hostKeys.reserveCapacity(total * keySize)
            hostValues.reserveCapacity(total)
            func add(_ network: IPNetwork, _ value: pc_ban) {
                if network.isSingleAddress {
                    Self.appendKey(network, to: &hostKeys)
                    hostValues.append(value)
                } else {
                    Self.appendKey(network, to: &netKeys)
                    netValues.append(value)
                }
            }
            for entry in others where taken.insert(entry.network).inserted {
                add(
                    entry.network,
                    BanRequest(entry.network.address, entry.expiry, origin: entry.origin).value(dropped: entry.dropped))
                swap.kept += 1
            }
            for entry in mine {
                guard taken.insert(entry.network).inserted else {
                    swap.heldByOthers.append(entry.network)
                    continue
                }
                add(
                    entry.network,
                    BanRequest(entry.network.address, entry.expiry, origin: entry.origin).value(dropped: 0))
                if v4 { swap.ipv4 += 1 } else { swap.ipv6 += 1 }
            }
            // The hosts' hash is sized for what it holds, with room to grow in place (a hash's
            // buckets are allocated and cleared at its creation, whatever it holds: 16 MiB for a
            // million); an in-place update that finds it full builds it again, larger. The trie
            // allocates per entry.
            let hosts = try make(BPF_MAP_TYPE_HASH, "pc_list_hosts", entries: Self.hostsCapacity(hostValues.count))
            let trie = try make(BPF_MAP_TYPE_LPM_TRIE, "pc_list_trie", entries: Int(PC_LIST_ENTRIES))
            for entry in mine {
                try cover(entry.network, kind: entry.network.isSingleAddress ? PC_COVER_LIST_HOSTS : PC_COVER_LIST_NETS)
            }
            try fill(hosts, keys: hostKeys, values: hostValues, keySize: keySize, family: family)
            try fill(trie, keys: netKeys, values: netValues, keySize: keySize, family: family)
            try markUsed(v4 ? PC_CONFIG_USED_LISTS_V4 : PC_CONFIG_USED_LISTS_V6)
            built.append((family, hosts, trie))
        }
        var slots: [(outer: Int32, slot: UInt32, inner: BPFDescriptor)] = []
        for (family, hosts, trie) in built {
            let v4 = family == .ipv4
            let next = 1 - (try listGeneration(family))
            slots += [(v4 ? listHostsV4.fd : listHostsV6.fd, next, hosts), (v4 ? listsV4.fd : listsV6.fd, next, trie)]
        }
        try putInSlots(slots)
        for (family, _, _) in built {
            let v4 = family == .ipv4
            try writeConfig(v4 ? PC_CONFIG_LISTS_GEN_V4 : PC_CONFIG_LISTS_GEN_V6, 1 - (try listGeneration(family)))
        }
        return swap
    }

    /// Puts each inner map in the slot of its outer map (the generation not in force), all at
    /// once: the kernel waits for an RCU grace period after every write to a map of maps (10 to
    /// 25 ms each here), and writes made from threads of their own wait for the same one.
    private func putInSlots(_ slots: [(outer: Int32, slot: UInt32, inner: BPFDescriptor)]) throws(FirewallError) {
        guard !slots.isEmpty else { return }
        nonisolated(unsafe) let results = UnsafeMutableBufferPointer<Int32>.allocate(capacity: slots.count)
        defer { results.deallocate() }
        results.initialize(repeating: 0)
        let calls = slots.map { (outer: $0.outer, slot: $0.slot, inner: UInt32(bitPattern: $0.inner.fd)) }
        @Sendable func put(_ index: Int) {
            var slot = calls[index].slot
            var inner = calls[index].inner
            results[index] = bpf_map_update_elem(calls[index].outer, &slot, &inner, UInt64(BPF_ANY)) == 0 ? 0 : errno
        }
        var threads: [SystemThread] = []
        for index in 1..<calls.count {
            // Without a thread (none to be had), in turn.
            if let thread = try? SystemThread.spawn({ put(index) }) { threads.append(thread) } else { put(index) }
        }
        put(0)
        for thread in threads { thread.join() }
        withExtendedLifetime(slots) {}
        if let failed = results.first(where: { $0 != 0 }) {
            throw systemError("put in the next blocklist generation", failed)
        }
    }

    /// Appends the list maps' key of `network` (its length, then its address) to `keys`.
    static func appendKey(_ network: IPNetwork, to keys: inout [UInt8]) {
        withUnsafeBytes(of: UInt32(network.length)) { keys.append(contentsOf: $0) }
        network.address.withUnsafeBytes { keys.append(contentsOf: $0) }
    }

    /// Runs `body` with the list maps' key of `network` (no allocation: one lookup per host of a
    /// delta).
    static func withKey<T>(_ network: IPNetwork, _ body: (UnsafeMutableRawPointer) -> T) -> T {
        var key: (UInt64, UInt64, UInt32) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &key) { raw in
            raw.storeBytes(of: UInt32(network.length), as: UInt32.self)
            network.address.withUnsafeBytes { address in
                (raw.baseAddress! + 4).copyMemory(from: address.baseAddress!, byteCount: address.count)
            }
            return body(raw.baseAddress!)
        }
    }
}

/// One entry of the list layer as a writer gives it: a network, its end, its origin slot.
public struct ListEntry: Sendable, Equatable {
    public let network: IPNetwork
    public let expiry: BanExpiry
    public let origin: UInt32

    public init(network: IPNetwork, expiry: BanExpiry, origin: UInt32) {
        self.network = network
        self.expiry = expiry
        self.origin = origin
    }
}

extension BanMaps {
    /// What an in-place update of the list layer did.
    public struct ListUpdate: Sendable {
        public var added = 0
        public var removed = 0
        /// Left as they were: networks another origin's entry holds.
        public var heldByOthers: [IPNetwork] = []
        /// Families rebuilt by a swap instead (their lists had never been loaded).
        public var swappedFamilies = 0
    }

    /// Replaces every entry of the list layer whose origin `owned` accepts by `entries`, each
    /// with its own origin and end (the program drops for an entry until its end): what a writer
    /// that holds a whole set elsewhere (a CrowdSec Local API) installs at start and at a resync.
    /// One swap per family whose lists change, under the writers' lock; other lists stay.
    @discardableResult
    public func replaceListEntries(
        owned: (UInt32) -> Bool, with entries: [ListEntry]
    ) throws(FirewallError)
        -> ListSwap
    {
        try withWritersLock { () throws(FirewallError) -> ListSwap in try swapLists(replacing: owned, with: entries) }
    }

    /// Adds `adding` to the lists in force and removes `removing`, in place (no swap: each entry
    /// changes with one element write a packet sees whole), under the writers' lock. Only entries
    /// whose origin `owned` accepts are replaced or removed: a network another list holds keeps
    /// that list's entry. A family whose lists were never loaded is built by a swap.
    @discardableResult
    public func updateListEntries(
        owned: (UInt32) -> Bool, adding: [ListEntry], removing: [IPNetwork]
    )
        throws(FirewallError) -> ListUpdate
    {
        try withWritersLock { () throws(FirewallError) -> ListUpdate in
            var update = ListUpdate()
            for family in [IPAddress.Family.ipv4, .ipv6] {
                let v4 = family == .ipv4
                // Each family's entries as they come (no copy of them: a delta may hold 100,000).
                let add = adding.lazy.filter { $0.network.family == family }
                let remove = removing.filter { $0.family == family }
                if add.isEmpty && remove.isEmpty { continue }
                let generation = try listGeneration(family)
                let hostsName = v4 ? PC_MAP_LIST_HOSTS_V4 : PC_MAP_LIST_HOSTS_V6
                let netsName = v4 ? PC_MAP_LISTS_V4 : PC_MAP_LISTS_V6
                guard let hosts = try innerMap(v4 ? listHostsV4 : listHostsV6, slot: generation, name: hostsName),
                    let trie = try innerMap(v4 ? listsV4 : listsV6, slot: generation, name: netsName)
                else {
                    // Never loaded: build the family whole, with these entries (nothing to remove).
                    let swap = try swapLists(replacing: { _ in false }, with: add, families: [family])
                    update.added += swap.ipv4 + swap.ipv6
                    update.swappedFamilies += 1
                    continue
                }
                let keySize = v4 ? 8 : 20
                // What holds each network now. The hash is asked key by key; a trie lookup finds the
                // longest covering entry, not the network's own, so the trie is read whole, once,
                // when networks change (lists hold few networks next to their hosts).
                var networks: [IPNetwork: NetworkBanEntry]?
                func existing(_ network: IPNetwork) throws(FirewallError) -> pc_ban? {
                    if network.isSingleAddress {
                        var value = pc_ban()
                        return Self.withKey(network) { bpf_map_lookup_elem(hosts.fd, $0, &value) } == 0 ? value : nil
                    }
                    if networks == nil {
                        networks = [:]
                        for entry in try networkEntries(in: trie, family: family, place: .list) {
                            networks![entry.network] = entry
                        }
                    }
                    guard let entry = networks![network] else { return nil }
                    return BanRequest(network.address, entry.expiry, origin: entry.origin).value(dropped: entry.dropped)
                }
                for network in remove {
                    guard let value = try existing(network), owned(value.origin) else { continue }
                    let map = network.isSingleAddress ? hosts : trie
                    if Self.withKey(network, { bpf_map_delete_elem(map.fd, $0) }) == 0 { update.removed += 1 }
                }
                var hostKeys: [UInt8] = []
                var hostValues: [pc_ban] = []
                var netKeys: [UInt8] = []
                var netValues: [pc_ban] = []
                // Coverage first (the program looks at the list maps of a space only once it is
                // covered): each entry's as it is taken; they go in after.
                var added = 0
                var held = Set<IPNetwork>()
                let adds = add.count
                hostKeys.reserveCapacity(adds * keySize)
                hostValues.reserveCapacity(adds)
                for entry in add {
                    let current = try existing(entry.network)
                    if let current, !owned(current.origin) {
                        update.heldByOthers.append(entry.network)
                        held.insert(entry.network)
                        continue
                    }
                    let value = BanRequest(entry.network.address, entry.expiry, origin: entry.origin)
                        .value(dropped: current?.dropped ?? 0)
                    if entry.network.isSingleAddress {
                        Self.appendKey(entry.network, to: &hostKeys)
                        hostValues.append(value)
                    } else {
                        Self.appendKey(entry.network, to: &netKeys)
                        netValues.append(value)
                    }
                    try cover(
                        entry.network,
                        kind: entry.network.isSingleAddress ? PC_COVER_LIST_HOSTS : PC_COVER_LIST_NETS)
                    added += 1
                }
                do throws(FirewallError) {
                    try fill(hosts, keys: hostKeys, values: hostValues, keySize: keySize, family: family)
                } catch {
                    guard case .banMapFull = error else { throw error }
                    // Sized for the list it was made for: the family is built again by a swap,
                    // with these changes (the removals are done; what fitted is read back).
                    var wanted: [IPNetwork: ListEntry] = [:]
                    for entry in try listEntries(family) where owned(entry.origin) {
                        wanted[entry.network] = ListEntry(
                            network: entry.network, expiry: entry.expiry, origin: entry.origin)
                    }
                    for entry in add where !held.contains(entry.network) {
                        wanted[entry.network] = entry
                    }
                    _ = try swapLists(replacing: owned, with: wanted.values, families: [family])
                    update.added += added
                    update.swappedFamilies += 1
                    continue
                }
                try fill(trie, keys: netKeys, values: netValues, keySize: keySize, family: family)
                try markUsed(v4 ? PC_CONFIG_USED_LISTS_V4 : PC_CONFIG_USED_LISTS_V6)
                update.added += added
            }
            return update
        }
    }
}

extension BanMaps {
    /// Removes every list entry whose origin's name `origins` accepts (`fleet/b`, every
    /// `crowdsec/`...), in one swap per family. - Returns: the entries removed.
    @discardableResult
    public func removeListEntries(origins: (String) -> Bool) throws(FirewallError) -> Int {
        try withWritersLock { () throws(FirewallError) -> Int in
            let slots = Set(try originNames().filter { origins($0.value) }.keys)
            guard !slots.isEmpty else { return 0 }
            let count = try listEntries().count(where: { slots.contains($0.origin) })
            guard count > 0 else { return 0 }
            _ = try swapLists(replacing: { slots.contains($0) }, with: [ListEntry]())
            return count
        }
    }

    /// Removes the list entries of exactly `networks` whose origin's name `origins` accepts (an
    /// operator's unban of a fleet host's or a CrowdSec decision's entry, here only).
    /// - Returns: each network removed, with its origin's name.
    public func liftListEntries(
        _ networks: [IPNetwork], origins: (String) -> Bool
    ) throws(FirewallError) -> [(network: IPNetwork, origin: String)] {
        guard !networks.isEmpty else { return [] }
        let names = try originNames().filter { origins($0.value) }
        guard !names.isEmpty else { return [] }
        let wanted = Set(networks)
        let found = try listEntries().filter { wanted.contains($0.network) && names[$0.origin] != nil }
        guard !found.isEmpty else { return [] }
        let slots = Set(found.map(\.origin))
        try updateListEntries(owned: { slots.contains($0) }, adding: [], removing: found.map(\.network))
        return found.map { ($0.network, names[$0.origin]!) }
    }
}
