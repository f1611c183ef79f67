// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import PortcullisCore
import Glibc

/// A UDP frame from the client side to the server, with correct checksums (the IPv4 UDP checksum
/// is 0, "none"); `rewrite` changes its source address and payload byte in place.
struct FrameTemplate {
    let family: Int
    let bytes: [UInt8]
    /// Both families' frames are 80 bytes, so live frames never change length.
    static let frameLength = 80
    private var headerLength: Int { family == 0 ? 34 : 54 }

    init(family: Int, sourceMAC: [UInt8], serverMAC: [UInt8], port: UInt16) {
        var frame = serverMAC + sourceMAC + (family == 0 ? [0x08, 0x00] : [0x86, 0xdd])
        let headerLength = family == 0 ? 34 : 54
        let udpLength = Self.frameLength - headerLength
        let filler = Array("portcullis testbed flood, payload B: attack, A: valid".utf8)
        let payload: [UInt8] = [UInt8(ascii: "B")] + filler[0..<(udpLength - 9)]
        let source = family == 0 ? AddressPlan.attackerBase4 : AddressPlan.attackerBase6
        let server = (family == 0 ? AddressPlan.server4 : AddressPlan.server6).withUnsafeBytes { Array($0) }
        if family == 0 {
            frame += [0x45, 0, 0, UInt8(20 + udpLength), 0, 0, 0x40, 0, 64, 17, 0, 0] + source + server
        } else {
            frame += [0x60, 0, 0, 0, 0, UInt8(udpLength), 17, 64] + source + server
        }
        frame += [0x9c, 0x40, UInt8(port >> 8), UInt8(port & 0xff), 0, UInt8(udpLength), 0, 0] + payload
        frame.withUnsafeMutableBytes { Self.fixChecksums($0.baseAddress!, family: family) }
        self.family = family
        self.bytes = frame
    }

    func rewrite(_ frame: UnsafeMutableRawPointer, source: [UInt8], payload: UInt8) {
        let sourceOffset = family == 0 ? 26 : 22
        source.withUnsafeBytes {
            frame.advanced(by: sourceOffset).copyMemory(from: $0.baseAddress!, byteCount: source.count)
        }
        frame.storeBytes(of: payload, toByteOffset: headerLength + 8, as: UInt8.self)
        Self.fixChecksums(frame, family: family)
    }

    /// Recomputes the IPv4 header checksum, or the IPv6 UDP checksum (pseudo-header included).
    static func fixChecksums(_ frame: UnsafeMutableRawPointer, family: Int) {
        func sum(_ offset: Int, _ length: Int, _ start: UInt32 = 0) -> UInt32 {
            var total = start
            for position in stride(from: offset, to: offset + length, by: 2) {
                total +=
                    UInt32(frame.load(fromByteOffset: position, as: UInt8.self)) << 8
                    | UInt32(frame.load(fromByteOffset: position + 1, as: UInt8.self))
            }
            return total
        }
        func store(_ total: UInt32, at offset: Int, zeroAsOnes: Bool) {
            var folded = total
            while folded > 0xffff { folded = (folded & 0xffff) + (folded >> 16) }
            var checksum = ~UInt16(folded)
            if zeroAsOnes && checksum == 0 { checksum = 0xffff }
            frame.storeBytes(of: checksum.bigEndian, toByteOffset: offset, as: UInt16.self)
        }
        if family == 0 {
            frame.storeBytes(of: 0, toByteOffset: 24, as: UInt16.self)
            store(sum(14, 20), at: 24, zeroAsOnes: false)
        } else {
            frame.storeBytes(of: 0, toByteOffset: 60, as: UInt16.self)
            let udpLength = frameLength - 54
            // Pseudo-header: both addresses, the UDP length and next header 17.
            let total = sum(22, 32, UInt32(udpLength) + 17)
            store(sum(54, udpLength, total), at: 60, zeroAsOnes: true)
        }
    }
}

func parseMAC(_ text: String, option: String) throws -> [UInt8] {
    let parts = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
    guard parts.count == 6 else {
        throw ValidationError("\(option) \(text) is not a MAC address like 02:00:c6:12:00:01")
    }
    return parts
}
