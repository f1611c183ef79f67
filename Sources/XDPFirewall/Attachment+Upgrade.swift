// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

extension Attachment {
    /// What `attach` found when the filter on the interface was not the program in the object it
    /// was given (a package upgrade shipped a new `portcullis.bpf.o`, the daemon restarted).
    public enum Upgrade: Sendable, Equatable {
        /// The new program took the old one's place in one step (`XDP_FLAGS_REPLACE`): no frame
        /// went unfiltered, and it reads the same pinned maps, bans included.
        case replaced(oldTag: String, newTag: String, object: String)
        /// The old program stays: it runs under libxdp's dispatcher, where swapping it means
        /// detaching it first, and that is left to the operator.
        case keptUnderDispatcher(oldTag: String, newTag: String, object: String)

        /// The one line to tell the operator.
        public func line(interface: String) -> String {
            switch self {
            case .replaced(let old, let new, let object):
                "replaced the filter on \(interface) with the one in \(object) (program tag \(old) → \(new)): bans kept"
            case .keptUnderDispatcher(let old, let new, let object):
                "the filter on \(interface) (program tag \(old)) is not the one in \(object) (\(new)) and runs "
                    + "under libxdp's dispatcher, where it cannot be swapped in one step; it keeps running: to "
                    + "run the new one, portcullis detach \(interface), then attach it again (bans kept)"
            }
        }
    }

    /// Replaces `filter`, attached to `ifindex` and reading the maps pinned in `pinDirectory`, with the program in `objectPath`
    /// when the two differ (their kernel tags): loaded reusing the pinned maps, swapped in atomically
    /// in the mode the old one had. - Returns: nil when they are the same program.
    /// - Throws: when the object cannot be loaded beside the pinned maps (another layout): the old
    ///   filter then stays attached, as it does when the swap itself fails.
    static func upgrade(
        _ filter: AttachedFilter, ifindex: Int32, interface: String, objectPath: String, pinDirectory: PinDirectory
    ) throws(FirewallError) -> Upgrade? {
        let loaded = try FilterObject(objectPath: objectPath, pinDirectory: pinDirectory, mapEntries: nil)
        try loaded.object.load()
        let newProgram = try loaded.object.programFD(named: PC_PROG_NAME)
        let oldTag = try AttachedFilter.tag(of: filter.program.fd)
        let newTag = try AttachedFilter.tag(of: newProgram)
        if oldTag == newTag { return nil }
        if filter.underDispatcher { return .keptUnderDispatcher(oldTag: oldTag, newTag: newTag, object: objectPath) }
        _ = try loaded.maps()  // the layout marker, stamped as a first attach does, before the swap
        var options = bpf_xdp_attach_opts()
        // Up to its last field: libbpf refuses non-zero padding after it (as for `bpf_xdp_query_opts`).
        options.sz = MemoryLayout<bpf_xdp_attach_opts>.offset(of: \.old_prog_fd)! + MemoryLayout<Int32>.size
        options.old_prog_fd = filter.program.fd
        // The kernel swaps only if `old_prog_fd` is still the one attached in this mode (else EEXIST):
        // a program changed meanwhile is not overwritten, and the old one stays on any failure.
        let flags =
            UInt32(XDP_FLAGS_REPLACE) | UInt32(filter.mode == .generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE)
        // The object owns `newProgram` (and `filter` the old one's descriptor): both stay open
        // until the kernel has swapped them; the attachment then holds the new program.
        try withExtendedLifetime((loaded, filter)) { () throws(FirewallError) in
            try bpfCall("replace the filter on \(interface) with the one in \(objectPath)") {
                bpf_xdp_attach(ifindex, newProgram, flags, &options)
            }
        }
        return .replaced(oldTag: oldTag, newTag: newTag, object: objectPath)
    }
}

extension LoadedProgram {
    /// The kernel's tag of the program: what `attach` compares to tell an upgraded filter.
    @_spi(Testing) public func tag() throws(FirewallError) -> String { try AttachedFilter.tag(of: programFD) }
}
