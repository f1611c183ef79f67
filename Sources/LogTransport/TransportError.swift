import Glibc

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
        }
    }
}

/// The syscall funnel: retries `EINTR`, reports failure with the operation and errno.
@inline(__always)
@discardableResult
func systemCall(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws(TransportError) -> Int32 {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw .system(operation: operation(), errno: code)
    }
}

/// Same for calls returning a byte count (`read`, `write`, `send`...). `EAGAIN` is returned as -1
/// with errno intact for the caller to decide.
@inline(__always)
func systemCallCount(_ operation: @autoclosure () -> String, _ call: () -> Int) throws(TransportError) -> Int {
    while true {
        let result = call()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        if code == EAGAIN || code == EWOULDBLOCK { return -1 }
        throw .system(operation: operation(), errno: code)
    }
}
