import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// A ban of a network (or, for lists, an entry of a blocklist) as it stands in the maps.
public struct NetworkBanEntry: Sendable, Equatable {
    /// Where it is kept: an exact map, a fixed-length prefix hash, the CIDR trie, the blocklists.
    public enum Place: String, Sendable {
        case exact, prefix, cidr, list
    }

    public let network: IPNetwork
    public let place: Place
    public let expiry: BanExpiry
    public let dropped: UInt64
    public let origin: UInt32

    public init(network: IPNetwork, place: Place, expiry: BanExpiry, dropped: UInt64, origin: UInt32) {
        self.network = network
        self.place = place
        self.expiry = expiry
        self.dropped = dropped
        self.origin = origin
    }

    public func isExpired(now: UInt64 = SystemClock.bootNanoseconds()) -> Bool {
        if case .at(let end) = expiry { return now >= end }
        return false
    }
}

/// What `liftIfEnded(network:now:)` found.
public enum NetworkLiftOutcome: Sendable, Equatable {
    /// The ban had ended: deleted.
    case lifted(NetworkBanEntry)
    /// No ban (an operator's `unban`, or lifted already).
    case absent
    /// A ban in force (a re-ban since the sweep read it): left as it was.
    case inForce(NetworkBanEntry)
}

/// One line of `portcullis list`: any ban or list entry, with its origin named.
public struct BanListing: Sendable {
    public let network: IPNetwork
    /// Whole seconds left, rounded up (nil: for good).
    public let secondsLeft: UInt64?
    public let expired: Bool
    public let dropped: UInt64
    /// The jail that made it, `manual`, or `list:NAME`.
    public let origin: String
}

/// The key of a prefix hash or trie (`pc_prefix4_key` / `pc_prefix6_key`).
private struct PrefixKey {
    var bytes: [UInt8]

    init(_ network: IPNetwork) {
        var bytes = [UInt8](repeating: 0, count: network.family == .ipv4 ? 8 : 20)
        withUnsafeBytes(of: UInt32(network.length)) { for index in 0..<4 { bytes[index] = $0[index] } }
        network.address.withUnsafeBytes { address in
            for index in 0..<address.count { bytes[4 + index] = address[index] }
        }
        self.bytes = bytes
    }

    static func network(_ raw: UnsafeRawBufferPointer, family: IPAddress.Family) -> IPNetwork {
        let length = Int(raw.loadUnaligned(as: UInt32.self))
        let address = IPAddress(bytes: raw[4..<(family == .ipv4 ? 8 : 20)])
        return IPNetwork(containing: address, length: length)
    }
}

extension BanMaps {
    /// Every ban (exact, prefix, CIDR) and every blocklist entry, exact ones first.
    public func listing(now: UInt64 = SystemClock.bootNanoseconds()) throws(FirewallError) -> [BanListing] {
        let names = try originNames()
        func left(_ expiry: BanExpiry) -> UInt64? {
            guard case .at(let end) = expiry else { return nil }
            // Whole seconds, rounded up: a ban with 0.2 s left is not yet over.
            return end > now ? (end - now + 999_999_999) / 1_000_000_000 : 0
        }
        let exact = try entries().map {
            BanListing(
                network: IPNetwork(containing: $0.address, length: 128), secondsLeft: left($0.expiry),
                expired: $0.isExpired(now: now), dropped: $0.dropped, origin: names[$0.origin] ?? "manual")
        }
        let networks = try (networkBans() + listEntries()).map {
            BanListing(
                network: $0.network, secondsLeft: left($0.expiry), expired: $0.isExpired(now: now),
                dropped: $0.dropped, origin: names[$0.origin] ?? "manual")
        }
        return exact + networks
    }

    // MARK: Configuration

