// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

/// A joinable POSIX thread (the daemon's workers are pinned threads, not tasks of a pool).
public struct SystemThread: Sendable {
    private let handle: pthread_t

    /// Starts a thread running `body`.
    /// - Throws: the error `pthread_create` gave (too many threads, no memory), as `Errno`.
    public static func spawn(_ body: @escaping @Sendable () -> Void) throws(Errno) -> SystemThread {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { argument in
                Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
                return nil
            }, box)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw Errno(result)
        }
        return SystemThread(handle: thread)
    }

    /// Waits for the thread to end.
    public func join() {
        pthread_join(handle, nil)
    }

    /// Lets the thread end on its own (nothing will join it): its resources go when it returns.
    public func detach() {
        pthread_detach(handle)
    }

    /// Pins the calling thread to `cpu`.
    public static func pinCurrent(to cpu: Int) throws(Errno) {
        try systemCall({ cportcullis_pin_thread(Int32(cpu)) }, orThrow: { $0 })
    }
}
