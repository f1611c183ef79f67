// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// How an XDP program is attached to an interface.
public enum AttachMode: String, Sendable, CaseIterable {
    /// In the driver (`XDP_MODE_NATIVE`): the fast path, before any socket buffer exists.
    case native
    /// In the generic network stack (`XDP_MODE_SKB`): works on any interface, much slower.
    case generic
    /// Native, falling back to generic when the driver has no XDP support.
    case auto

    init?(_ mode: xdp_attach_mode) {
        switch mode {
        case XDP_MODE_NATIVE: self = .native
        case XDP_MODE_SKB: self = .generic
        default: return nil
        }
    }

    var libxdpMode: xdp_attach_mode { self == .generic ? XDP_MODE_SKB : XDP_MODE_NATIVE }
}

/// The verdict an XDP program returned.
public enum XDPVerdict: UInt32, Sendable, CustomStringConvertible {
    case aborted = 0, drop, pass, transmit, redirect
    public var description: String {
        switch self {
        case .aborted: "XDP_ABORTED"
        case .drop: "XDP_DROP"
        case .pass: "XDP_PASS"
        case .transmit: "XDP_TX"
        case .redirect: "XDP_REDIRECT"
        }
    }
}

/// An opened (not yet loaded) BPF object file, closed when released.
@_spi(Testing) public final class BPFObject {
    let handle: OpaquePointer
    @_spi(Testing) public let path: String

    init(path: String, pinDirectory: PinDirectory?) throws(FirewallError) {
        captureLibraryLogs()
        var options = bpf_object_open_opts()
        options.sz = MemoryLayout<bpf_object_open_opts>.size
        let opened: OpaquePointer? = (pinDirectory?.path ?? "").withCString { root in
            if pinDirectory != nil { options.pin_root_path = root }
            return bpf_object__open_file(path, &options)
        }
        guard let opened else {
            let code = errno
            if code == ENOENT { throw .bpfObjectMissing(file: path, searched: [path]) }
            throw .bpfObjectInvalid(path: path, detail: "\(String(cString: strerror(code))); \(takeLibraryLog())")
        }
        handle = opened
        self.path = path
        // Without a pin directory, maps declared LIBBPF_PIN_BY_NAME would be pinned in the bpffs root.
        if pinDirectory == nil {
            var map = bpf_object__next_map(handle, nil)
            while let current = map {
                bpf_map__set_pin_path(current, nil)
                map = bpf_object__next_map(handle, current)
            }
        }
    }

    deinit { bpf_object__close(handle) }

    @_spi(Testing) public func map(_ name: String) throws(FirewallError) -> OpaquePointer {
        guard let map = bpf_object__find_map_by_name(handle, name) else {
            throw .bpfObjectInvalid(path: path, detail: "it has no map named \(name)")
        }
        return map
    }

    func load() throws(FirewallError) {
        if case .failure(let error) = systemCallResult(convention: .negativeErrno, { bpf_object__load(handle) }) {
            let code = error.code
            if (code == EPERM || code == EACCES) && geteuid() != 0 {
                throw .permissionDenied(operation: "load \(path)")
            }
            throw .bpfObjectInvalid(path: path, detail: "\(String(cString: strerror(code))); \(takeLibraryLog())")
        }
    }

    @_spi(Testing) public func programFD(named name: String) throws(FirewallError) -> Int32 {
        guard let program = bpf_object__find_program_by_name(handle, name) else {
            throw .bpfObjectInvalid(path: path, detail: "it has no program named \(name)")
        }
        return bpf_program__fd(program)
    }
}

/// The filter's BPF object, configured for loading: map sizes set, pinned maps checked and reused.
struct FilterObject {
    let object: BPFObject
    let pinDirectory: PinDirectory?
    /// Whether the ban maps already existed (reused from pins) rather than being created by this load.
    let reusesPinnedMaps: Bool

