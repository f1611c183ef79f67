// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

extension BanMaps {
    /// Every ban (exact, prefix, CIDR) and every blocklist entry, exact ones first, as `portcullis
    /// list` shows them.
    public func listing(now: UInt64 = SystemClock.bootNanoseconds()) throws(FirewallError) -> [BanRow] {
        let names = try originNames()
        func left(_ expiry: BanExpiry) -> UInt64? {
            guard case .at(let end) = expiry else { return nil }
            // Whole seconds, rounded up: a ban with 0.2 s left is not yet over.
            return end > now ? (end - now + 999_999_999) / 1_000_000_000 : 0
        }
        let exact = try entries().map {
            BanRow(
                address: $0.address.description, expiresIn: left($0.expiry), expired: $0.isExpired(now: now),
                dropped: $0.dropped, jail: names[$0.origin] ?? "manual")
        }
        let networks = try (networkBans() + listEntries()).map {
            BanRow(
                address: $0.network.description, expiresIn: left($0.expiry), expired: $0.isExpired(now: now),
                dropped: $0.dropped, jail: names[$0.origin] ?? "manual")
        }
        return exact + networks
    }
}

extension BanMaps {
    /// Writes every ban and blocklist entry to `fd` as `portcullis list --json` prints them: one
    /// JSON array of `{"address", "dropped", "expired", "expires_in", "jail"}` (keys sorted, as
    /// `JSONOutput` writes them; `expires_in` null for good), exact bans first, and a newline.
    ///
    /// It streams: the exact maps are read 4,096 entries at a time (`bpf_map_lookup_batch`), each
    /// row formatted into a buffer without allocating, and the buffer written out whenever it
    /// holds 256 KiB, so 1,000,000 bans need no more memory than 10.
    /// - Parameter deadline: `CLOCK_MONOTONIC` nanoseconds after which writing fails (a peer that
    ///   reads too slowly); nil: none.
    /// - Returns: the rows written.
    @discardableResult
    public func writeJSONListing(
        to fd: Int32, now: UInt64 = SystemClock.bootNanoseconds(), deadline: UInt64? = nil
    ) throws(FirewallError) -> Int {
        let names = try originNames()
        var jails = [[UInt8]](repeating: [], count: Int(PC_MAX_ORIGINS))
        for slot in 0..<jails.count { jails[slot] = JSONRows.quoted(names[UInt32(slot)] ?? "manual") }
        let manual = JSONRows.quoted("manual")
        var rows = JSONRows(fd: fd, deadline: deadline)
        defer { rows.deallocate() }
        try rows.append(byte: UInt8(ascii: "["))
        for (fd, name, ipv6) in [(bansV4.fd, PC_MAP_BANS_V4, false), (bansV6.fd, PC_MAP_BANS_V6, true)] {
            var position = BatchPosition()
            var entries: [BanEntry] = []
            var more = true
            while more {
                entries.removeAll(keepingCapacity: true)
                more =
                    ipv6
                    ? try readChunk(
                        fd: fd, name: name, at: &position, limit: 4096,
                        address: { (key: pc_ipv6_key) in IPAddress(key) }, into: &entries)
                    : try readChunk(
                        fd: fd, name: name, at: &position, limit: 4096,
                        address: { (key: pc_ipv4_key) in IPAddress(key) }, into: &entries)
                for entry in entries {
                    let jail = Int(entry.origin) < jails.count ? jails[Int(entry.origin)] : manual
                    try rows.row(
                        address: entry.address, length: nil, expiry: entry.expiry, dropped: entry.dropped,
                        now: now, jail: jail)
                }
            }
        }
        for entry in try networkBans() + listEntries() {
            let jail = Int(entry.origin) < jails.count ? jails[Int(entry.origin)] : manual
            try rows.row(
                address: entry.network.address, length: entry.network.isSingleAddress ? nil : entry.network.length,
                expiry: entry.expiry, dropped: entry.dropped, now: now, jail: jail)
        }
        try rows.append(byte: UInt8(ascii: "]"))
        try rows.append(byte: UInt8(ascii: "\n"))
        try rows.flush()
        return rows.rows
    }
}

