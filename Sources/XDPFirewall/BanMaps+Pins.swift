// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

extension BanMaps {
    /// Each map with its spec, in `MapSpec.all`'s order.
    private var described: [(MapSpec, BPFDescriptor)] {
        [
            (.bansV4, bansV4), (.bansV6, bansV6), (.stats, stats), (.meta, meta), (.origins, origins),
            (.prefixV4, prefixV4), (.prefixV6, prefixV6), (.cidrV4, cidrV4), (.cidrV6, cidrV6),
            (.allowV4, allowV4), (.allowV6, allowV6), (.listsV4, listsV4), (.listsV6, listsV6),
            (.listHostsV4, listHostsV4), (.listHostsV6, listHostsV6), (.config, config), (.cover, cover),
        ] + (drops.map { [(.drops, $0)] } ?? []) + (pending.map { [(.pending, $0)] } ?? [])
            + (clock.map { [(.clock, $0)] } ?? [])
    }

    /// Puts back the pins of the maps held here that have vanished from their pin directory (an
    /// `rm -r` of it, the BPF filesystem unmounted): without them every other Portcullis command,
    /// and the daemon's next start, would find no maps, or new empty ones, while the filter still
    /// reads these. A pin that names another map is left alone and reported.
    /// - Returns: the names pinned again (empty: all were there, or the maps are private).
    /// - Throws: when a pin could not be checked or put back, or names another map.
    public func restorePins() throws(FirewallError) -> [String] {
        guard let path = pinDirectoryPath else { return [] }
        let directory = PinDirectory(path)
        var missing: [(MapSpec, BPFDescriptor)] = []
        for (spec, descriptor) in described {
            let pinPath = directory.mapPath(spec.name)
            guard let pinned = try BPFDescriptor.openPinned(pinPath) else {
                missing.append((spec, descriptor))
                continue
            }
            if try Self.id(of: pinned.fd) != Self.id(of: descriptor.fd) {
                throw .incompatiblePins(path: pinPath, detail: "another map is pinned there than the one in use")
            }
        }
        guard !missing.isEmpty else { return [] }
        try directory.prepare()
        for (spec, descriptor) in missing {
            try bpfCall("pin \(spec.name) again at \(directory.mapPath(spec.name))") {
                bpf_obj_pin(descriptor.fd, directory.mapPath(spec.name))
            }
        }
        return missing.map(\.0.name)
    }

    private static func id(of fd: Int32) throws(FirewallError) -> UInt32 {
        var info = bpf_map_info()
        var length = UInt32(MemoryLayout<bpf_map_info>.size)
        try bpfCall("read a map's id") { bpf_obj_get_info_by_fd(fd, &info, &length) }
        return info.id
    }
}