    /// The fixed prefix lengths of `family`, longest first (`PC_CONFIG_LENGTHS_*`).
    public func prefixLengths(_ family: IPAddress.Family) throws(FirewallError) -> [Int] {
        let packed = try readConfig(family == .ipv4 ? PC_CONFIG_LENGTHS_V4 : PC_CONFIG_LENGTHS_V6)
        return (0..<Int(PC_MAX_PREFIX_LENGTHS)).map { Int((packed >> (8 * UInt32($0))) & 0xff) }.prefix { $0 != 0 }
            .map { $0 }
    }

    /// Sets the fixed prefix lengths of a family: refused while its prefix hash holds entries of
    /// other lengths (they would no longer be looked up).
    public func setPrefixLengths(_ lengths: [Int], family: IPAddress.Family) throws(FirewallError) {
        let full = IPNetwork.fullLength(family)
        let sorted = Array(Set(lengths)).sorted(by: >)
        guard sorted.count <= Int(PC_MAX_PREFIX_LENGTHS), sorted.allSatisfy({ (1..<full).contains($0) }) else {
            throw .invalidAddress(
                "prefix lengths \(lengths.map(String.init).joined(separator: ",")): at most "
                    + "\(PC_MAX_PREFIX_LENGTHS), each 1...\(full - 1)")
        }
        let current = try prefixLengths(family)
        guard current != sorted else { return }
        if try !networkEntries(in: family == .ipv4 ? prefixV4 : prefixV6, family: family, place: .prefix).isEmpty {
            throw .incompatiblePins(
                path: PC_MAP_CONFIG,
                detail: "the pinned maps hold \(family == .ipv4 ? "IPv4" : "IPv6") prefix bans of the lengths "
                    + "\(current.map(String.init).joined(separator: ",")); lift them (portcullis unban) before changing "
                    + "the lengths to \(sorted.map(String.init).joined(separator: ","))")
        }
        let packed = sorted.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
        try writeConfig(family == .ipv4 ? PC_CONFIG_LENGTHS_V4 : PC_CONFIG_LENGTHS_V6, packed)
    }

    /// Made by a load: the default lengths (IPv4 /24; IPv6 /64, /56, /48), nothing used yet.
    func writeDefaultConfiguration() throws(FirewallError) {
        try writeConfig(PC_CONFIG_LENGTHS_V4, PC_DEFAULT_LENGTHS_V4)
        try writeConfig(PC_CONFIG_LENGTHS_V6, PC_DEFAULT_LENGTHS_V6)
    }

    func readConfig(_ index: pc_config_index) throws(FirewallError) -> UInt32 {
        var key = index.rawValue
        var value: UInt32 = 0
        try bpfCall("read \(PC_MAP_CONFIG)") { bpf_map_lookup_elem(config.fd, &key, &value) }
        return value
    }

    func writeConfig(_ index: pc_config_index, _ value: UInt32) throws(FirewallError) {
        var key = index.rawValue
        var value = value
        try bpfCall("write \(PC_MAP_CONFIG)") { bpf_map_update_elem(config.fd, &key, &value, UInt64(BPF_ANY)) }
    }

    /// The coverage slots a network touches (portcullis_abi.h, `pc_cover`).
    enum Coverage: Equatable {
        /// IPv4: its /24s, `count` of them from `start`.
        case range(start: UInt32, count: UInt32)
        /// IPv6: the slots of its /64s.
        case slots([UInt32])
        /// IPv6 shorter than /48: every IPv6 source counts as covered.
        case allIPv6
    }

    /// The slot of an IPv6 /64 whose first two 32-bit words (host order) are `a` and `b`.
    static func coverSlot(ipv6 a: UInt32, _ b: UInt32) -> UInt32 {
        let hash = (a ^ (b &* PC_COVER_HASH_A)) &* PC_COVER_HASH_B
        return UInt32(PC_COVER_V6_BASE) + (hash >> UInt32(32 - PC_COVER_V6_BITS))
    }