extension BanMaps {
    /// Benchmarks only: reads both exact maps with `bpf_map_lookup_batch`, 4,096 entries a call,
    /// into one reused buffer, and looks at nothing: the floor a listing is measured against.
    /// - Returns: the entries read.
    @_spi(Testing) public func bareBatchedDump() throws(FirewallError) -> Int {
        let keys = UnsafeMutableRawPointer.allocate(byteCount: 4096 * 16, alignment: 8)
        let values = UnsafeMutablePointer<pc_ban>.allocate(capacity: 4096)
        defer {
            keys.deallocate()
            values.deallocate()
        }
        var total = 0
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        for fd in [bansV4.fd, bansV6.fd] {
            var token: UInt64 = 0
            var first = true
            while true {
                var count: UInt32 = 4096
                var next: UInt64 = 0
                let result = withUnsafeMutablePointer(to: &token) { tokenPointer in
                    systemCallResult {
                        count = 4096
                        return bpf_map_lookup_batch(
                            fd, first ? nil : tokenPointer, &next, keys, values, &count, &options)
                    }
                }
                total += Int(count)
                if case .failure(let error) = result {
                    if error.code == ENOENT { break }
                    throw systemError("dump the ban maps", error.code)
                }
                token = next
                first = false
            }
        }
        return total
    }
}

/// Rows of a JSON listing, formatted into a buffer and written out in chunks.
struct JSONRows {
    let fd: Int32
    let deadline: UInt64?
    private let bytes: UnsafeMutableRawPointer
    private let capacity = 1 << 18
    private var count = 0
    private(set) var rows = 0

    init(fd: Int32, deadline: UInt64?) {
        self.fd = fd
        self.deadline = deadline
        bytes = .allocate(byteCount: capacity + 1024, alignment: 8)  // room for one more row
    }

    func deallocate() { bytes.deallocate() }

    /// `text` as a JSON string, quotes included.
    static func quoted(_ text: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), byte]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    mutating func append(byte: UInt8) throws(FirewallError) {
        bytes.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
        if count >= capacity { try flush() }
    }

    private mutating func put(_ text: StaticString) {
        (bytes + count).copyMemory(from: text.utf8Start, byteCount: text.utf8CodeUnitCount)
        count += text.utf8CodeUnitCount
    }

    private mutating func put(_ value: UInt64) {
        count += RawText.writeDecimal(value, into: bytes + count)
    }

    /// One row; a jail name longer than 400 bytes is cut (origin names are at most 32).
    mutating func row(
        address: IPAddress, length: Int?, expiry: BanExpiry, dropped: UInt64, now: UInt64, jail: [UInt8]
    ) throws(FirewallError) {
        if rows > 0 { put(",") }
        put("{\"address\":\"")
        count += address.write(into: bytes + count)
        if let length {
            put("/")
            put(UInt64(length))
        }
        put("\",\"dropped\":")
        put(dropped)
        switch expiry {
        case .permanent:
            put(",\"expired\":false,\"expires_in\":null")
        case .at(let end):
            put(end <= now ? ",\"expired\":true,\"expires_in\":" : ",\"expired\":false,\"expires_in\":")
            // Whole seconds, rounded up: a ban with 0.2 s left is not yet over.
            put(end > now ? (end - now + 999_999_999) / 1_000_000_000 : 0)
        }
        put(",\"jail\":")
        jail.prefix(400).withUnsafeBytes { (bytes + count).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        count += min(jail.count, 400)
        put("}")
        rows += 1
        if count >= capacity { try flush() }
    }

    mutating func flush() throws(FirewallError) {
        if let deadline, SystemClock.monotonicNanoseconds() > deadline {
            throw systemError("write the ban listing before its deadline", ETIMEDOUT)
        }
        var done = 0
        while done < count {
            switch systemCallResult({ write(fd, bytes + done, count - done) }) {
            case .success(let written) where written > 0: done += written
            case .success: throw systemError("write the ban listing", EIO)
            case .failure(let error): throw systemError("write the ban listing", error.code)
            }
        }
        count = 0
    }
}
