// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisCurl
import FoundationEssentials
import Glibc
import PortcullisSystem

/// Why a request to the Local API did not give what was asked.
public enum LAPIError: Error, CustomStringConvertible, Equatable {
    /// No answer: the connection, TLS or the time limit failed (libcurl's message).
    case unreachable(String)
    /// An answer with a status that is not success, and the message the LAPI gave.
    case status(Int, String)
    /// An answer that is not the JSON expected.
    case malformed(String)
    /// The request was ended because the daemon stops.
    case cancelled
    /// The answer came, but the maps refused what it holds (a full layer, say).
    case install(String)

    /// The kind, as the metrics label it: `unreachable`, `refused` (401, 403), `status` (another
    /// answer that is not success), `malformed`, `install`, `cancelled`.
    public var kind: String {
        switch self {
        case .unreachable: "unreachable"
        case .status(let code, _) where code == 401 || code == 403: "refused"
        case .status: "status"
        case .malformed: "malformed"
        case .install: "install"
        case .cancelled: "cancelled"
        }
    }

    /// What tells one failure from another for the log: the kind, and a status's code (a
    /// message may vary from one try to the next).
    var sameness: String {
        if case .status(let code, _) = self { return "status \(code)" }
        return kind
    }

    public var description: String {
        switch self {
        case .unreachable(let message): "unreachable: \(message)"
        case .status(let code, let message): "HTTP \(code)" + (message.isEmpty ? "" : ": \(message)")
        case .malformed(let message): "malformed answer: \(message)"
        case .cancelled: "cancelled"
        case .install(let message): "the maps refused the decisions: \(message)"
        }
    }
}

/// The TLS and identity settings of a connection to a Local API (the bouncers' usual names).
public struct LAPIConnectionSettings: Sendable, Equatable {
    /// `api_url`: `http://127.0.0.1:8080/` or an `https://` one.
    public var url: String
    public var caCertPath: String?
    public var certPath: String?
    public var keyPath: String?
    public var insecureSkipVerify = false
    public var userAgent = "portcullis/\(PortcullisVersion.current)"

    public init(url: String) { self.url = url.hasSuffix("/") ? url : url + "/" }

    /// `url` as logs and `portcullis status` show it: credentials in it (`user:password@`) are
    /// replaced by `***@`.
    public var displayURL: String {
        guard let scheme = url.firstRange(of: "://") else { return url }
        let authorityStart = scheme.upperBound
        let authorityEnd = url[authorityStart...].firstIndex(of: "/") ?? url.endIndex
        guard let at = url[authorityStart..<authorityEnd].lastIndex(of: "@") else { return url }
        return String(url[..<authorityStart]) + "***" + String(url[at...])
    }
}

/// One connection to a CrowdSec Local API over libcurl (kept alive between requests). Used by
/// one thread at a time.
final class LAPIClient: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer
    private let settings: LAPIConnectionSettings
    private let cancelFlag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    /// The longest answer taken (a community blocklist's 100,000 decisions are about 25 MiB).
    static let maxBody = 256 << 20

    private static let global: Int32 = cportcullis_curl_global()

    init(_ settings: LAPIConnectionSettings) throws(LAPIError) {
        guard Self.global == 0, let handle = cportcullis_curl_new() else {
            throw .unreachable("libcurl could not be initialised")
        }
        self.handle = handle
        self.settings = settings
        cancelFlag.initialize(to: 0)
    }

    deinit {
        cportcullis_curl_close(handle)
        cancelFlag.deallocate()
    }

    /// Ends the request under way, and every later one, within a second (from any thread).
    func cancel() { cportcullis_curl_cancel(cancelFlag) }

    /// Sends a request to `path` (relative to the API's URL) and returns the answer's body when
    /// its status is 2xx.
    func request(
        _ method: String, _ path: String, headers: [String] = [], body: [UInt8]? = nil, timeout: Double = 60
    ) throws(LAPIError) -> [UInt8] {
        try request(method, path, headers: headers, body: body, timeout: timeout) { Array($0) }
    }

    /// Sends a request to `path` and hands the answer's body, when its status is 2xx, to `read`
    /// where libcurl left it (a decision stream of 15 MB is read there, not copied first).
    func request<T>(
        _ method: String, _ path: String, headers: [String] = [], body: [UInt8]? = nil, timeout: Double = 60,
        reading read: (UnsafeBufferPointer<UInt8>) throws(LAPIError) -> T
    ) throws(LAPIError) -> T {
        let url = settings.url + path
        let allHeaders =
            headers + (body != nil ? ["Content-Type: application/json"] : []) + ["Accept: application/json"]
        var response = cportcullis_curl_response()
        let code: Int32 = withCStrings(allHeaders) { headerPointers in
            withOptional(settings.caCertPath) { ca in
                withOptional(settings.certPath) { cert in
                    withOptional(settings.keyPath) { key in
                        settings.userAgent.withCString { agent in
                            var options = cportcullis_curl_options(
                                user_agent: agent, ca_path: ca, cert_path: cert, key_path: key,
                                insecure: settings.insecureSkipVerify, timeout_ms: Int(timeout * 1000),
                                connect_timeout_ms: 5000, max_body: Self.maxBody, cancel: cancelFlag)
                            return headerPointers.withUnsafeBufferPointer { pointers in
                                if let body {
                                    return body.withUnsafeBytes { bytes in
                                        cportcullis_curl_request(
                                            handle, &options, method, url, pointers.baseAddress, pointers.count,
                                            bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), bytes.count,
                                            &response)
                                    }
                                }
                                return cportcullis_curl_request(
                                    handle, &options, method, url, pointers.baseAddress, pointers.count, nil, 0,
                                    &response)
                            }
                        }
                    }
                }
            }
        }
        defer { cportcullis_curl_free(&response) }
        let bytes = UnsafeBufferPointer(
            start: UnsafeRawPointer(response.body)?.assumingMemoryBound(to: UInt8.self), count: response.length)
        guard code == 0 else {
            if cancelFlag.pointee != 0 { throw .cancelled }
            if response.too_long { throw .malformed("longer than \(Self.maxBody >> 20) MiB") }
            let message = withUnsafeBytes(of: response.error) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw .unreachable(message)
        }
        guard (200..<300).contains(response.status) else {
            throw .status(response.status, Self.message(in: Array(bytes)))
        }
        return try read(bytes)
    }

    /// The `message` a LAPI error answer carries, or its first 200 bytes.
    static func message(in body: [UInt8]) -> String {
        struct Answer: Decodable { let message: String }
        if let answer = try? JSONDecoder().decode(Answer.self, from: Data(body)) { return answer.message }
        return String(decoding: body.prefix(200), as: UTF8.self)
    }
}

private func withOptional<T>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}

private func withCStrings<T>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let copies = strings.map { strdup($0) }
    defer { for copy in copies { free(copy) } }
    return body(copies.map { UnsafePointer($0) })
}

/// The thread of a LAPI client (the bouncer's, the pusher's): started once; stopped by a flag its
/// loop watches and by ending the request under way (within a second).
final class LAPIThread: @unchecked Sendable {
    private let stop = StopFlag()
    private var thread: SystemThread?

    var isStopping: Bool { stop.isSet }

    func start(_ body: @escaping @Sendable () -> Void) throws(Errno) {
        thread = try SystemThread.spawn(body)
    }

    func stopAndJoin(_ client: LAPIClient) {
        stop.set()
        client.cancel()
        thread?.join()
        thread = nil
    }
}
