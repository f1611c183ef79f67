// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisHTTP
import Glibc
import PortcullisSystem

/// Where the metrics endpoint listens: `127.0.0.1:9617`, `[::1]:9617`, `localhost:9617`; port 0
/// lets the kernel pick one (tests).
public struct MetricsEndpoint: Sendable, Equatable, CustomStringConvertible {
    public let address: InternetSocketAddress
    public var hostText: String { address.host }
    public var port: UInt16 { address.port }
    /// Loopback (127.0.0.0/8 or ::1): reachable from this host only.
    public var isLoopback: Bool { address.isLoopback }

    /// - Throws: one line naming what is wrong and what to write instead.
    public init(_ text: String) throws(MetricsError) {
        do throws(InternetSocketAddressError) {
            address = try InternetSocketAddress(text)
        } catch {
            throw MetricsError(
                "metrics address '\(text)': \(error); give ADDRESS:PORT, e.g. 127.0.0.1:9617 or [::1]:9617, or none")
        }
    }

    public var description: String { url(port: port) }

    /// `http://HOST:PORT/metrics`.
    public func url(port: UInt16) -> String { "http://\(address.urlHost):\(port)/metrics" }
}

public struct MetricsError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The HTTP endpoint: GNU libmicrohttpd on a thread of its own (through CPortcullis) serves
/// `GET /metrics` with what `body` renders; `/` names it; other paths are 404, other methods 405.
public final class MetricsServer: @unchecked Sendable {
    public let endpoint: MetricsEndpoint
    /// The port it listens on (the one the kernel picked for port 0).
    public private(set) var port: UInt16 = 0
    private let body: @Sendable () -> [UInt8]
    private var server: OpaquePointer?

    /// Listens at once. - Throws: when the address cannot be bound (in use, not on this host).
    public init(endpoint: MetricsEndpoint, body: @escaping @Sendable () -> [UInt8]) throws(MetricsError) {
        self.endpoint = endpoint
        self.body = body
        let context = Unmanaged.passUnretained(self).toOpaque()
        let started = endpoint.address.withSocketAddress { address, length in
            cportcullis_http_start(address, length, Self.handler, context)
        }
        guard let started else {
            let reason = String(cString: strerror(errno))
            throw MetricsError(
                "metrics \(endpoint.hostText) port \(endpoint.port): cannot listen (\(reason)); pick a free port on "
                    + "an address of this host, or --metrics none")
        }
        server = started
        port = cportcullis_http_port(started)
    }

    deinit { close() }

    /// Connections it shut: no complete request within 5 s of their start or last answer, or the
    /// oldest of an address (all of loopback counts as one) that opened a ninth.
    public var connectionsCut: UInt {
        guard let server else { return 0 }
        return UInt(cportcullis_http_connections_cut(server))
    }

    /// Stops serving (the thread joined, connections closed).
    public func close() {
        guard let server else { return }
        cportcullis_http_stop(server)
        self.server = nil
    }

    private static let textType = StaticString("text/plain; charset=utf-8")
    private static let metricsType = StaticString("text/plain; version=0.0.4; charset=utf-8")

    /// libmicrohttpd's thread asks for a page.
    private static let handler: cportcullis_http_handler = { context, url, length, status, type in
        guard let context, let url, let length, let status, let type else { return nil }
        let server = Unmanaged<MetricsServer>.fromOpaque(context).takeUnretainedValue()
        let path = String(cString: url)
        let bytes: [UInt8]
        switch path {
        case "/metrics":
            bytes = server.body()
            status.pointee = 200
            type.pointee = UnsafeRawPointer(metricsType.utf8Start).assumingMemoryBound(to: CChar.self)
        case "/":
            bytes = Array("Portcullis: the metrics are at /metrics\n".utf8)
            status.pointee = 200
            type.pointee = UnsafeRawPointer(textType.utf8Start).assumingMemoryBound(to: CChar.self)
        default:
            bytes = Array("not found: \(path); the metrics are at /metrics\n".utf8)
            status.pointee = 404
            type.pointee = UnsafeRawPointer(textType.utf8Start).assumingMemoryBound(to: CChar.self)
        }
        // libmicrohttpd frees it once sent.
        guard let copy = malloc(max(bytes.count, 1))?.assumingMemoryBound(to: CChar.self) else { return nil }
        bytes.withUnsafeBytes { if let base = $0.baseAddress { memcpy(copy, base, $0.count) } }
        length.pointee = bytes.count
        return copy
    }
}
