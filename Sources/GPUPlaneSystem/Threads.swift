import CSystemShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Dedicated OS threads for loops that block in C (curl's multi poll, NVML's event wait,
/// lease keep-alives), kept off Swift's cooperative pool.
public enum SystemThread {
    /// Caps glibc's malloc arenas at `count` for the whole process. glibc's default is an arena
    /// per thread (up to eight per core), which costs resident pages in a daemon that allocates
    /// little. Call first thing in `main`.
    public static func limitMallocArenas(_ count: Int32) {
        _ = gp_set_malloc_arena_max(count)
    }

    /// Caps glibc's malloc arenas at `count` unless the operator set glibc's own
    /// `MALLOC_ARENA_MAX`, which then wins. For the daemons with many threads (the api-server,
    /// the scheduler): on a 16-core host glibc may make 128 arenas, each keeping the pages its
    /// threads freed; each thread's cache (tcache) still serves most small allocations without
    /// taking an arena's lock.
    public static func limitMallocArenasUnlessSet(_ count: Int32) {
        guard getenv("MALLOC_ARENA_MAX") == nil else { return }
        limitMallocArenas(count)
    }

    /// Starts a thread (`malloc-trim`) that hands freed heap memory back to the kernel every
    /// `interval` (glibc's `malloc_trim(0)`), for the life of the process. glibc returns only
    /// the top of a heap on `free`, so the pages of a burst (thousands of connections an
    /// api-server held while its peer was down, a scheduler's full relist) stay resident once
    /// freed, for good: 5,000 closed connections left an api-server at 121 MB where a trim
    /// brought it back to 36 MB. Pages trimmed and used again are faulted in again, at most
    /// once an interval. Call once, in `main`.
    public static func trimMallocPeriodically(every interval: Duration) {
        let (seconds, attoseconds) = interval.components
        let pause = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        start(name: "malloc-trim") {
            // A signal may end a pause early: one trim a little sooner, no harm.
            while true {
                var asked = pause
                nanosleep(&asked, nil)
                _ = gp_malloc_trim()
            }
        }
    }

    /// Starts a detached thread named `name` (the first 15 bytes show in `ps -L` and
    /// `/proc/<pid>/task/*/comm`) that runs `body` and exits.
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(ThreadStart(name: name, body: body)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t?
        #endif
        let result = pthread_create(&thread, &attributes, threadEntry, box)
        pthread_attr_destroy(&attributes)
        if result != 0 {
            // Out of threads is not recoverable for a daemon whose loops live on them.
            Unmanaged<ThreadStart>.fromOpaque(box).release()
            fatalError("pthread_create failed for \(name): \(result)")
        }
    }
}

/// What a new thread runs, handed over through `pthread_create`'s argument.
private final class ThreadStart: @unchecked Sendable {
    let name: String
    let body: @Sendable () -> Void

    init(name: String, body: @escaping @Sendable () -> Void) {
        self.name = name
        self.body = body
    }
}

#if canImport(Glibc)
private func threadEntry(_ argument: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    guard let argument else { return nil }
    let start = Unmanaged<ThreadStart>.fromOpaque(argument).takeRetainedValue()
    nameCurrentThread(start.name)
    start.body()
    return nil
}
#else
private func threadEntry(_ argument: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
    let start = Unmanaged<ThreadStart>.fromOpaque(argument).takeRetainedValue()
    nameCurrentThread(start.name)
    start.body()
    return nil
}
#endif

/// Names the calling thread.
private func nameCurrentThread(_ name: String) {
    _ = gp_set_thread_name(name)
}

/// The process's standard output.
public enum StandardOutput {
    /// Makes stdout line-buffered: a long run whose output goes to a file or pipe and that is
    /// killed part way leaves every line it printed (buffered in blocks otherwise, it left
    /// none). Call before anything is printed.
    public static func lineBuffered() {
        _ = gp_line_buffer_stdout()
    }
}
