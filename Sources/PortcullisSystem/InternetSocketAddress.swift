// SPDX-License-Identifier: Apache-2.0
import Glibc

/// An IPv4 or IPv6 address and port as an operator writes it, `127.0.0.1:9617` or `[::1]:9617`
/// (`localhost` is 127.0.0.1): the metrics endpoint's and the syslog source's UDP address. No name
/// is looked up.
public struct InternetSocketAddress: @unchecked Sendable, Equatable {
    /// The address as written, without brackets.
    public let host: String
    public let port: UInt16
    public let family: Int32
    private let storage: sockaddr_storage
    public let length: socklen_t

    /// - Throws: what is wrong with `text`, in a few words (the caller says what it is for).
    public init(_ text: String) throws(InternetSocketAddressError) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw InternetSocketAddressError("no port")
        }
        var host = String(text[..<colon])
        if host == "localhost" { host = "127.0.0.1" }
        var storage = sockaddr_storage()
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = String(host.dropFirst().dropLast())
            var socket = sockaddr_in6()
            socket.sin6_family = sa_family_t(AF_INET6)
            socket.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &socket.sin6_addr) == 1 else {
                throw InternetSocketAddressError("'\(host)' is not an IPv6 address")
            }
            withUnsafeBytes(of: socket) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
            family = AF_INET6
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            var socket = sockaddr_in()
            socket.sin_family = sa_family_t(AF_INET)
            socket.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &socket.sin_addr) == 1 else {
                throw InternetSocketAddressError("'\(host)' is not an IPv4 address")
            }
            withUnsafeBytes(of: socket) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
            family = AF_INET
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
        self.host = host
        self.port = port
        self.storage = storage
    }

    /// 127.0.0.0/8 or ::1: reachable from this host only.
    public var isLoopback: Bool {
        withSocketAddress { address, _ in
            if family == AF_INET {
                return address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt32(bigEndian: $0.pointee.sin_addr.s_addr) >> 24 == 127
                }
            }
            return address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                withUnsafeBytes(of: $0.pointee.sin6_addr) { $0.dropLast().allSatisfy { $0 == 0 } && $0.last == 1 }
            }
        }
    }

    /// The host as a URL writes it (IPv6 in brackets).
    public var urlHost: String { family == AF_INET6 ? "[\(host)]" : host }

    /// Calls `body` with the `sockaddr` and its length (for `bind`).
    public func withSocketAddress<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        try withUnsafePointer(to: storage) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }

    public static func == (left: InternetSocketAddress, right: InternetSocketAddress) -> Bool {
        left.host == right.host && left.port == right.port && left.family == right.family
    }
}

public struct InternetSocketAddressError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
