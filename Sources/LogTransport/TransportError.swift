// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// What can go wrong in a transport; each renders as one line naming the thing and the remedy.
public enum TransportError: Error, CustomStringConvertible, Equatable {
    /// A system call failed; `errno` is the C error number.
    case system(operation: String, errno: Int32)
    /// A knob has a value the transport cannot work with.
    case invalidConfiguration(String)
    /// A shared-memory segment exists with another layout and live processes still use it.
    case segmentInUse(name: String, detail: String)
    /// A shared-memory segment is not one of ours (bad magic or version).
    case foreignSegment(name: String, detail: String)
    /// Every ring (writer) or reader slot of the segment is taken by a live process.
    case segmentFull(name: String, what: String)
    /// The writer gave up waiting for space (lossless readers alive but not reading).
    case timedOut(String)
    /// A segment, directory or file someone untrusted made or could write (`TrustedOwners`).
    case untrusted(String)

    public var description: String {
        switch self {
        case .system(let operation, let errno):
            return "\(operation): \(String(cString: strerror(errno)))"
        case .invalidConfiguration(let detail):
            return "invalid transport setting: \(detail)"
        case .segmentInUse(let name, let detail):
            return "shared-memory segment \(name) is in use with another layout (\(detail)); "
                + "stop its users or pick the same --shm-* settings"
        case .foreignSegment(let name, let detail):
            return "shared-memory segment /dev/shm\(name) is not a Portcullis ring (\(detail)); "
                + "remove it (rm /dev/shm\(name)) or choose another --shm-name"
        case .segmentFull(let name, let what):
            return "shared-memory segment \(name) has no free \(what); "
                + "raise --shm-\(what == "ring" ? "segments" : "reader-slots") or stop an idle user"
        case .timedOut(let detail):
            return detail
        case .untrusted(let detail):
            return detail
        }
    }
}

/// A system call through the funnel (`PortcullisSystem.systemCall`: `EINTR` retried, errno read at
/// once), its failure as `TransportError.system` naming the operation.
@inline(__always)
@discardableResult
func transportCall(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws(TransportError) -> Int32 {
    try systemCall(call, orThrow: { TransportError.system(operation: operation(), errno: $0.code) })
}

/// Same for calls returning a byte count (`read`, `write`, `send`...). `EAGAIN` is returned as -1
/// for the caller to decide.
@inline(__always)
func transportCallCount(_ operation: @autoclosure () -> String, _ call: () -> Int) throws(TransportError) -> Int {
    try systemCallUnlessWouldBlock(call, orThrow: { TransportError.system(operation: operation(), errno: $0.code) })
        ?? -1
}

/// Says a problem met while a reader runs (a refused rotated file, a state file set aside) on
/// stderr as one line, after the program's name ("portcullisd: ...").
func sayProblem(_ line: String) {
    let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
    Console.say("\(program.isEmpty ? "portcullis" : program): \(line)", to: STDERR_FILENO)
}