    static func coverage(_ network: IPNetwork) -> Coverage {
        let words: (UInt32, UInt32) = network.address.withUnsafeBytes {
            (
                $0.loadUnaligned(as: UInt32.self).bigEndian,
                $0.count >= 8 ? $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self).bigEndian : 0
            )
        }
        if network.family == .ipv4 {
            return .range(start: words.0 >> 8, count: network.length >= 24 ? 1 : 1 << UInt32(24 - network.length))
        }
        guard network.length >= 48 else { return .allIPv6 }
        let count = network.length >= 64 ? 1 : UInt32(1) << UInt32(64 - network.length)
        return .slots((0..<count).map { coverSlot(ipv6: words.0, words.1 &+ $0) })
    }

    /// Sets the coverage bit of `kind` (one of `PC_COVER_*`) in every slot `networks` touch,
    /// before the networks go in.
    func cover(_ networks: [IPNetwork], kind: UInt32) throws(FirewallError) {
        let bit = UInt64(kind.trailingZeroBitCount)
        func set(_ slot: UInt32) {
            cportcullis_fetch_or_u64(coverBits + Int(slot >> 4), UInt64(1) << (UInt64(slot & 15) * 4 + bit))
        }
        for network in networks {
            switch Self.coverage(network) {
            case .range(let start, let count):
                var slot = start
                let end = start + count
                while slot < end {
                    // Sixteen slots a word: whole words at once where the range spans them.
                    if slot & 15 == 0 && end - slot >= 16 {
                        cportcullis_fetch_or_u64(coverBits + Int(slot >> 4), 0x1111_1111_1111_1111 << bit)
                        slot += 16
                    } else {
                        set(slot)
                        slot += 1
                    }
                }
            case .slots(let slots):
                for slot in slots { set(slot) }
            case .allIPv6:
                // Every kind at once: writers never read and rewrite this element (no lost update).
                try writeConfig(PC_CONFIG_COVER_ALL_V6, 0xf)
            }
        }
    }

    /// Marks a structure used (the program looks it up from now on): before its first entry goes in.
    func markUsed(_ index: pc_config_index) throws(FirewallError) {
        if try readConfig(index) == 0 { try writeConfig(index, 1) }
    }

    // MARK: Network bans

    /// Where a ban of `network` goes: the exact map (a single address), the prefix hash (a fixed
    /// length), else the CIDR trie.
    public func place(of network: IPNetwork) throws(FirewallError) -> NetworkBanEntry.Place {
        if network.isSingleAddress { return .exact }
        return try prefixLengths(network.family).contains(network.length) ? .prefix : .cidr
    }

    /// Bans `network` (its drop count kept when it was banned already).
    public func ban(
        network: IPNetwork, _ expiry: BanExpiry, origin: UInt32 = UInt32(PC_ORIGIN_OPERATOR)
    )
        throws(FirewallError)
    {
        let place = try place(of: network)
        if place == .exact {
            try ban(network.address, expiry, origin: origin)
            return
        }
        let v4 = network.family == .ipv4
        let (map, used) =
            place == .prefix
            ? (v4 ? prefixV4 : prefixV6, v4 ? PC_CONFIG_USED_PREFIX_V4 : PC_CONFIG_USED_PREFIX_V6)
            : (v4 ? cidrV4 : cidrV6, v4 ? PC_CONFIG_USED_CIDR_V4 : PC_CONFIG_USED_CIDR_V6)
        var key = PrefixKey(network).bytes
        var value = pc_ban()
        let dropped = bpf_map_lookup_elem(map.fd, &key, &value) == 0 ? value.dropped : 0
        value = BanRequest(network.address, expiry, origin: origin).value(dropped: dropped)
        try cover([network], kind: place == .prefix ? PC_COVER_PREFIX : PC_COVER_CIDR)
        try markUsed(used)
        switch systemCallResult({ bpf_map_update_elem(map.fd, &key, &value, UInt64(BPF_ANY)) }) {
        case .success: break
        case .failure(let error) where error.code == E2BIG || error.code == ENOSPC:
            throw .banMapFull(family: familyName(network.family), capacity: 0, installed: 0)
        case .failure(let error): throw systemError("ban \(network)", error.code)
        }
        try markUsed(used)  // again after: see portcullis_abi.h (set before the first entry, never cleared)
    }

    /// The ban of `network` as it was made (nil: none).
    public func lookup(network: IPNetwork) throws(FirewallError) -> NetworkBanEntry? {
        let place = try place(of: network)
        if place == .exact {
            return try lookup(network.address).map {
                NetworkBanEntry(
                    network: network, place: .exact, expiry: $0.expiry, dropped: $0.dropped, origin: $0.origin)
            }
        }
        let v4 = network.family == .ipv4
        let map = place == .prefix ? (v4 ? prefixV4 : prefixV6) : (v4 ? cidrV4 : cidrV6)
        var key = PrefixKey(network).bytes
        var value = pc_ban()
        switch systemCallResult({ bpf_map_lookup_elem(map.fd, &key, &value) }) {
        case .success:
            return NetworkBanEntry(
                network: network, place: place, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                dropped: value.dropped, origin: value.origin)
        case .failure(let error) where error.code == ENOENT: return nil
        case .failure(let error): throw systemError("look up \(network)", error.code)
        }
    }

    /// Lifts the ban of `network` exactly as it was made. - Returns: whether it was banned.
    @discardableResult
    public func unban(network: IPNetwork) throws(FirewallError) -> Bool {
        let place = try place(of: network)
        if place == .exact { return try unban(network.address) }
        let v4 = network.family == .ipv4
        let map = place == .prefix ? (v4 ? prefixV4 : prefixV6) : (v4 ? cidrV4 : cidrV6)
        var key = PrefixKey(network).bytes
        switch systemCallResult({ bpf_map_delete_elem(map.fd, &key) }) {
        case .success: return true
        case .failure(let error) where error.code == ENOENT: return false
        case .failure(let error): throw systemError("unban \(network)", error.code)
        }
    }

    /// Every ban of a network (prefix hashes and CIDR tries, both families).
    public func networkBans() throws(FirewallError) -> [NetworkBanEntry] {
        try networkEntries(in: prefixV4, family: .ipv4, place: .prefix)
            + networkEntries(in: prefixV6, family: .ipv6, place: .prefix)
            + networkEntries(in: cidrV4, family: .ipv4, place: .cidr)
            + networkEntries(in: cidrV6, family: .ipv6, place: .cidr)
    }

    /// Deletes the ban of `network` if it has ended at `now`. In a prefix hash that is
    /// `bpf_map_lookup_and_delete_elem`, atomic against anyone writing it meanwhile: a ban found in
    /// force is put back as it was (for the microseconds in between the program passes the
    /// network), as `liftIfEnded(_:now:)` does for an address. A CIDR trie refuses lookup-and-delete:
    /// it is looked up, compared and deleted, which is atomic only against writers holding the
    /// caller's lock (the daemon's `Enforcement`; a `portcullis ban` of the same CIDR written
    /// directly into the maps in those microseconds is lost).
    public func liftIfEnded(network: IPNetwork, now: UInt64) throws(FirewallError) -> NetworkLiftOutcome {
        let place = try place(of: network)
        func entry(_ value: pc_ban) -> NetworkBanEntry {
            NetworkBanEntry(
                network: network, place: place, expiry: BanExpiry(expiresNanoseconds: value.expires_ns),
                dropped: value.dropped, origin: value.origin)
        }
        func entry(_ ban: BanEntry) -> NetworkBanEntry {
            NetworkBanEntry(
                network: network, place: .exact, expiry: ban.expiry, dropped: ban.dropped, origin: ban.origin)
        }
        switch place {
        case .exact:
            switch try liftIfEnded(network.address, now: now) {
            case .lifted(let ban): return .lifted(entry(ban))
            case .absent: return .absent
            case .inForce(let ban): return .inForce(entry(ban))
            }
        case .prefix:
            let map = network.family == .ipv4 ? prefixV4 : prefixV6
            var key = PrefixKey(network).bytes
            var value = pc_ban()
            switch systemCallResult({ bpf_map_lookup_and_delete_elem(map.fd, &key, &value) }) {
            case .failure(let error) where error.code == ENOENT: return .absent
            case .failure(let error): throw systemError("lift the ban of \(network)", error.code)
            case .success: break
            }
            if entry(value).isExpired(now: now) { return .lifted(entry(value)) }
            // Written (or made longer) after the sweep looked: put it back unless a newer one is there.
            var restore = value
            _ = systemCallResult { bpf_map_update_elem(map.fd, &key, &restore, UInt64(BPF_NOEXIST)) }
            return .inForce(entry(value))
        case .cidr, .list:  // `place(of:)` never says `.list`: lists are not bans of this layer
            guard let found = try lookup(network: network) else { return .absent }
            guard found.isExpired(now: now) else { return .inForce(found) }
            return try unban(network: network) ? .lifted(found) : .absent
        }
    }

    /// The entries of a prefix-keyed map: with `bpf_map_lookup_batch` where the kernel batches
    /// the map's type, else key by key.
    func networkEntries(
        in map: BPFDescriptor, family: IPAddress.Family, place: NetworkBanEntry.Place
    )
        throws(FirewallError) -> [NetworkBanEntry]
    {
        func entry(_ key: UnsafeRawBufferPointer, _ value: pc_ban) -> NetworkBanEntry {
            NetworkBanEntry(
                network: PrefixKey.network(key, family: family), place: place,
                expiry: BanExpiry(expiresNanoseconds: value.expires_ns), dropped: value.dropped, origin: value.origin)
        }
        if let batched = try batchedEntries(in: map, family: family, entry) { return batched }
        var entries: [NetworkBanEntry] = []
        for var key in try keys(of: map, family: family) {
            var value = pc_ban()
            guard bpf_map_lookup_elem(map.fd, &key, &value) == 0 else { continue }  // gone meanwhile
            entries.append(key.withUnsafeBytes { entry($0, value) })
        }
        return entries
    }

    /// Every entry by `bpf_map_lookup_batch`, or nil when the kernel does not batch this map.
    private func batchedEntries(
        in map: BPFDescriptor, family: IPAddress.Family,
        _ entry: (UnsafeRawBufferPointer, pc_ban) -> NetworkBanEntry
    ) throws(FirewallError) -> [NetworkBanEntry]? {
        let keySize = family == .ipv4 ? 8 : 20
        let chunk = 8192
        var keys = [UInt8](repeating: 0, count: chunk * keySize)
        var values = [pc_ban](repeating: pc_ban(), count: chunk)
        var entries: [NetworkBanEntry] = []
        // The batch position is a key of the map (generic batching walks get_next_key).
        var token = [UInt8](repeating: 0, count: keySize)
        var next = [UInt8](repeating: 0, count: keySize)
        var first = true
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        while true {
            var count = UInt32(chunk)
            let result = keys.withUnsafeMutableBytes { keyBytes in
                values.withUnsafeMutableBytes { valueBytes in
                    token.withUnsafeMutableBytes { tokenBytes in
                        next.withUnsafeMutableBytes { nextBytes in
                            systemCallResult {
                                count = UInt32(chunk)
                                return bpf_map_lookup_batch(
                                    map.fd, first ? nil : tokenBytes.baseAddress, nextBytes.baseAddress,
                                    keyBytes.baseAddress, valueBytes.baseAddress, &count, &options)
                            }
                        }
                    }
                }
            }
            var ended = false
            if case .failure(let error) = result {
                if first && (error.code == EINVAL || error.code == ENOTSUP || error.code == EOPNOTSUPP) { return nil }
                if error.code != ENOENT { throw systemError("read a network map", error.code) }
                ended = true
            }
            keys.withUnsafeBytes { bytes in
                for index in 0..<Int(count) {
                    entries.append(
                        entry(
                            UnsafeRawBufferPointer(rebasing: bytes[(index * keySize)..<((index + 1) * keySize)]),
                            values[index]))
                }
            }
            if ended { return entries }
            token = next
            first = false
        }
    }

    /// Every key of a prefix-keyed map (`bpf_map_get_next_key`).
    private func keys(of map: BPFDescriptor, family: IPAddress.Family) throws(FirewallError) -> [[UInt8]] {
        let keySize = family == .ipv4 ? 8 : 20
        var keys: [[UInt8]] = []
        var previous = [UInt8](repeating: 0, count: keySize)
        var next = [UInt8](repeating: 0, count: keySize)
        var first = true
        while true {
            let result =
                first
                ? bpf_map_get_next_key(map.fd, nil, &next)
                : bpf_map_get_next_key(map.fd, &previous, &next)
            if result != 0 {
                if errno == ENOENT { break }
                throw systemError("read the keys of a network map", errno)
            }
            first = false
            keys.append(next)
            previous = next
        }
        return keys
    }

    // MARK: Allowlist

    /// Makes the driver's allowlist exactly `networks`: new ones go in before stale ones go out,
    /// so nothing that stays allowlisted is ever briefly not. - Returns: entries now in it.
    @discardableResult
    public func replaceAllowlist(_ networks: [IPNetwork]) throws(FirewallError) -> Int {
        var count = 0
        for (family, map, used) in [
            (IPAddress.Family.ipv4, allowV4, PC_CONFIG_USED_ALLOW_V4), (.ipv6, allowV6, PC_CONFIG_USED_ALLOW_V6),
        ] {
            let wanted = Set(networks.filter { $0.family == family })
            let present = Set(try allowlistEntries(map, family: family))
            if !wanted.isEmpty { try markUsed(used) }
            for network in wanted.subtracting(present) {
                var key = PrefixKey(network).bytes
                var value: UInt32 = 0
                try bpfCall("allowlist \(network)") { bpf_map_update_elem(map.fd, &key, &value, UInt64(BPF_ANY)) }
            }
            for network in present.subtracting(wanted) {
                var key = PrefixKey(network).bytes
                _ = bpf_map_delete_elem(map.fd, &key)
            }
            count += wanted.count
        }
        return count
    }

    /// The driver's allowlist.
    public func allowlist() throws(FirewallError) -> [IPNetwork] {
        try allowlistEntries(allowV4, family: .ipv4) + allowlistEntries(allowV6, family: .ipv6)
    }

    private func allowlistEntries(_ map: BPFDescriptor, family: IPAddress.Family) throws(FirewallError) -> [IPNetwork] {
        try keys(of: map, family: family).map { $0.withUnsafeBytes { PrefixKey.network($0, family: family) } }
    }

    // MARK: Blocklists

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
            throw .invalidAddress("list name '\(name)': 1 to 40 letters, digits, '-', '_' or '.'")
        }
        // Naming the slot and swapping the list under one hold of the lock: two loaders of new
        // names at once would otherwise both take the same free slot.
        return try withWritersLock { () throws(FirewallError) -> ListSwap in
            guard let slot = try assignOriginSlots(for: [origin])[origin] else {
                throw .invalidAddress("no origin slot is free for \(origin): all \(PC_MAX_ORIGINS - 1) are named")
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
    private func swapList(origin: UInt32, with networks: [IPNetwork]) throws(FirewallError) -> ListSwap {
        try swapLists(
            replacing: { $0 == origin },
            with: networks.map { ListEntry(network: $0, expiry: .permanent, origin: origin) })
    }

    /// Replaces every list entry whose origin `owned` accepts by `entries` (each with its own
    /// origin and end), in one swap per family whose lists change; for a caller holding the
    /// writers' lock. An entry for a network another origin's entry has already is left out
    /// (that entry stays as it was).
    private func swapLists(
        replacing owned: (UInt32) -> Bool, with entries: [ListEntry], families: [IPAddress.Family] = [.ipv4, .ipv6]
    ) throws(FirewallError)
        -> ListSwap
    {
        var swap = ListSwap()
        for family in families {
            let v4 = family == .ipv4
            let mine = entries.filter { $0.network.family == family }
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
            var taken = Set<IPNetwork>()
            var hostKeys: [UInt8] = []
            var hostValues: [pc_ban] = []
            var netKeys: [UInt8] = []
            var netValues: [pc_ban] = []
            func add(_ network: IPNetwork, _ value: pc_ban) {
                if network.isSingleAddress {
                    hostKeys += PrefixKey(network).bytes
                    hostValues.append(value)
                } else {
                    netKeys += PrefixKey(network).bytes
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
            try cover(mine.map(\.network).filter(\.isSingleAddress), kind: PC_COVER_LIST_HOSTS)
            try cover(mine.map(\.network).filter { !$0.isSingleAddress }, kind: PC_COVER_LIST_NETS)
            try fill(hosts, keys: hostKeys, values: hostValues, keySize: keySize, family: family)
            try fill(trie, keys: netKeys, values: netValues, keySize: keySize, family: family)
            try markUsed(v4 ? PC_CONFIG_USED_LISTS_V4 : PC_CONFIG_USED_LISTS_V6)
            let next = 1 - (try listGeneration(family))
            for (outer, inner) in [(v4 ? listHostsV4 : listHostsV6, hosts), (v4 ? listsV4 : listsV6, trie)] {
                var slot = next
                var fd = UInt32(bitPattern: inner.fd)
                try bpfCall("put in the next blocklist generation") {
                    bpf_map_update_elem(outer.fd, &slot, &fd, UInt64(BPF_ANY))
                }
            }
            try writeConfig(v4 ? PC_CONFIG_LISTS_GEN_V4 : PC_CONFIG_LISTS_GEN_V6, next)
        }
        return swap
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
                let add = adding.filter { $0.network.family == family }
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
                        var key = PrefixKey(network).bytes
                        var value = pc_ban()
                        return bpf_map_lookup_elem(hosts.fd, &key, &value) == 0 ? value : nil
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
                    var key = PrefixKey(network).bytes
                    let map = network.isSingleAddress ? hosts : trie
                    if bpf_map_delete_elem(map.fd, &key) == 0 { update.removed += 1 }
                }
                var hostKeys: [UInt8] = []
                var hostValues: [pc_ban] = []
                var netKeys: [UInt8] = []
                var netValues: [pc_ban] = []
                var added: [IPNetwork] = []
                for entry in add {
                    let current = try existing(entry.network)
                    if let current, !owned(current.origin) {
                        update.heldByOthers.append(entry.network)
                        continue
                    }
                    let value = BanRequest(entry.network.address, entry.expiry, origin: entry.origin)
                        .value(dropped: current?.dropped ?? 0)
                    if entry.network.isSingleAddress {
                        hostKeys += PrefixKey(entry.network).bytes
                        hostValues.append(value)
                    } else {
                        netKeys += PrefixKey(entry.network).bytes
                        netValues.append(value)
                    }
                    added.append(entry.network)
                }
                // Coverage first: the program looks at the list maps of a space only once it is covered.
                try cover(added.filter(\.isSingleAddress), kind: PC_COVER_LIST_HOSTS)
                try cover(added.filter { !$0.isSingleAddress }, kind: PC_COVER_LIST_NETS)
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
                    for entry in add where !update.heldByOthers.contains(entry.network) {
                        wanted[entry.network] = entry
                    }
                    _ = try swapLists(replacing: owned, with: Array(wanted.values), families: [family])
                    update.added += added.count
                    update.swappedFamilies += 1
                    continue
                }
                try fill(trie, keys: netKeys, values: netValues, keySize: keySize, family: family)
                try markUsed(v4 ? PC_CONFIG_USED_LISTS_V4 : PC_CONFIG_USED_LISTS_V6)
                update.added += added.count
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
            _ = try swapLists(replacing: { slots.contains($0) }, with: [])
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