    /// - Parameters:
    ///   - mapEntries: entries per ban map when the maps are created. When pinned maps exist their
    ///     size stands; asking for another size then is an error rather than a silent surprise.
    init(objectPath: String, pinDirectory: PinDirectory?, mapEntries: UInt32?) throws(FirewallError) {
        var pinnedCapacity: UInt32?
        if let pinDirectory {
            try pinDirectory.prepare()
            if pinDirectory.holdsMaps {
                pinnedCapacity = try Self.checkPinnedMaps(in: pinDirectory)
            }
        }
        if let mapEntries, mapEntries == 0 {
            throw .system(operation: "size the ban maps", errno: EINVAL, detail: "--map-entries must be at least 1")
        }
        if let pinnedCapacity, let mapEntries, pinnedCapacity != mapEntries {
            throw .mapSizeMismatch(path: pinDirectory!.path, pinned: pinnedCapacity, requested: mapEntries)
        }
        object = try BPFObject(path: objectPath, pinDirectory: pinDirectory)
        // The ban installers are loaded by whoever installs bans (`BanInstaller`), with their own slots.
        for name in [PC_INSTALL_PROG_NAME, PC_INSTALL_LIST_PROG_NAME] {
            if let installer = bpf_object__find_program_by_name(object.handle, name) {
                bpf_program__set_autoload(installer, false)
            }
        }
        if let slots = bpf_object__find_map_by_name(object.handle, PC_MAP_INSTALL) {
            bpf_map__set_autocreate(slots, false)
        }
        self.pinDirectory = pinDirectory
        reusesPinnedMaps = pinnedCapacity != nil
        let entries = pinnedCapacity ?? mapEntries ?? UInt32(PC_DEFAULT_BAN_ENTRIES)
        for name in [PC_MAP_BANS_V4, PC_MAP_BANS_V6] {
            let map = try object.map(name)
            try bpfCall("set size of \(name)") { bpf_map__set_max_entries(map, entries) }
        }
    }

    /// Checks every pinned map (and the layout marker) before libbpf tries to reuse them, so the
    /// operator gets a precise error instead of a failed load. - Returns: the ban maps' capacity.
    private static func checkPinnedMaps(in directory: PinDirectory) throws(FirewallError) -> UInt32 {
        var capacity: UInt32?
        for spec in MapSpec.all {
            let path = directory.mapPath(spec.name)
            guard let descriptor = try BPFDescriptor.openPinned(path) else { continue }
            let info = try spec.check(fd: descriptor.fd, at: path)
            if spec.name == PC_MAP_BANS_V4 || spec.name == PC_MAP_BANS_V6 {
                if let capacity, capacity != info.max_entries {
                    throw .incompatiblePins(path: directory.path, detail: "IPv4 and IPv6 ban maps differ in size")
                }
                capacity = info.max_entries
            }
            if spec.name == PC_MAP_META {
                var key: UInt32 = 0
                var marker = pc_meta()
                try bpfCall("read \(path)") { bpf_map_lookup_elem(descriptor.fd, &key, &marker) }
                if !BanMaps.usesLayout(marker) {
                    throw .incompatiblePins(
                        path: directory.path,
                        detail: "layout version \(marker.abi_version), this build uses \(PC_ABI_VERSION)")
                }
            }
        }
        return capacity ?? UInt32(PC_DEFAULT_BAN_ENTRIES)
    }

    /// The loaded object's maps, with descriptors of their own, stamped with the layout marker.
    func maps() throws(FirewallError) -> BanMaps {
        func descriptor(_ name: String) throws(FirewallError) -> BPFDescriptor {
            try BPFDescriptor.duplicate(bpf_map__fd(try object.map(name)), what: name)
        }
        let capacity = bpf_map__max_entries(try object.map(PC_MAP_BANS_V4))
        var descriptors: [String: BPFDescriptor] = [:]
        for spec in MapSpec.all { descriptors[spec.name] = try descriptor(spec.name) }
        let maps = try BanMaps(descriptors, capacity: capacity)
        maps.pinDirectoryPath = pinDirectory?.path
        // Made by this load (not reused): the default prefix lengths go in with the layout marker.
        if !reusesPinnedMaps { try maps.writeDefaultConfiguration() }
        try maps.writeLayoutMarker()
        try startClock()
        return maps
    }

