// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// The driver's allowlist: what the XDP program passes whatever bans cover it.
extension BanMaps {
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
}
