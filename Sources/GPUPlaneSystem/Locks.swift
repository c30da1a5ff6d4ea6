#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A mutex over `pthread_mutex_t`, for the short critical sections of threads that are not
/// tasks (the curl loop, the NVML health thread) and for state shared with them.
public final class Lock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// A new, unlocked mutex.
    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Takes the mutex; pair with `unlock()` on the same thread.
    public func lock() { pthread_mutex_lock(mutex) }

    /// Releases the mutex taken by `lock()`.
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` holding the mutex.
    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        lock()
        defer { unlock() }
        return try body()
    }

    fileprivate var raw: UnsafeMutablePointer<pthread_mutex_t> { mutex }
}

/// A value guarded by a `Lock`.
///
/// Never a function type as `Value` (`Locked<(() -> Void)?>`): use ``LockedAction``. With a
/// function type, every ``withLock(_:)``, even `{ $0 }`, which only reads, stores the closure
/// back wrapped in two more reabstraction thunks (see ``LockedAction``).
public final class Locked<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value

    /// Guards `value`.
    public init(_ value: Value) { self.value = value }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// A closure that is set in one place and called from others, guarded by a lock; called
/// outside it.
///
/// Not `Locked<(@Sendable () -> Void)?>`: a function type as a generic `Value` is held in the
/// generic (most abstract) representation, and `withLock`'s `inout` argument is converted to
/// the closure's own representation and back, so each `withLock { $0 }` stored the closure
/// wrapped in two more thunks of 32 bytes each. Every call leaked 64 bytes and ran two frames
/// deeper than the one before: a watch cache's progress hook, called at each node watch's
/// bookmark, grew an api-server by ~30 KB a second at 2,500 nodes (docs/benchmarks.md). Here
/// the closure sits in a struct, which is held as is.
public final class LockedAction: Sendable {
    private struct Action: Sendable {
        let run: @Sendable () -> Void
    }

    private let action: Locked<Action?>

    /// Holds `run` (nil: nothing to call yet).
    public init(_ run: (@Sendable () -> Void)? = nil) {
        action = Locked(nil)
        set(run)
    }

    /// Replaces the closure (nil: nothing to call).
    public func set(_ run: (@Sendable () -> Void)?) {
        let new: Action?
        if let run { new = Action(run: run) } else { new = nil }
        action.withLock { $0 = new }
    }

    /// Calls the closure, if one is set, after releasing the lock.
    public func callAsFunction() {
        action.withLock { $0 }?.run()
    }
}

/// A mutex with a condition variable whose timed waits use the monotonic clock (a wall-clock
/// step neither shortens nor stretches them).
public final class ConditionLock: @unchecked Sendable {
    private let mutex = Lock()
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    /// A new condition with its own mutex.
    public init() {
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if canImport(Glibc)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Takes the mutex.
    public func lock() { mutex.lock() }

    /// Releases the mutex.
    public func unlock() { mutex.unlock() }

    /// Runs `body` holding the mutex.
    public func withLock<R>(_ body: () throws -> R) rethrows -> R { try mutex.withLock(body) }

    /// Wakes every waiter. Call holding the mutex.
    public func broadcast() { pthread_cond_broadcast(condition) }

    /// Waits, holding the mutex, until woken or until `timeout` has passed; returns false on
    /// timeout. Spurious wake-ups happen: callers re-check their predicate.
    @discardableResult
    public func wait(timeout: Duration) -> Bool {
        var now = timespec()
        #if canImport(Glibc)
        clock_gettime(CLOCK_MONOTONIC, &now)
        #else
        clock_gettime(CLOCK_REALTIME, &now)
        #endif
        let (seconds, attoseconds) = max(timeout, .zero).components
        var nanoseconds = Int(now.tv_nsec) + Int(attoseconds / 1_000_000_000)
        var wholeSeconds = Int(now.tv_sec) + Int(min(seconds, Int64(Int32.max)))
        if nanoseconds >= 1_000_000_000 {
            nanoseconds -= 1_000_000_000
            wholeSeconds += 1
        }
        var deadline = timespec(tv_sec: wholeSeconds, tv_nsec: nanoseconds)
        return pthread_cond_timedwait(condition, mutex.raw, &deadline) == 0
    }
}