    /// Starts the clock's timer (`PC_CLOCK_PROG_NAME`, run once), or points one already running
    /// in reused pins at this load: the program reads the time from `pc_clock` from then on.
    private func startClock() throws(FirewallError) {
        let program = try object.programFD(named: PC_CLOCK_PROG_NAME)
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        try bpfCall("start the filter's clock (\(PC_CLOCK_PROG_NAME))") { bpf_prog_test_run_opts(program, &options) }
        let result = Int32(bitPattern: options.retval)
        guard result == 0 else {
            throw .system(operation: "start the filter's clock (\(PC_CLOCK_PROG_NAME))", errno: -result, detail: "")
        }
    }
}

/// An XDP program loaded into the kernel but not attached to any interface: what tests and
/// benchmarks drive with `BPF_PROG_TEST_RUN`.
public final class LoadedProgram: @unchecked Sendable {
    @_spi(Testing) public let object: BPFObject
    @_spi(Testing) public let programFD: Int32
    /// The filter's maps, or `nil` for a program without them (the perf reference).
    public let maps: BanMaps?

    /// Loads the Portcullis filter.
    /// - Parameters:
    ///   - pinDirectory: where to pin (or reuse) the maps; `nil` keeps them private to this instance.
    ///   - mapEntries: entries per ban map when they are created.
    public init(
        filterAt objectPath: String, pinDirectory: PinDirectory?, mapEntries: UInt32? = nil
    )
        throws(FirewallError)
    {
        let filter = try FilterObject(objectPath: objectPath, pinDirectory: pinDirectory, mapEntries: mapEntries)
        try filter.object.load()
        object = filter.object
        programFD = try object.programFD(named: PC_PROG_NAME)
        maps = try filter.maps()
    }

    /// Loads any XDP object without the filter's maps, such as perf's reference program or a peer
    /// filter, its maps private to this instance.
    /// - Parameter sizes: entries of those of its maps to size otherwise than the object says.
    public init(objectAt objectPath: String, programName: String, sizes: [String: UInt32] = [:]) throws(FirewallError) {
        object = try BPFObject(path: objectPath, pinDirectory: nil)
        for (name, entries) in sizes {
            let map = try object.map(name)
            try bpfCall("set size of \(name)") { bpf_map__set_max_entries(map, entries) }
        }
        try object.load()
        programFD = try object.programFD(named: programName)
        maps = nil
    }

    /// Result of a test run.
    public struct TestRun: Sendable {
        public let verdict: XDPVerdict
        /// Kernel-measured average time per repetition, in nanoseconds.
        public let averageNanoseconds: UInt32
    }

    /// Runs the program on `frame` `repetitions` times in the kernel (`BPF_PROG_TEST_RUN`).
    /// Counters and per-address drops change as if the frame had arrived `repetitions` times.
    public func testRun(frame: [UInt8], repetitions: Int32 = 1) throws(FirewallError) -> TestRun {
        var options = bpf_test_run_opts()
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        options.repeat = repetitions
        options.data_size_in = UInt32(frame.count)
        // A large repeat count can be interrupted (EINTR); bpfCall retries.
        try frame.withUnsafeBufferPointer { (bytes) throws(FirewallError) in
            options.data_in = UnsafeRawPointer(bytes.baseAddress)
            try bpfCall("test-run the XDP program") { bpf_prog_test_run_opts(programFD, &options) }
        }
        guard let verdict = XDPVerdict(rawValue: options.retval) else {
            throw .system(
                operation: "test-run the XDP program", errno: EINVAL,
                detail: "unknown verdict \(options.retval)")
        }
        return TestRun(verdict: verdict, averageNanoseconds: options.duration)
    }
}
