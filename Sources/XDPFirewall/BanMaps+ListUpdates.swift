// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

// The list layer changed in place: a CrowdSec delta, a fleet host's bans, an operator's lift.

extension BanMaps {
    /// What an in-place update of the list layer did.
    public struct ListUpdate: Sendable {
        public var added = 0
        public var removed = 0
        /// Left as they were: networks another origin's entry holds.
        public var heldByOthers: [IPNetwork] = []
        /// Families rebuilt by a swap instead (their lists had never been loaded, or a hash was full).
        public var swappedFamilies = 0
        /// Hosts the kernel's list writer put or took out (the rest went from user space).
        public var hostsByKernel = 0
    }

    /// Adds `adding` to the lists in force and removes `removing`, in place (no swap: each entry
    /// changes with one element write a packet sees whole), under the writers' lock. Only entries
    /// whose origin `owned` accepts are replaced or removed (an entry replaced keeps its drop
    /// count): a network another list holds keeps that list's entry. A family whose lists were
    /// never loaded is built by a swap, and so is one whose hosts hash is full (sized for what it
    /// held, with room).
    ///
    /// Nothing is read whole and nothing looked up ahead: hosts go through the kernel's list
    /// writer (`pc_install_list_hosts`: one system call per 4,096, each written where nothing is
    /// or over an entry of `owned`), networks with one update each (`BPF_NOEXIST` first: most
    /// are new), where the kernel refuses the writer, hosts as networks are.
    @discardableResult
    public func updateListEntries(
        owned: (UInt32) -> Bool, adding: [ListEntry], removing: [IPNetwork]
    )
        throws(FirewallError) -> ListUpdate
    {
        try withWritersLock { () throws(FirewallError) -> ListUpdate in
            var update = ListUpdate()
            let kernel = listWriter()
            let mask = OriginMask(owned)
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
                var delta = ListDelta(maps: self, family: family, hosts: hosts, trie: trie, owned: mask)
                for network in remove { try delta.remove(network, kernel: kernel != nil) }
                for entry in add { try delta.add(entry, kernel: kernel != nil) }
                if let kernel { try delta.writeHosts(kernel, generation: generation) }
                update.removed += delta.removed
                update.heldByOthers += delta.heldByOthers
                update.hostsByKernel += delta.byKernel
                if try delta.fillHosts() {
                    try markUsed(v4 ? PC_CONFIG_USED_LISTS_V4 : PC_CONFIG_USED_LISTS_V6)
                    update.added += delta.added
                    continue
                }
                // Sized for the list it was made for: the family is built again by a swap, with
                // these changes (the removals are done; what fitted is read back).
                var wanted: [IPNetwork: ListEntry] = [:]
                for entry in try listEntries(family) where owned(entry.origin) {
                    wanted[entry.network] = ListEntry(
                        network: entry.network, expiry: entry.expiry, origin: entry.origin)
                }
                var added = 0
                for entry in add where !delta.held.contains(entry.network) {
                    wanted[entry.network] = entry
                    added += 1
                }
                _ = try swapLists(replacing: owned, with: wanted.values, families: [family], unique: true)
                update.added += added
                update.swappedFamilies += 1
            }
            return update
        }
    }
}

/// One family's part of an in-place update (`updateListEntries`): what it wrote, and the hosts
/// still to write (through the kernel's list writer, or in one batch from here).
private struct ListDelta {
    let maps: BanMaps
    let family: IPAddress.Family
    let hosts: BPFDescriptor
    let trie: BPFDescriptor
    let owned: OriginMask
    var added = 0
    var removed = 0
    var heldByOthers: [IPNetwork] = []
    var held = Set<IPNetwork>()
    /// Writes the kernel's list writer did (an outcome other than failed).
    var byKernel = 0
    /// For the kernel's list writer.
    var writes: [BanInstaller.ListHostWrite] = []
    /// For one batch from here (no list writer, or what it did not write).
    var hostKeys: [UInt8] = []
    var hostValues: [pc_ban] = []
    /// A put the hosts hash refused for want of room.
    var hostsFull = false

    private var keySize: Int { family == .ipv4 ? 8 : 20 }

    /// The entry `network` has exactly in its map. A trie's lookup finds the longest entry
    /// covering the key: the network's own when it has one (nothing longer matches it), else one
    /// covering it, which `take` then fails to delete (`ENOENT`) and `put` never reads (it
    /// looks only after its `BPF_NOEXIST` found the network's own).
    private func lookup(_ network: IPNetwork) -> pc_ban? {
        var value = pc_ban()
        let map = network.isSingleAddress ? hosts : trie
        return BanMaps.withKey(network) { bpf_map_lookup_elem(map.fd, $0, &value) } == 0 ? value : nil
    }

    mutating func remove(_ network: IPNetwork, kernel: Bool) throws(FirewallError) {
        if kernel && network.isSingleAddress {
            writes.append(.init(network: network, request: BanRequest(network.address, .permanent), take: true))
        } else {
            take(network)
        }
    }

    /// Deletes `network`'s entry if it is one of `owned`'s.
    private mutating func take(_ network: IPNetwork) {
        guard let value = lookup(network), owned.contains(value.origin) else { return }
        let map = network.isSingleAddress ? hosts : trie
        if BanMaps.withKey(network, { bpf_map_delete_elem(map.fd, $0) }) == 0 { removed += 1 }
    }

