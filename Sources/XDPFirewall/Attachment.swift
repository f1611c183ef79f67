import CPortcullis
import Glibc

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
    }

    /// Attaches the filter to `interface`, pinning its maps in `pinDirectory` or reusing the maps
    /// already pinned there (bans survive). Attaching an interface that has the filter already is
    /// not an error: nothing changes.
    ///
    /// - Parameter mode: `.auto` tries native and falls back to generic when the driver lacks XDP.
    /// - Throws: `unknownInterface`, `bpfObjectMissing`/`bpfObjectInvalid`, `incompatiblePins`,
    ///   `permissionDenied`; nothing stays attached after a throw.
    public static func attach(interface: String, objectPath: String, pinDirectory: PinDirectory,
                              mode: AttachMode = .auto, mapEntries: UInt32? = nil) throws(FirewallError) -> Outcome {
        let ifindex = try index(of: interface)
        if let current = try attachedMode(ifindex: ifindex) {
            let maps = try BanMaps.open(pinnedIn: pinDirectory)
            return Outcome(mode: current, newlyAttached: false, mapEntries: maps.capacity, reusedPinnedMaps: true)
        }
        let modes: [AttachMode] = mode == .auto ? [.native, .generic] : [mode]
        var lastError: FirewallError?
        for candidate in modes {
            // A fresh object per try: a failed attach may leave the previous one half-loaded.
            let filter = try FilterObject(objectPath: objectPath, pinDirectory: pinDirectory, mapEntries: mapEntries)
            let program = xdp_program__from_bpf_obj(filter.object.handle, PC_PROG_SECTION)
            let openError = libxdp_get_error(UnsafeRawPointer(program))
            guard openError == 0, let program else {
                throw .bpfObjectInvalid(path: objectPath, detail: libxdpMessage(openError))
            }
            defer { xdp_program__close(program) }
            let result = xdp_program__attach(program, ifindex, candidate.libxdpMode, 0)
            if result == 0 {
                do {
                    let maps = try filter.maps()
                    return Outcome(mode: candidate, newlyAttached: true, mapEntries: maps.capacity,
                                   reusedPinnedMaps: filter.reusesPinnedMaps)
                } catch {
                    // Unstamped maps must not stay in use: undo the attach before reporting.
                    xdp_program__detach(program, ifindex, candidate.libxdpMode, 0)
                    throw error
                }
            }
            let code = -result
            if code == EPERM || code == EACCES { throw .permissionDenied(operation: "attach XDP to \(interface)") }
            lastError = .system(operation: "attach XDP to \(interface) in \(candidate.rawValue) mode", errno: code,
                                detail: takeLibraryLog())
            // Only a driver without native XDP is worth a generic try; other errors repeat there.
            guard code == EOPNOTSUPP || code == ENOTSUP || code == EINVAL else { break }
        }
        throw lastError!
    }

    /// Detaches the filter from `interface`, leaving other XDP programs and the pinned maps alone.
    /// - Throws: `notAttached` when the filter is not on the interface.
    public static func detach(interface: String) throws(FirewallError) {
        let ifindex = try index(of: interface)
        try withFilterProgram(ifindex: ifindex) { (program, mode) throws(FirewallError) in
            guard let program else { throw .notAttached(interface: interface) }
            let result = xdp_program__detach(program, ifindex, mode, 0)
            if result < 0 {
                if -result == EPERM || -result == EACCES {
                    throw .permissionDenied(operation: "detach XDP from \(interface)")
                }
                throw .system(operation: "detach XDP from \(interface)", errno: -result, detail: takeLibraryLog())
            }
        }
    }

    /// The mode the filter runs in on `interface`, or `nil` when it is not attached there.
    public static func attachedMode(interface: String) throws(FirewallError) -> AttachMode? {
        try attachedMode(ifindex: try index(of: interface))
    }

    static func attachedMode(ifindex: Int32) throws(FirewallError) -> AttachMode? {
        try withFilterProgram(ifindex: ifindex) { (program, mode) in program == nil ? nil : AttachMode(mode) }
    }

    /// Calls `body` with the filter's program among those libxdp finds on the interface (or nil).
    private static func withFilterProgram<R>(
        ifindex: Int32, _ body: (OpaquePointer?, xdp_attach_mode) throws(FirewallError) -> R
    ) throws(FirewallError) -> R {
        captureLibraryLogs()
        let multiprog = xdp_multiprog__get_from_ifindex(ifindex)
        let error = libxdp_get_error(UnsafeRawPointer(multiprog))
        if error == -Int(ENOENT) { return try body(nil, XDP_MODE_UNSPEC) }  // no XDP program at all
        guard error == 0, let multiprog else {
            if -error == Int(EPERM) || -error == Int(EACCES) {
                throw .permissionDenied(operation: "read the XDP programs of interface \(ifindex)")
            }
            throw .system(operation: "read the XDP programs of interface \(ifindex)", errno: Int32(-error),
                          detail: libxdpMessage(error))
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
        let index = if_nametoindex(name)
        guard index != 0 else { throw .unknownInterface(name) }
        return Int32(index)
    }

    private static func libxdpMessage(_ error: Int) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        libxdp_strerror(Int32(error), &buffer, buffer.count)
        let log = takeLibraryLog()
        let message = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return log.isEmpty ? message : "\(message); \(log)"
    }
}
