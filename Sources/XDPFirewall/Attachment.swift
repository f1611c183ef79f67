// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Attaching the filter to network interfaces through libxdp, so it can share an interface with
/// other XDP programs (libxdp's dispatcher runs them in priority order).
public enum Attachment {
    /// What `attach` did.
    public struct Outcome: Sendable, Equatable {
        /// The mode the program runs in.
        public let mode: AttachMode
        /// False when the filter was attached already and nothing was changed.
        public let newlyAttached: Bool
        /// Entries per ban map.
        public let mapEntries: UInt32
        /// Whether existing pinned maps (and the bans in them) were reused.
        public let reusedPinnedMaps: Bool
        /// Set when the filter found attached was another program than the object's.
        public internal(set) var upgrade: Upgrade? = nil
    }

    /// Attaches the filter to `interface`, pinning its maps in `pinDirectory` or reusing the maps
    /// already pinned there (bans survive). Attaching an interface that has the filter already is
    /// not an error: nothing changes, unless that filter reads these maps but is another program
    /// than the object's (an upgrade shipped a new one): it is then replaced (`Outcome.upgrade`).
    ///
    /// - Parameter mode: `.auto` tries native and falls back to generic when the driver lacks XDP.
    /// - Throws: `unknownInterface`, `bpfObjectMissing`/`bpfObjectInvalid`, `incompatiblePins`,
    ///   `permissionDenied`; nothing stays attached after a throw, or the filter found there stays.
    public static func attach(
        interface: String, objectPath: String, pinDirectory: PinDirectory,
        mode: AttachMode = .auto, mapEntries: UInt32? = nil
    ) throws(FirewallError) -> Outcome {
        let ifindex = try index(of: interface)
        if let attached = try AttachedFilter.find(ifindex: ifindex) {
            let current = attached.mode
            if mode != .auto && mode != current {
                throw .alreadyAttached(
                    interface: interface,
                    detail: "in \(current.rawValue) mode; "
                        + "detach it first (portcullis detach \(interface)) to attach in \(mode.rawValue) mode")
            }
            guard pinDirectory.holdsMaps else {
                throw .alreadyAttached(
                    interface: interface,
                    detail: "with maps pinned elsewhere than \(pinDirectory); "
                        + "pass the --pin-dir it was attached with, or detach it first")
            }
            let maps = try BanMaps.open(pinnedIn: pinDirectory)
            if let mapEntries, mapEntries != maps.capacity {
                throw .mapSizeMismatch(path: pinDirectory.path, pinned: maps.capacity, requested: mapEntries)
            }
            // Only a filter reading these maps is ours to upgrade; one reading others is reported by
            // the callers' enforcement check, as before.
            let upgrade =
                try program(attached.program.fd, reads: maps)
                ? try self.upgrade(
                    attached, ifindex: ifindex, interface: interface, objectPath: objectPath,
                    pinDirectory: pinDirectory) : nil
            return Outcome(
                mode: current, newlyAttached: false, mapEntries: maps.capacity, reusedPinnedMaps: true,
                upgrade: upgrade)
        }
        let reusing = pinDirectory.holdsMaps  // decided once: a failed native try must not change it
        do throws(FirewallError) {
            return try attachNew(
                ifindex: ifindex, interface: interface, objectPath: objectPath, pinDirectory: pinDirectory,
                mode: mode, mapEntries: mapEntries, reusing: reusing)
        } catch {
            // libbpf pinned the maps while loading, and the directory may be new: whatever failed
            // (the object, the attach, descriptors running out), no new pins nor an empty directory stay.
            if !reusing { try? pinDirectory.removeMaps() }
            throw error
        }
    }

    /// Loads and attaches the filter where it is not attached yet (each mode in turn for `.auto`).
    private static func attachNew(
        ifindex: Int32, interface: String, objectPath: String, pinDirectory: PinDirectory, mode: AttachMode,
        mapEntries: UInt32?, reusing: Bool
    ) throws(FirewallError) -> Outcome {
        let modes: [AttachMode] = mode == .auto ? [.native, .generic] : [mode]
        var lastError: FirewallError?
        for candidate in modes {
            // A fresh object per try: a failed attach may leave the previous one half-loaded.
            let filter = try FilterObject(objectPath: objectPath, pinDirectory: pinDirectory, mapEntries: mapEntries)
            let outcome: Outcome? = try withExtendedLifetime(filter) { () throws(FirewallError) -> Outcome? in
                let opened = decodeErrorPointer(xdp_program__from_bpf_obj(filter.object.handle, PC_PROG_SECTION))
                guard case .success(let program) = opened else {
                    throw .bpfObjectInvalid(path: objectPath, detail: libxdpMessage(opened))
                }
                defer { xdp_program__close(program) }
                let result = xdp_program__attach(program, ifindex, candidate.libxdpMode, 0)
                guard result == 0 else {
                    lastError = attachError(-result, interface: interface, mode: candidate)
                    return nil
                }
                do throws(FirewallError) {
                    let maps = try filter.maps()
                    return Outcome(
                        mode: candidate, newlyAttached: true, mapEntries: maps.capacity,
                        reusedPinnedMaps: reusing)
                } catch {
                    // Unstamped maps must not stay in use: undo the attach before reporting.
                    xdp_program__detach(program, ifindex, candidate.libxdpMode, 0)
                    throw error
                }
            }
            if let outcome { return outcome }
            // Only a driver without native XDP is worth a generic try; other errors repeat there.
            guard case .system(_, let code, _) = lastError!, code == EOPNOTSUPP || code == EINVAL else { break }
        }
        throw lastError!
    }