    /// Coverage first (the program looks at the list maps of a space only once it is covered),
    /// then the entry: a network's now, a host's with the others.
    mutating func add(_ entry: ListEntry, kernel: Bool) throws(FirewallError) {
        let host = entry.network.isSingleAddress
        try maps.cover(entry.network, kind: host ? PC_COVER_LIST_HOSTS : PC_COVER_LIST_NETS)
        let request = BanRequest(entry.network.address, entry.expiry, origin: entry.origin)
        if kernel && host {
            writes.append(.init(network: entry.network, request: request, take: false))
        } else if host {
            stage(entry.network, request)
        } else {
            try putNetwork(entry.network, request)
        }
    }

    /// A host for the batch from here, over an entry of `owned` (its drop count kept) or none.
    private mutating func stage(_ network: IPNetwork, _ request: BanRequest) {
        let current = lookup(network)
        if let current, !owned.contains(current.origin) {
            refuse(network)
            return
        }
        BanMaps.appendKey(network, to: &hostKeys)
        hostValues.append(request.value(keeping: current))
        added += 1
    }

    private mutating func refuse(_ network: IPNetwork) {
        heldByOthers.append(network)
        held.insert(network)
    }

    /// Writes a network's entry where it has none (most of a delta's), else over its own entry
    /// if that is one of `owned`'s (its drop count kept).
    private mutating func putNetwork(_ network: IPNetwork, _ request: BanRequest) throws(FirewallError) {
        for _ in 0..<2 {
            var value = request.value(dropped: 0)
            var result = BanMaps.withKey(network) { key in
                systemCallResult { bpf_map_update_elem(trie.fd, key, &value, UInt64(BPF_NOEXIST)) }
            }
            if case .failure(let error) = result, error.code == EEXIST {
                // Its own entry is there: the lookup finds it (nothing longer matches its key).
                guard let current = lookup(network) else { continue }  // deleted meanwhile
                guard owned.contains(current.origin) else { return refuse(network) }
                value = request.value(keeping: current)
                result = BanMaps.withKey(network) { key in
                    systemCallResult { bpf_map_update_elem(trie.fd, key, &value, UInt64(BPF_EXIST)) }
                }
                if case .failure(let error) = result, error.code == ENOENT { continue }  // deleted meanwhile
            }
            switch result {
            case .success:
                added += 1
                return
            case .failure(let error) where error.code == ENOSPC || error.code == E2BIG:
                throw .banMapFull(family: maps.familyName(family), capacity: UInt32(PC_LIST_ENTRIES), installed: added)
            case .failure(let error):
                throw systemError("write a blocklist network", error.code)
            }
        }
    }

    /// The hosts through the kernel's list writer; what it did not write (a run refused, a key
    /// changing under it each time it looked) goes from here.
    mutating func writeHosts(_ kernel: BanInstaller, generation: UInt32) throws(FirewallError) {
        guard !writes.isEmpty,
            let (outcomes, error) = kernel.writeListHosts(writes, generations: (generation, generation), owned: owned)
        else { return }
        for (write, outcome) in zip(writes, outcomes) {
            if outcome == PC_INSTALL_NEW || outcome == PC_INSTALL_LONGER || outcome == PC_INSTALL_KEPT { byKernel += 1 }
            switch outcome {
            case PC_INSTALL_NEW, PC_INSTALL_LONGER:
                if write.take { removed += 1 } else { added += 1 }
            case PC_INSTALL_KEPT:
                if !write.take { refuse(write.network) }
            case PC_INSTALL_FULL: hostsFull = true
            default: fallBack(write)
            }
        }
        // The failure is kept for whoever reports (`installerProblem`).
        if let error { maps.installer.withLock { $0.problem = "\(error)" } }
        for write in writes[outcomes.count...] { fallBack(write) }
        writes = []
    }

    private mutating func fallBack(_ write: BanInstaller.ListHostWrite) {
        if write.take { take(write.network) } else { stage(write.network, write.request) }
    }

    /// The hosts staged here, in one batch. - Returns: false when the hash is full (the caller
    /// builds the family again, larger).
    mutating func fillHosts() throws(FirewallError) -> Bool {
        if hostsFull { return false }
        do throws(FirewallError) {
            try maps.fill(hosts, keys: hostKeys, values: hostValues, keySize: keySize, family: family)
            return true
        } catch {
            guard case .banMapFull = error else { throw error }
            return false
        }
    }
}

/// The origin slots a writer owns, as bits (`pc_list_install_args.owned`'s layout): asked once
/// per slot, not once per entry.
struct OriginMask: Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    init(_ owned: (UInt32) -> Bool) {
        withUnsafeMutableBytes(of: &words) { raw in
            for origin in 0..<UInt32(PC_MAX_ORIGINS) where owned(origin) {
                let offset = Int(origin / 64) * 8
                raw.storeBytes(
                    of: raw.load(fromByteOffset: offset, as: UInt64.self) | 1 << UInt64(origin % 64),
                    toByteOffset: offset,
                    as: UInt64.self)
            }
        }
    }

    func contains(_ origin: UInt32) -> Bool {
        guard origin < UInt32(PC_MAX_ORIGINS) else { return false }
        return withUnsafeBytes(of: words) { $0.load(fromByteOffset: Int(origin / 64) * 8, as: UInt64.self) }
            & 1 << UInt64(origin % 64) != 0
    }
}
