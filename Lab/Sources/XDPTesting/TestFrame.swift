// SPDX-License-Identifier: Apache-2.0
import PortcullisCore

/// Builds Ethernet frames for `LoadedProgram.testRun`: UDP over IPv4 or IPv6, with optional VLAN
/// tags and IPv6 extension headers. Checksums other than the IPv4 header's are left zero; the
/// XDP program never reads them.
public enum TestFrame {
    /// IPv6 extension headers `udp` can insert, by their next-header number.
    public enum IPv6Extension: UInt8, Sendable {
        case hopByHop = 0
        case routing = 43
        case fragment = 44
        case destinationOptions = 60
    }

    /// A UDP datagram from `source` to `destination` (same family) in an Ethernet frame.
    /// - Parameters:
    ///   - vlanTags: VLAN ids, outermost first; two tags use 802.1ad outside and 802.1Q inside.
    ///   - extensions: IPv6 extension headers in order (ignored for IPv4), 8 bytes each.
    public static func udp(
        from source: IPAddress, to destination: IPAddress, vlanTags: [UInt16] = [],
        extensions: [IPv6Extension] = [], payload: [UInt8] = Array("B".utf8)
    ) -> [UInt8] {
        precondition(source.family == destination.family, "source and destination must be of one family")
        var frame: [UInt8] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]
        for (position, tag) in vlanTags.enumerated() {
            let isOuterOfTwo = vlanTags.count > 1 && position == 0
            frame += be16(isOuterOfTwo ? 0x88a8 : 0x8100)
            frame += be16(tag & 0x0fff)
        }
        let udpLength = 8 + payload.count
        let udp = be16(40000) + be16(7) + be16(UInt16(udpLength)) + be16(0) + payload
        switch source.family {
        case .ipv4:
            frame += be16(0x0800)
            var header: [UInt8] = [0x45, 0] + be16(UInt16(20 + udpLength)) + be16(1) + be16(0) + [64, 17] + be16(0)
            source.withUnsafeBytes { header += $0 }
            destination.withUnsafeBytes { header += $0 }
            let checksum = internetChecksum(header)
            header[10] = UInt8(checksum >> 8)
            header[11] = UInt8(checksum & 0xff)
            frame += header + udp
        case .ipv6:
            frame += be16(0x86dd)
            let chain = extensions.map(\.rawValue) + [17]
            var extensionBytes: [UInt8] = []
            for (position, _) in extensions.enumerated() {
                // next header, length in 8-byte units beyond the first (0), then 6 bytes of padding
                // (for a fragment header: offset 0, not more fragments, identification 0).
                extensionBytes += [chain[position + 1], 0, 0, 0, 0, 0, 0, 0]
            }
            frame += [0x60, 0, 0, 0] + be16(UInt16(extensionBytes.count + udpLength)) + [chain[0], 64]
            source.withUnsafeBytes { frame += $0 }
            destination.withUnsafeBytes { frame += $0 }
            frame += extensionBytes + udp
        }
        return frame
    }

    private static func be16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xff)] }

    private static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        for index in stride(from: 0, to: bytes.count, by: 2) {
            sum += UInt32(bytes[index]) << 8 | UInt32(index + 1 < bytes.count ? bytes[index + 1] : 0)
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
