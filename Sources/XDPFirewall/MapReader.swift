// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// The one reader of a map whose values are bans (`pc_ban`): the exact maps, the prefix hashes,
/// the CIDR tries and the lists' tries. A chunk is one `bpf_map_lookup_batch` from the position
/// the kernel handed back; a map the kernel does not batch is walked with `bpf_map_get_next_key`
/// and a lookup per key. Every call goes through the funnel (`systemCallResult`: errno read at
/// once, `EINTR` retried).
struct MapReader {
    let fd: Int32
    /// The map's name, for errors.
    let name: String
    let keySize: Int

    /// Reads up to `limit` entries from `position` with one `bpf_map_lookup_batch`, handing each
    /// key's bytes and value to `entry`.
    /// - Returns: whether there is more (false: the map has been read to its end); nil when the
    ///   kernel does not batch this map (said by the first read only).
    func readChunk(
        at position: inout BanMaps.BatchPosition, limit: Int, _ entry: (UnsafeRawBufferPointer, pc_ban) -> Void
    ) throws(FirewallError) -> Bool? {
        let keys = UnsafeMutableRawBufferPointer.allocate(byteCount: limit * keySize, alignment: 8)
        let values = UnsafeMutableBufferPointer<pc_ban>.allocate(capacity: limit)
        defer {
            keys.deallocate()
            values.deallocate()
        }
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var count = UInt32(limit)
        var next = BanMaps.BatchPosition().token
        let first = !position.started
        let result = position.token.withUnsafeMutableBytes { token in
            next.withUnsafeMutableBytes { next in
                systemCallResult {
                    count = UInt32(limit)
                    return bpf_map_lookup_batch(
                        fd, first ? nil : token.baseAddress, next.baseAddress, keys.baseAddress, values.baseAddress,
                        &count, &options)
                }
            }
        }
        var ended = false
        if case .failure(let error) = result {
            if first && (error.code == EINVAL || error.code == ENOTSUP || error.code == EOPNOTSUPP) { return nil }
            if error.code != ENOENT { throw systemError("read \(name)", error.code) }
            ended = true  // ENOENT: the map has been read to its end
        }
        for index in 0..<Int(count) {
            entry(UnsafeRawBufferPointer(rebasing: keys[(index * keySize)..<((index + 1) * keySize)]), values[index])
        }
        position = ended ? BanMaps.BatchPosition() : BanMaps.BatchPosition(token: next, started: true)
        return !ended
    }

    /// Every entry: batched where the kernel batches the map, else key by key (an entry deleted
    /// meanwhile is skipped).
    func readAll(_ entry: (UnsafeRawBufferPointer, pc_ban) -> Void) throws(FirewallError) {
        var position = BanMaps.BatchPosition()
        while true {
            guard let more = try readChunk(at: &position, limit: 8192, entry) else { break }
            if !more { return }
        }
        try walk { key in
            var value = pc_ban()
            guard case .success = systemCallResult({ bpf_map_lookup_elem(fd, key.baseAddress, &value) }) else {
                return
            }
            entry(UnsafeRawBufferPointer(key), value)
        }
    }

    /// Hands every key (`bpf_map_get_next_key`) to `body`, in two buffers of its size (no array
    /// per key: a list's trie of 10,000 networks is walked at each delta that touches networks).
    func walk(_ body: (UnsafeMutableRawBufferPointer) throws(FirewallError) -> Void) throws(FirewallError) {
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * keySize, alignment: 8)
        defer { buffers.deallocate() }
        var previous = UnsafeMutableRawBufferPointer(rebasing: buffers[0..<keySize])
        var next = UnsafeMutableRawBufferPointer(rebasing: buffers[keySize...])
        var first = true
        while true {
            let from = first ? nil : UnsafeRawPointer(previous.baseAddress)
            let result = systemCallResult { bpf_map_get_next_key(fd, from, next.baseAddress) }
            if case .failure(let error) = result {
                if error.code == ENOENT { return }
                throw systemError("read the keys of \(name)", error.code)
            }
            first = false
            try body(next)
            swap(&previous, &next)
        }
    }

    /// Every key (`bpf_map_get_next_key`), whatever the map's values.
    func keys() throws(FirewallError) -> [[UInt8]] {
        var keys: [[UInt8]] = []
        try walk { keys.append(Array($0)) }
        return keys
    }
}
