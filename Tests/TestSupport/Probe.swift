// SPDX-License-Identifier: Apache-2.0
import Foundation

/// A `transport-probe` process: a writer or reader of verifiable lines in a process of its own.
public final class Probe: @unchecked Sendable {
    public let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    private var collected = Data()

    /// Starts `transport-probe ARGUMENTS`; a reader is waited for until it prints "ready" (killed
    /// if it has not after 60 s: a busy machine can take seconds to start a process).
    /// - Parameter prefix: a command that runs the probe (`prlimit ... --`).
    public init(_ arguments: [String], asUser: (uid: UInt32, gid: UInt32)? = nil, prefix: [String] = []) throws {
        let probe = Products.directory + "/transport-probe"
        if !prefix.isEmpty {
            process.executableURL = URL(fileURLWithPath: prefix[0])
            process.arguments = Array(prefix.dropFirst()) + [probe] + arguments
        } else if let asUser {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=\(asUser.uid)", "--regid=\(asUser.gid)", "--clear-groups", probe] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: probe)
            process.arguments = arguments
        }
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        try process.run()
        if arguments.first == "read" { _ = waitFor("ready", killingAfter: 60) }
    }

    /// Waits until the process has printed a line `marker`, and says whether it did. A process
    /// that has not printed it after `killingAfter` seconds is killed (a watchdog: the read
    /// blocks), which ends the wait.
    public func waitFor(_ marker: String, killingAfter seconds: Double) -> Bool {
        let said = ReadyFlag()
        let pid = process.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
            if !said.isSet { kill(pid, SIGKILL) }
        }
        defer { said.set() }
        while !String(decoding: collected, as: UTF8.self).contains(marker + "\n") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return false }
            collected.append(chunk)
        }
        return true
    }

    public var pid: pid_t { process.processIdentifier }

    /// Waits for the process to end (killing it after `timeout` seconds) and returns the JSON object
    /// it printed last, with its exit status.
    public func finish(timeout: Double = 60) throws -> (status: Int32, summary: [String: Any]) {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        collected.append(output.fileHandleForReading.readDataToEndOfFile())
        let text = String(decoding: collected, as: UTF8.self)
        let last = text.split(separator: "\n").last { $0.hasPrefix("{") } ?? "{}"
        let summary = (try? JSONSerialization.jsonObject(with: Data(last.utf8))) as? [String: Any] ?? [:]
        return (process.terminationStatus, summary)
    }

    public var standardError: String {
        String(decoding: errors.fileHandleForReading.availableData, as: UTF8.self)
    }

    /// Whether the process ended within `timeout` seconds.
    public func ends(within timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return !process.isRunning
    }
}

/// Unique names for one test's shared-memory segment, socket directory and log file, removed by
/// `remove()`: tests running in parallel never meet.
public struct TransportScratch: Sendable {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()

    public let shmName: String
    public let socketDirectory: String
    public let filePath: String

    public init() {
        Self.sweepLeftovers()
        let number = Self.lock.withLock {
            Self.counter += 1
            return Self.counter
        }
        shmName = "/pct-\(getpid())-\(number)"
        socketDirectory = NSTemporaryDirectory() + "pct-\(getpid())-\(number)-sockets"
        filePath = NSTemporaryDirectory() + "pct-\(getpid())-\(number).log"
    }

    /// Removes the segments (and half-made ones) of test processes that died before cleaning up
    /// (a crashed test run): `/dev/shm/pct-PID-N`, `/dev/shm/.pct-PID-N.CREATOR.R.new`.
    static func sweepLeftovers() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm") else { return }
        for name in names {
            let stem = name.hasPrefix(".pct-") ? name.dropFirst(5) : name.hasPrefix("pct-") ? name.dropFirst(4) : nil
            guard let stem, let pid = Int32(stem.prefix { $0.isNumber }), pid != getpid(),
                kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            unlink("/dev/shm/" + name)
        }
    }

    public func remove() {
        shm_unlink(shmName)
        try? FileManager.default.removeItem(atPath: socketDirectory)
        unlink(filePath)
        unlink(filePath + ".1")
    }

    /// The probe's transport arguments for `kind` ("shm", "socket" or "file").
    public func arguments(_ kind: String) -> [String] {
        switch kind {
        case "shm": ["--transport", "shm", "--shm-name", shmName]
        case "socket": ["--transport", "socket", "--socket-dir", socketDirectory]
        default: ["--transport", "file", "--file-path", filePath]
        }
    }
}

final class ReadyFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
