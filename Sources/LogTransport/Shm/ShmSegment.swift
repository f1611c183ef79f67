// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Settings of a shared-memory transport segment.
public struct ShmOptions: Sendable, Equatable {
    /// POSIX shared-memory name (a file under /dev/shm), with the leading slash.
    public var name = "/portcullis"
    /// Rings, one per writer thread (the thesis's "segments").
    public var rings = 4
    /// Slots per ring; a power of two (free-running indices are masked, never divided).
    public var slotsPerRing = 65_536
    /// Bytes per slot including its 16-byte header; a multiple of 16. Longest line: slotSize - 16.
    public var slotSize = 128
    /// Readers that can be attached at once.
    public var readerSlots = 8
    /// Writers never wait: a lapped reader skips ahead and counts what it lost, whatever its policy.
    public var overwrite = false
    /// Ask for transparent huge pages on the mapping (madvise; needs shmem_enabled=advise).
    public var hugePages = false
    /// Readers adopt the segment's layout when one exists instead of insisting on these values.
    public var adoptExistingLayout = true
    /// Mode of a created segment: owner read-write only by default (never world-writable).
    public var mode: mode_t = 0o600
    /// Whose files (and, for sockets, reader processes) are used besides root's and our own.
    public var owners = TrustedOwners()
    /// A reader with a name (the daemon's) resumes where the last reader of that name stopped (or
    /// died): the lines written meanwhile are still in the rings unless overwritten (then counted
    /// lost). Unnamed readers start at the rings' heads.
    public var readerName: String?
    /// How long a writer waits for a lossless reader that does not read before it goes on without
    /// it for a while (its missed lines counted lost).
    public var blockTimeoutMilliseconds = 1000

    public init() {}

    /// Longest line a slot holds.
    public var maxLineLength: Int { slotSize - ShmLayout.slotHeaderSize }

    func validate() throws(TransportError) {
        guard name.hasPrefix("/"), name.count > 1, !name.dropFirst().contains("/"), name.utf8.count < 250 else {
            throw .invalidConfiguration("--shm-name must be /NAME without further slashes, got '\(name)'")
        }
        guard (1...1024).contains(rings) else { throw .invalidConfiguration("--shm-segments must be 1...1024") }
        guard slotsPerRing >= 2, slotsPerRing & (slotsPerRing - 1) == 0, slotsPerRing <= 1 << 26 else {
            throw .invalidConfiguration("--shm-slots must be a power of two from 2 to 67108864, got \(slotsPerRing)")
        }
        guard slotSize >= 32, slotSize % 16 == 0, slotSize <= 65_536 else {
            throw .invalidConfiguration("--shm-slot-size must be a multiple of 16 from 32 to 65536, got \(slotSize)")
        }
        guard (1...4096).contains(readerSlots) else {
            throw .invalidConfiguration("--shm-reader-slots must be 1...4096")
        }
        if (mode & 0o002) != 0 { throw .invalidConfiguration("a world-writable segment mode is refused") }
        guard (1...3_600_000).contains(blockTimeoutMilliseconds) else {
            throw .invalidConfiguration("--block-timeout must be 1...3600000 milliseconds")
        }
    }
}

/// Byte layout of a segment. Every offset is from the start of the mapping; all integers are
/// little-endian (host order: the segment never leaves the machine).
///
///     Header (128 bytes)
///       0  u64 magic           ShmLayout.magic
///       8  u32 version         ShmLayout.version
///      12  u32 rings
///      16  u32 slotsPerRing
///      20  u32 slotSize
///      24  u32 readerSlots
///      28  u32 flags           bit 0: overwrite
///      32  u64 totalSize
///      40  u32 ready           set (release) once the creator has initialised everything
///      44  u32 creatorPID
///      48  u64 creatorStartTime (with creatorPID: who made the segment, for diagnostics)
///      64  u32 wakeSequence    futex word, own cache line: bumped when lines are published to sleepers
///      68  u32 sleepers        readers waiting on wakeSequence
///     Reader table: readerSlots entries of 64 bytes from offset 128
///       0  u64 owner           one word, changed only by compare-and-swap (see `OwnerWord`):
///                              bits 0-1 state (0 free, 1 being claimed, 2 attached),
///                              bits 2-31 generation (bumped by every change: no ABA),
///                              bits 32-63 pid of the holder
///       8  u64 startTime       /proc/PID/stat field 22 (a record for people; liveness is the slot's lock)
///      16  u32 policy          0 block, 1 drop
///      24  u64 lost            lines this reader missed (lapped)
///      32  u32 sleeping        this reader's threads counted in `sleepers` (given back if it dies)
///      40  u64 nameTag         a named reader's tag (the daemon's): its successor resumes its cursors
///     Rings from `ringsOffset`, each `ringSize` bytes:
///       0  u64 head            next write index, published (release) in batches
///       8  u64 owner           the ring's writer, as the reader table's owner word
///      16  u64 writerStartTime
///      24  u64 rejected        lines refused by the ring's writers (longer than a slot)
///      64  cursors: readerSlots x 64 bytes, one cache line each: 0 u64 tail, 8 u32 lock
///      64 + 64 x readerSlots: slots, slotsPerRing x slotSize:
///          0 u64 sequence      index + 1 once the slot holds line `index` (0 while being written)
///          8 u32 length
///         16 bytes of the line
struct ShmLayout: Equatable {
    static let magic: UInt64 = 0x314D_4853_4C55_4350  // "PCULSHM1" little-endian
    /// 2: slot holders hold their lock bytes (version 1 judged liveness by pid; a reader or writer
    /// of that version would hold no lock, and its live slot would be taken).
    static let version: UInt32 = 2
    static let headerSize = 128
    static let readerEntrySize = 64
    static let cursorSize = 64
    static let slotHeaderSize = 16

