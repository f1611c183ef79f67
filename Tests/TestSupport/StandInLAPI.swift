// SPDX-License-Identifier: Apache-2.0
import Foundation

/// A stand-in CrowdSec Local API for what a real one cannot be made to send (10,000 origins at
/// once, a deletion with an unreadable duration): a python3 HTTP server in a namespace that answers
/// `/v1/decisions/stream` with the answers a test writes. A full pull (`startup=true`) gets
/// `full.json` (empty without one); a delta gets the oldest queued delta, once (empty when none
/// is queued). Each answer served is logged by name (`full`, `delta-0001`, `empty`).
public final class StandInLAPI {
    public let directory: String
    public let namespace: String
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)/" }
    private var process: Process?
    private var queued = 0

    static let server = """
        import http.server, os, sys
        root, port = sys.argv[1], int(sys.argv[2])
        empty = b'{"new":null,"deleted":null}'
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if "startup=true" in self.path:
                    path, name = os.path.join(root, "full.json"), "full"
                    body = open(path, "rb").read() if os.path.exists(path) else empty
                else:
                    deltas = sorted(f for f in os.listdir(root) if f.startswith("delta-") and f.endswith(".json"))
                    if deltas:
                        path, name = os.path.join(root, deltas[0]), deltas[0][:-5]
                        body = open(path, "rb").read()
                        os.rename(path, path + ".served")
                    else:
                        body, name = empty, "empty"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with open(os.path.join(root, "served.log"), "a") as log:
                    log.write(name + "\\n")
            def log_message(self, *args):
                pass
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """

    public init(namespace: String, port: Int = 8090) throws {
        self.namespace = namespace
        self.port = port
        directory = NSTemporaryDirectory() + "pc-standin-\(getpid())-\(namespace)"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.server.write(toFile: directory + "/server.py", atomically: true, encoding: .utf8)
    }

    /// One decision as the Local API writes it.
    public static func decision(
        _ id: Int, _ value: String, origin: String = "cscli", duration: String = "4h", scope: String = "Ip",
        type: String = "ban", scenario: String = "manual"
    ) -> String {
        #"{"duration":"\#(duration)","id":\#(id),"origin":"\#(origin)","scenario":"\#(scenario)","scope":"\#(scope)","type":"\#(type)","value":"\#(value)"}"#
    }

    static func answer(new: [String], deleted: [String]) -> String {
        let list = { (items: [String]) in items.isEmpty ? "null" : "[" + items.joined(separator: ",") + "]" }
        return #"{"new":\#(list(new)),"deleted":\#(list(deleted))}"#
    }

    /// What a full pull gets from now on (written whole, then renamed into place).
    public func setFull(new: [String], deleted: [String] = []) throws {
        try Self.answer(new: new, deleted: deleted).write(
            toFile: directory + "/full.json", atomically: true, encoding: .utf8)
    }

    /// Queues a delta: the next delta pull gets it. - Returns: its name in `served`.
    @discardableResult
    public func queueDelta(new: [String] = [], deleted: [String] = []) throws -> String {
        queued += 1
        let name = String(format: "delta-%04d", queued)
        try Self.answer(new: new, deleted: deleted).write(
            toFile: directory + "/\(name).json", atomically: true, encoding: .utf8)
        return name
    }

    /// The answers served so far, by name, in order.
    public var served: [String] {
        ((try? String(contentsOfFile: directory + "/served.log", encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    public func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        process.arguments = [
            "--net=/run/netns/\(namespace)", "--", "/usr/bin/python3", directory + "/server.py", directory, "\(port)",
        ]
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        guard let probed = try waitListening(namespace: namespace, address: "127.0.0.1", port: port, process: process)
        else { return }
        stop()
        throw CrowdSecLAPI.Failure("the stand-in Local API did not listen within 30 s (\(probed))")
    }

    /// Stops the server (by its pid; SIGKILL: a child of the test process inherits its blocked SIGTERM).
    public func stop() {
        guard let process else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    public func remove() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