    /// The error for a failed `xdp_program__attach`, with what to do about each likely cause.
    private static func attachError(_ code: Int32, interface: String, mode: AttachMode) -> FirewallError {
        let operation = "attach XDP to \(interface) in \(mode.rawValue) mode"
        let hint: String
        switch code {
        case EOPNOTSUPP, EINVAL:
            hint = mode == .native ? "the driver may lack native XDP: use --mode generic or auto" : ""
        case E2BIG, ENOMEM:
            hint = "the kernel could not allocate the ban maps: lower --map-entries"
        case EBUSY, EEXIST:
            hint = "another XDP program holds the interface and cannot share it: detach it first"
        default:
            hint = ""
        }
        let error = systemError(operation, code)
        guard case .system(let operation, let errno, let detail) = error, !hint.isEmpty else { return error }
        return .system(operation: operation, errno: errno, detail: detail.isEmpty ? hint : "\(hint); \(detail)")
    }

    /// Detaches the filter from `interface`, leaving other XDP programs and the pinned maps alone.
    /// - Throws: `notAttached` when the filter is not on the interface.
    public static func detach(interface: String) throws(FirewallError) {
        let ifindex = try index(of: interface)
        try withFilterProgram(ifindex: ifindex) { (program, mode) throws(FirewallError) in
            guard let program else { throw .notAttached(interface: interface) }
            let result = xdp_program__detach(program, ifindex, mode, 0)
            if result < 0 { throw systemError("detach XDP from \(interface)", -result) }
        }
    }

    /// The interfaces of this network namespace the filter is attached to, asked of the kernel
    /// (`bpf_xdp_query` on each), whatever pin directory their maps are pinned in.
    public static func attachedInterfaces() throws(FirewallError) -> [String] {
        guard let list = if_nameindex() else { throw systemError("list the network interfaces", errno) }
        defer { if_freenameindex(list) }
        var found: [String] = []
        var entry = list
        while entry.pointee.if_index != 0, let name = entry.pointee.if_name {
            if try AttachedFilter.find(ifindex: Int32(entry.pointee.if_index)) != nil {
                found.append(String(cString: name))
            }
            entry += 1
        }
        return found
    }

    /// The mode the filter runs in on `interface`, or `nil` when it is not attached there.
    public static func attachedMode(interface: String) throws(FirewallError) -> AttachMode? {
        try attachedMode(ifindex: try index(of: interface))
    }

    static func attachedMode(ifindex: Int32) throws(FirewallError) -> AttachMode? {
        try AttachedFilter.find(ifindex: ifindex)?.mode
    }

    /// Calls `body` with the filter's program among those libxdp finds on the interface (or nil).
    /// Only `detach` needs libxdp's view (to detach through it); Debian 12's libxdp 1.3.1 leaks a
    /// program descriptor per call, so anything that runs repeatedly asks `AttachedFilter` instead.
    static func withFilterProgram<R>(
        ifindex: Int32, _ body: (OpaquePointer?, xdp_attach_mode) throws(FirewallError) -> R
    ) throws(FirewallError) -> R {
        captureLibraryLogs()
        let multiprog: OpaquePointer
        switch decodeErrorPointer(xdp_multiprog__get_from_ifindex(ifindex)) {
        case .success(let found): multiprog = found
        case .failure(let error) where error.code == ENOENT: return try body(nil, XDP_MODE_UNSPEC)  // no XDP program
        case .failure(let error): throw systemError("read the XDP programs of interface \(ifindex)", error.code)
        }
        defer { xdp_multiprog__close(multiprog) }
        let mode = xdp_multiprog__attach_mode(multiprog)
        if xdp_multiprog__is_legacy(multiprog) {
            let main = xdp_multiprog__main_prog(multiprog)
            return try body(isFilter(main) ? main : nil, mode)
        }
        var program = xdp_multiprog__next_prog(nil, multiprog)
        while let current = program {
            if isFilter(current) { return try body(current, mode) }
            program = xdp_multiprog__next_prog(current, multiprog)
        }
        return try body(nil, mode)
    }

    private static func isFilter(_ program: OpaquePointer?) -> Bool {
        guard let program, let name = xdp_program__name(program) else { return false }
        return String(cString: name) == PC_PROG_NAME
    }

    /// The interface index of `name`.
    public static func index(of name: String) throws(FirewallError) -> Int32 {
        // 0 with the error in errno, as -1 for the funnel.
        let found = systemCallResult { () -> Int64 in
            let index = if_nametoindex(name)
            return index == 0 ? -1 : Int64(index)
        }
        switch found {
        case .success(let index): return Int32(index)
        // glibc asks through a socket: out of descriptors is not "no such interface".
        case .failure(let error) where error.code == ENODEV: throw .unknownInterface(name)
        case .failure(let error): throw systemError("look up \(name)", error.code)
        }
    }

    private static func libxdpMessage(_ result: Result<OpaquePointer, Errno>) -> String {
        guard case .failure(let error) = result else { return "" }
        var buffer = [CChar](repeating: 0, count: 256)
        libxdp_strerror(-error.code, &buffer, buffer.count)
        let log = takeLibraryLog()
        let message = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return log.isEmpty ? message : "\(message); \(log)"
    }
}