    let rings: Int
    let slotsPerRing: Int
    let slotSize: Int
    let readerSlots: Int
    let overwrite: Bool

    init(_ options: ShmOptions) {
        rings = options.rings
        slotsPerRing = options.slotsPerRing
        slotSize = options.slotSize
        readerSlots = options.readerSlots
        overwrite = options.overwrite
    }

    init(rings: Int, slotsPerRing: Int, slotSize: Int, readerSlots: Int, overwrite: Bool) {
        self.rings = rings
        self.slotsPerRing = slotsPerRing
        self.slotSize = slotSize
        self.readerSlots = readerSlots
        self.overwrite = overwrite
    }

    var ringsOffset: Int { (Self.headerSize + readerSlots * Self.readerEntrySize + 4095) & ~4095 }
    var ringHeaderAndCursors: Int { 64 + readerSlots * Self.cursorSize }
    var ringSize: Int { ringHeaderAndCursors + slotsPerRing * slotSize }
    var totalSize: Int { ringsOffset + rings * ringSize }

    var summary: String {
        "\(rings) rings x \(slotsPerRing) slots x \(slotSize) bytes, \(readerSlots) reader slots"
            + (overwrite ? ", overwrite" : "")
    }
}

/// Field offsets used by the writer and reader (see `ShmLayout`).
enum ShmField {
    static let magic = 0, version = 8, rings = 12, slotsPerRing = 16, slotSize = 20, readerSlots = 24, flags = 28
    static let totalSize = 32, ready = 40, creatorPID = 44, creatorStartTime = 48, wakeSequence = 64, sleepers = 68
    enum Reader { static let owner = 0, startTime = 8, policy = 16, lost = 24, sleeping = 32, nameTag = 40 }
    enum Ring { static let head = 0, owner = 8, writerStartTime = 16, rejected = 24 }
    enum Slot { static let sequence = 0, length = 8 }
}

/// A mapped segment, unmapped when released.
///
/// Every user holds a shared `flock` on the segment for as long as it has it mapped; the kernel
/// drops the lock when the process dies. Recreating a segment (another layout) takes the lock
/// exclusively without waiting: it succeeds only when nobody alive uses the segment.
final class ShmSegment: @unchecked Sendable {
    let name: String
    let layout: ShmLayout
    let base: UnsafeMutableRawPointer
    /// Open for the segment's lifetime, holding the shared lock that marks it in use.
    let fd: Int32

    private init(name: String, layout: ShmLayout, base: UnsafeMutableRawPointer, fd: Int32) {
        self.name = name
        self.layout = layout
        self.base = base
        self.fd = fd
    }

    deinit {
        munmap(base, layout.totalSize)
        close(fd)  // releases the shared lock
    }

    // MARK: Addresses

    @inline(__always) func header(_ offset: Int) -> UnsafeMutableRawPointer { base + offset }
    @inline(__always) func readerEntry(_ reader: Int) -> UnsafeMutableRawPointer {
        base + ShmLayout.headerSize + reader * ShmLayout.readerEntrySize
    }
    @inline(__always) func ring(_ ring: Int) -> UnsafeMutableRawPointer {
        base + layout.ringsOffset + ring * layout.ringSize
    }
    @inline(__always) func cursor(ring: UnsafeMutableRawPointer, reader: Int) -> UnsafeMutableRawPointer {
        ring + 64 + reader * ShmLayout.cursorSize
    }
    @inline(__always) func slots(ring: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        ring + layout.ringHeaderAndCursors
    }

