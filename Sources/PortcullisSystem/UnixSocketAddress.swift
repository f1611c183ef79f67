// SPDX-License-Identifier: Apache-2.0
import Glibc

/// `struct sockaddr_un` of a path, for the UNIX sockets of the transports and the control socket.
public enum UnixSocketAddress {
    /// The address of `path`, or nil when the path does not fit in `sun_path` (107 bytes).
    public static func of(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    /// Longest path an address holds.
    public static var longestPath: Int { MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1 }
}
