// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

/// A C error number, with its English text. The corresponding C variable is `errno`.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    /// The C error number (`EAGAIN`, `ENOENT`...).
    public let code: Int32

    public init(_ code: Int32) {
        self.code = code
    }

    /// `strerror`'s text.
    public var description: String { String(cString: strerror(code)) }
}

/// How a C function reports failure.
public enum FailureConvention: Sendable {
    /// -1 (or any negative value), with the error in `errno`: system calls and most of libc.
    case errno
    /// A negative error number returned (libbpf 1.x; liburing): `-EINTR`, `-ENOENT`... (liburing
    /// leaves `errno` alone, and -1 is -EPERM: the result alone tells.)
    case negativeErrno
}

/// The syscall funnel: every system, libbpf and liburing call of Portcullis whose failure it
/// handles goes through here (directly, or through `systemCall` and `systemCallUnlessWouldBlock`
/// below); calls whose failure is ignored on purpose (`madvise`, `close`) say so where they stand. It reads the error
/// at once (before anything else can change `errno`) and retries `EINTR`. `EBADF` and `EFAULT` are
/// programming errors, not conditions: debug builds stop on them.
///
/// - Parameters:
///   - convention: how `call` reports failure.
///   - call: the C call; a negative result is a failure.
/// - Returns: the call's non-negative result, or the error it failed with (never `EINTR`).
@inline(never)
public func systemCallResult<Value: FixedWidthInteger & SignedInteger>(
    convention: FailureConvention = .errno, _ call: () -> Value
) -> Result<Value, Errno> {
    while true {
        let result = call()
        if result >= 0 { return .success(result) }
        let code: Int32
        switch convention {
        case .errno: code = errno
        case .negativeErrno: code = Int32(truncatingIfNeeded: -result)
        }
        if code == EINTR { continue }
        assert(code != EBADF && code != EFAULT, "a system call was handed a bad descriptor or address (\(Errno(code)))")
        return .failure(Errno(code))
    }
}

extension Result {
    /// Whether it is a success.
    public var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}

/// `systemCallResult`, throwing the caller's typed error made from the `Errno`.
/// - Parameter failure: the error to throw for an error number.
@inline(__always)
@discardableResult
public func systemCall<Value: FixedWidthInteger & SignedInteger, Failure: Error>(
    convention: FailureConvention = .errno, _ call: () -> Value, orThrow failure: (Errno) -> Failure
) throws(Failure) -> Value {
    switch systemCallResult(convention: convention, call) {
    case .success(let value): return value
    case .failure(let error): throw failure(error)
    }
}

/// Like `systemCall`, for calls where `EAGAIN`/`EWOULDBLOCK` means "nothing now", not failure.
/// - Returns: the call's result, or nil for would-block.
@inline(__always)
public func systemCallUnlessWouldBlock<Value: FixedWidthInteger & SignedInteger, Failure: Error>(
    convention: FailureConvention = .errno, _ call: () -> Value, orThrow failure: (Errno) -> Failure
) throws(Failure) -> Value? {
    switch systemCallResult(convention: convention, call) {
    case .success(let value): return value
    case .failure(let error) where error.code == EAGAIN || error.code == EWOULDBLOCK: return nil
    case .failure(let error): throw failure(error)
    }
}

/// Decodes a libxdp pointer result: libxdp returns error numbers encoded in the pointer (and NULL
/// with the error in `errno`).
/// - Returns: the pointer, or the error it carries.
public func decodeErrorPointer(_ pointer: OpaquePointer?) -> Result<OpaquePointer, Errno> {
    let error = libxdp_get_error(UnsafeRawPointer(pointer))
    guard error == 0, let pointer else {
        return .failure(Errno(error != 0 ? Int32(truncatingIfNeeded: -error) : ENOENT))
    }
    return .success(pointer)
}

/// `systemCallResult` for `mmap`: `MAP_FAILED` (or NULL) with the error in `errno`, read at once.
/// - Returns: the mapping, or the error it failed with.
@inline(never)
public func mapMemoryResult(_ call: () -> UnsafeMutableRawPointer?) -> Result<UnsafeMutableRawPointer, Errno> {
    while true {
        if let address = call(), address != MAP_FAILED { return .success(address) }
        let code = errno
        if code == EINTR { continue }
        assert(code != EBADF && code != EFAULT, "mmap was handed a bad descriptor or address (\(Errno(code)))")
        return .failure(Errno(code))
    }
}
