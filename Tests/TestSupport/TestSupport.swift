// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import XDPFirewall

/// Privileged tests (BPF, XDP, namespaces) run as root. Outside CI a missing privilege skips them;
/// with `CI` set it fails them, so CI can never pass by skipping.
public enum Privileges {
    public static var isRoot: Bool { geteuid() == 0 }
    public static var inCI: Bool { ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty } ?? false }
    /// Use as `.enabled(if: Privileges.runnable)`: the test runs when it can, or when CI demands it.
    public static var runnable: Bool { isRoot || inCI }

    /// Fails the test (in CI) when not root.
    public static func require() throws {
        try #require(isRoot, "this test needs root (CAP_BPF, CAP_NET_ADMIN); CI runs it as root")
    }
}

/// Paths of the built products: the test bundle lies next to the executables and the BPF objects
/// (tools/build-bpf puts them into the bin directory).
public enum Products {
    public static var directory: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return (executable as NSString).deletingLastPathComponent
    }

    public static func filterObject() throws -> String {
        try BPFObjectLocator().locate()
    }

    public static func referenceObject() throws -> String {
        try BPFObjectLocator().locate("xdp_reference.bpf.o")
    }

    public static func floodObject() throws -> String {
        try BPFObjectLocator().locate("flood.bpf.o")
    }

    public static var cli: String { directory + "/portcullis" }
}

/// The filter compiled another way (`BPF_CFLAGS=-mcpu=v2 tools/build-bpf`) into a directory of its
/// own: the same source and maps, other instructions, so another program tag; what a package's
/// previous version would have left attached. Remove it with `remove()` (in a `defer`).
public struct VariantFilterObject: Sendable {
    public let directory: String
    public var path: String { directory + "/portcullis.bpf.o" }

    public init() throws {
        directory = NSTemporaryDirectory() + "pct-variant-\(getpid())-\(ScratchNumber.next())"
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let built = try shell("BPF_CFLAGS=-mcpu=v2", repository + "/tools/build-bpf", directory, timeout: 120)
        guard built.status == 0 else {
            remove()
            throw TestNetworkError(command: "tools/build-bpf with -mcpu=v2", output: built.stderr)
        }
    }

    public func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Numbers unique within this test process, for the names of what tests create (namespaces,
/// interfaces) beside the process id.
public enum ScratchNumber {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()

    public static func next() -> Int {
        lock.withLock {
            counter += 1
            return counter
        }
    }
}

/// A pin directory of its own for one test, under /sys/fs/bpf; its maps and the directory are
/// removed by `remove()` (call it in a `defer`).
public struct ScratchPinDirectory: Sendable {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()

    public let pins: PinDirectory

    public init(_ label: String) {
        Self.sweepLeftovers()
        let number = Self.lock.withLock {
            Self.counter += 1
            return Self.counter
        }
        pins = PinDirectory("/sys/fs/bpf/portcullis-test-\(getpid())-\(label)-\(number)")
    }

    public var path: String { pins.path }

    /// Removes scratch pin directories of test processes that died before cleaning up.
    static func sweepLeftovers() {
        let root = "/sys/fs/bpf"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root) else { return }
        for name in names where name.hasPrefix("portcullis-test-") {
            let digits = name.dropFirst("portcullis-test-".count).prefix { $0.isNumber }
            if let pid = Int32(digits), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
                ScratchPinDirectory(path: root + "/" + name).remove()
            }
        }
    }

    private init(path: String) { pins = PinDirectory(path) }

    public func remove() {
        try? pins.removeMaps()
        // Tests may pin extra objects (a map of a wrong layout); clear whatever is left.
        if let names = try? FileManager.default.contentsOfDirectory(atPath: path) {
            for name in names { unlink(path + "/" + name) }
        }
        rmdir(path)
    }
}

/// The outcome of a child process.
public struct ProcessResult: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

/// Runs a program to completion (bounded by `timeout` seconds: killed after it) and collects its output.
@discardableResult
public func runProcess(_ executable: String, _ arguments: [String], timeout: Double = 60) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    // Read both pipes concurrently so a chatty child cannot fill one and block.
    let group = DispatchGroup()
    nonisolated(unsafe) var outData = Data()
    nonisolated(unsafe) var errData = Data()
    DispatchQueue.global().async(group: group) { outData = out.fileHandleForReading.readDataToEndOfFile() }
    DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
    let deadline = DispatchTime.now() + timeout
    if group.wait(timeout: deadline) == .timedOut {
        process.terminate()
        kill(process.processIdentifier, SIGKILL)
        _ = group.wait(timeout: .now() + 5)
    }
    process.waitUntilExit()
    return ProcessResult(
        status: process.terminationStatus,
        stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// Runs a command through `/usr/bin/env` (so `ip`, `nsenter`, `python3` are found on PATH).
@discardableResult
public func shell(_ arguments: String..., timeout: Double = 60) throws -> ProcessResult {
    try runProcess("/usr/bin/env", arguments, timeout: timeout)
}

/// A daemon process's control socket for a test: in the temporary directory, named for this
/// process, and removed by `stopDaemonProcess` (or, when the test process died first, by the next
/// test run's sweep).
public enum ControlScratch {
    static let prefix = "pct-control-"

    /// A path no other test uses.
    public static func path() -> String {
        sweepLeftovers()
        return NSTemporaryDirectory() + prefix + "\(getpid())-\(UUID().uuidString.prefix(8)).sock"
    }

    /// Removes the control sockets of test processes that are gone.
    static func sweepLeftovers() {
        let directory = NSTemporaryDirectory()
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            let digits = name.dropFirst(prefix.count).prefix { $0.isNumber }
            if let pid = Int32(digits), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
                unlink(directory + name)
            }
        }
    }
}

/// Stops a daemon process a test started: SIGTERM, SIGKILL after 10 s, and its `--control` socket
/// removed (a daemon that had to be killed leaves it behind).
public func stopDaemonProcess(_ process: Process) {
    kill(process.processIdentifier, SIGTERM)
    let deadline = Date().addingTimeInterval(10)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    if let arguments = process.arguments, let index = arguments.firstIndex(of: "--control"),
        index + 1 < arguments.count
    {
        unlink(arguments[index + 1])
    }
}

/// Waits (up to 30 s) until a TCP connection to `address`:`port` in `namespace` is accepted, while
/// `process` (the server started for it) runs. - Returns: nil once it listens, else the last
/// probe's error text.
public func waitListening(namespace: String, address: String, port: Int, process: Process) throws -> String? {
    let deadline = Date().addingTimeInterval(30)
    var probed = "not probed"
    while Date() < deadline {
        // A TCP connection accepted: it listens (an HTTP request would need TLS for an https one).
        let probe = try runProcess(
            "/usr/bin/nsenter",
            ["--net=/run/netns/\(namespace)", "--", "/bin/bash", "-c", "exec 3<>/dev/tcp/\(address)/\(port)"])
        if probe.status == 0 { return nil }
        probed = probe.stderr
        guard process.isRunning else { break }
        usleep(50_000)
    }
    return probed
}