    /// Gives back what a dead reader added to `sleepers` (it died while waiting).
    func forgetSleepers(readerEntry entry: UnsafeMutableRawPointer) {
        let asleep = cportcullis_exchange_u32(entry + ShmField.Reader.sleeping, 0)
        if asleep > 0 { _ = cportcullis_fetch_add_seq_cst_u32(header(ShmField.sleepers), -Int32(asleep)) }
    }

    /// Wakes readers sleeping in `wait` (if any) after lines were published.
    @inline(__always)
    func wakeReaders() {
        // The seq_cst fence orders the caller's head publication before the read of `sleepers`;
        // pairs with the seq_cst increment of `sleepers` in ShmReader.wait (no lost wake-up).
        cportcullis_fence_seq_cst()
        if cportcullis_load_seq_cst_u32(header(ShmField.sleepers)) != 0 {
            _ = cportcullis_fetch_add_seq_cst_u32(header(ShmField.wakeSequence), 1)
            _ = cportcullis_futex_wake(header(ShmField.wakeSequence).assumingMemoryBound(to: UInt32.self), Int32.max)
        }
    }

    // MARK: Opening

    /// Opens the segment `options.name`, creating it when absent and recreating it when it is a
    /// leftover nobody alive uses (a crash, or another layout).
    ///
    /// - Parameter adopt: take the layout of an existing segment instead of `options`' (readers).
    static func open(_ options: ShmOptions, adopt: Bool) throws(TransportError) -> ShmSegment {
        try options.validate()
        let wanted = ShmLayout(options)
        for _ in 0..<100 {
            let fd: Int32
            switch systemCallResult({ shm_open(options.name, O_RDWR | O_CLOEXEC, 0) }) {
            case .success(let opened): fd = opened
            case .failure(let error) where error.code == ENOENT:
                if let created = try create(options: options, layout: wanted) { return created }
                continue  // another process linked its segment first: open that one
            case .failure(let error):
                throw .system(operation: "open shared memory \(options.name)", errno: error.code)
            }
            let existing: ShmLayout
            do throws(TransportError) {
                // Whoever made the segment controls its readers: only a trusted user's is used.
                // Checked before locking: an untrusted holder of an exclusive lock must not make
                // us wait.
                var info = stat()
                try transportCall("stat shared memory \(options.name)") { fstat(fd, &info) }
                // An untrusted user's segment under the name (made first, say at boot: a squat)
                // is replaced by ours in one rename where we may (root may: it owns the sticky
                // /dev/shm): it must not keep the daemon from starting. Nobody trusted uses it.
                if !options.owners.trusts(uid: info.st_uid), geteuid() == 0,  // others may not: no segment made
                    let replaced = try create(options: options, layout: wanted, replacing: info)
                {
                    close(fd)
                    sayProblem(
                        "note: shared-memory segment /dev/shm\(options.name) belonged to uid \(info.st_uid), which is "
                            + "not trusted (someone else made it); replaced by a new one")
                    return replaced
                }
                try options.owners.check(info, "shared-memory segment", path: "/dev/shm" + options.name)
                // The shared "in use" lock, without waiting for long: only a recreation holds it
                // exclusively, for an instant.
                try lockShared(fd: fd, name: options.name)
            } catch {
                close(fd)
                throw error
            }
            // Make sure the name still means this segment (a recoverer may have replaced it
            // between our open and our lock).
            guard stillNamed(fd: fd, name: options.name) else {
                close(fd)
                continue
            }
            do throws(TransportError) {
                existing = try readLayout(fd: fd, name: options.name)
            } catch {
                close(fd)
                throw error
            }
            if existing == wanted || (adopt && options.adoptExistingLayout) {
                do throws(TransportError) {
                    return try map(fd: fd, name: options.name, layout: existing, hugePages: options.hugePages)
                } catch {
                    close(fd)
                    throw error
                }
            }
            // Another layout: recreate it, but only if nobody alive holds it (no waiting).
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                close(fd)
                throw .segmentInUse(
                    name: options.name, detail: "it has \(existing.summary), asked for \(wanted.summary)")
            }
            if stillNamed(fd: fd, name: options.name) { shm_unlink(options.name) }
            close(fd)
        }
        throw .segmentInUse(name: options.name, detail: "it kept changing while being opened")
    }

    /// Takes the shared lock, retrying for a second at most while someone holds it exclusively.
    private static func lockShared(fd: Int32, name: String) throws(TransportError) {
        for _ in 0..<100 {
            switch systemCallResult({ flock(fd, LOCK_SH | LOCK_NB) }) {
            case .success: return
            case .failure(let error) where error.code == EWOULDBLOCK: SystemClock.sleep(nanoseconds: 10_000_000)
            case .failure(let error): throw .system(operation: "lock shared memory \(name)", errno: error.code)
            }
        }
        throw .segmentInUse(
            name: name,
            detail: "another process has held it locked exclusively for a second; find it (fuser -v "
                + "/dev/shm\(name)) and stop it")
    }

    /// Whether /dev/shm/NAME is still the file open as `fd`.
    private static func stillNamed(fd: Int32, name: String) -> Bool {
        var opened = stat()
        var named = stat()
        guard fstat(fd, &opened) == 0, stat("/dev/shm" + name, &named) == 0 else { return false }
        return opened.st_ino == named.st_ino && opened.st_dev == named.st_dev
    }

    /// Creates and initialises a segment under a temporary name, then links it into place, so a
    /// segment visible under its name is always complete (no reader can find it half-made and
    /// take it for a crash's leftover). - Returns: nil when another process linked one first.
    /// - Parameter replacing: an untrusted segment at the name (its `stat`), which the new one
    ///   replaces by `rename`; nil is returned when it cannot (not permitted, or it changed).
    private static func create(
        options: ShmOptions, layout: ShmLayout, replacing: stat? = nil
    ) throws(TransportError) -> ShmSegment? {
        let final = "/dev/shm" + options.name
        let temporary = "/dev/shm/.\(options.name.dropFirst()).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).new"
        let fd = try transportCall("create shared memory \(temporary)") {
            Glibc.open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, options.mode)
        }
        defer { unlink(temporary) }
        let segment: ShmSegment
        do throws(TransportError) {
            // open's mode is filtered by the umask; a segment left with a narrower mode would
            // refuse the readers and writers the operator meant to let in.
            try transportCall("set the mode of shared memory \(temporary) to \(String(options.mode, radix: 8))") {
                fchmod(fd, options.mode)
            }
            try transportCall("lock shared memory \(temporary)") { flock(fd, LOCK_SH) }
            try transportCall("size shared memory \(options.name) to \(layout.totalSize) bytes") {
                ftruncate(fd, off_t(layout.totalSize))
            }
            // Reserve the memory now: tmpfs backs pages only when first touched, and a full
            // /dev/shm would then raise SIGBUS in whoever touches one (after the segment is
            // published). posix_fallocate reports ENOSPC instead, before anything is visible.
            let reserved = posix_fallocate(fd, 0, off_t(layout.totalSize))
            if reserved != 0 {
                throw .system(
                    operation: "reserve \(layout.totalSize) bytes of shared memory for \(options.name) (is /dev/shm "
                        + "full? df /dev/shm; or lower --shm-slots/--shm-segments)", errno: reserved)
            }
            segment = try map(fd: fd, name: options.name, layout: layout, hugePages: options.hugePages)
        } catch {
            close(fd)
            throw error
        }
        let base = segment.base
        base.storeBytes(of: UInt32(getpid()), toByteOffset: ShmField.creatorPID, as: UInt32.self)
        base.storeBytes(of: ProcessIdentity.current.startTime, toByteOffset: ShmField.creatorStartTime, as: UInt64.self)
        base.storeBytes(of: ShmLayout.magic, toByteOffset: ShmField.magic, as: UInt64.self)
        base.storeBytes(of: ShmLayout.version, toByteOffset: ShmField.version, as: UInt32.self)
        base.storeBytes(of: UInt32(layout.rings), toByteOffset: ShmField.rings, as: UInt32.self)
        base.storeBytes(of: UInt32(layout.slotsPerRing), toByteOffset: ShmField.slotsPerRing, as: UInt32.self)
        base.storeBytes(of: UInt32(layout.slotSize), toByteOffset: ShmField.slotSize, as: UInt32.self)
        base.storeBytes(of: UInt32(layout.readerSlots), toByteOffset: ShmField.readerSlots, as: UInt32.self)
        base.storeBytes(of: layout.overwrite ? 1 : 0, toByteOffset: ShmField.flags, as: UInt32.self)
        base.storeBytes(of: UInt64(layout.totalSize), toByteOffset: ShmField.totalSize, as: UInt64.self)
        // ftruncate zero-filled the rest: every ring, cursor and slot starts at 0.
        // Pairs with the load-acquire of `ready` in readLayout.
        cportcullis_store_release_u32(base + ShmField.ready, 1)
        if let replacing {
            var named = stat()
            guard lstat(final, &named) == 0, named.st_ino == replacing.st_ino, named.st_dev == replacing.st_dev,
                rename(temporary, final) == 0
            else { return nil }
            return segment
        }
        // link(2) fails if the name exists: exactly one creator wins, and only a complete segment shows.
        switch systemCallResult({ link(temporary, final) }) {
        case .success: return segment
        case .failure(let error) where error.code == EEXIST: return nil  // releasing `segment` closes fd
        case .failure(let error): throw .system(operation: "publish shared memory \(final)", errno: error.code)
        }
    }

    /// The layout recorded in an existing segment.
    private static func readLayout(fd: Int32, name: String) throws(TransportError) -> ShmLayout {
        var info = stat()
        try transportCall("stat shared memory \(name)") { fstat(fd, &info) }
        guard info.st_size >= ShmLayout.headerSize else {
            throw .foreignSegment(name: name, detail: "only \(info.st_size) bytes")
        }
        let header: UnsafeMutableRawPointer
        switch mapMemoryResult({ mmap(nil, ShmLayout.headerSize, PROT_READ, MAP_SHARED, fd, 0) }) {
        case .success(let mapped): header = mapped
        case .failure(let error): throw .system(operation: "map shared memory \(name)", errno: error.code)
        }
        defer { munmap(header, ShmLayout.headerSize) }
        guard cportcullis_load_acquire_u32(header + ShmField.ready) == 1 else {
            throw .foreignSegment(name: name, detail: "not marked ready")
        }
        let magic = header.load(fromByteOffset: ShmField.magic, as: UInt64.self)
        let version = header.load(fromByteOffset: ShmField.version, as: UInt32.self)
        guard magic == ShmLayout.magic, version == ShmLayout.version else {
            throw .foreignSegment(name: name, detail: "magic 0x\(String(magic, radix: 16)), version \(version)")
        }
        // The header is another process's word: its sizes are checked with the ranges of our own
        // options before anything is computed from them (a crafted header must not trap us).
        var recorded = ShmOptions()
        recorded.name = name
        recorded.rings = Int(header.load(fromByteOffset: ShmField.rings, as: UInt32.self))
        recorded.slotsPerRing = Int(header.load(fromByteOffset: ShmField.slotsPerRing, as: UInt32.self))
        recorded.slotSize = Int(header.load(fromByteOffset: ShmField.slotSize, as: UInt32.self))
        recorded.readerSlots = Int(header.load(fromByteOffset: ShmField.readerSlots, as: UInt32.self))
        do throws(TransportError) {
            try recorded.validate()
        } catch {
            throw .foreignSegment(name: name, detail: "its header has impossible sizes (\(error))")
        }
        let layout = ShmLayout(
            rings: recorded.rings, slotsPerRing: recorded.slotsPerRing, slotSize: recorded.slotSize,
            readerSlots: recorded.readerSlots,
            overwrite: header.load(fromByteOffset: ShmField.flags, as: UInt32.self) & 1 != 0)
        guard Int(info.st_size) >= layout.totalSize,
            header.load(fromByteOffset: ShmField.totalSize, as: UInt64.self) == UInt64(layout.totalSize)
        else {
            throw .foreignSegment(name: name, detail: "size \(info.st_size) does not match its header")
        }
        return layout
    }

    private static func map(
        fd: Int32, name: String, layout: ShmLayout, hugePages: Bool
    ) throws(TransportError) -> ShmSegment {
        let mapped = mapMemoryResult {
            mmap(nil, layout.totalSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0)
        }
        let address: UnsafeMutableRawPointer
        switch mapped {
        case .success(let mapping): address = mapping
        case .failure(let error):
            throw .system(operation: "map shared memory \(name) (\(layout.totalSize) bytes)", errno: error.code)
        }
        if hugePages { madvise(address, layout.totalSize, MADV_HUGEPAGE) }
        return ShmSegment(name: name, layout: layout, base: address, fd: fd)
    }
}

/// The 64-bit owner word of a reader slot or a ring: state, generation and pid, changed together.
struct OwnerWord: Equatable {
    static let free: UInt32 = 0, claiming: UInt32 = 1, taken: UInt32 = 2

    let raw: UInt64

    init(_ raw: UInt64) { self.raw = raw }

    var state: UInt32 { UInt32(truncatingIfNeeded: raw) & 3 }
    var generation: UInt32 { UInt32(truncatingIfNeeded: raw) >> 2 }
    var pid: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) }

    /// The word after a change to `state` by `pid` (0 when freeing): the generation moves on.
    func next(state: UInt32, pid: UInt32) -> OwnerWord {
        let generation = (self.generation &+ 1) & 0x3FFF_FFFF
        return OwnerWord(UInt64(pid) << 32 | UInt64(generation << 2 | state))
    }
}
