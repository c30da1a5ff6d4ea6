import GPUPlaneSystem
import Metrics

/// `memory-trim-interval`, a setting of the api-server and the scheduler: how often the daemon
/// hands freed heap memory back to the kernel (``SystemThread/trimMallocPeriodically(every:)``).
public enum MemoryTrim {
    /// The configuration key (30 s; 0: never; else at least 1 s).
    public static let key = ConfigurationKey(
        "memory-trim-interval", .duration, default: "30s",
        help: "how often freed heap memory is handed back to the kernel (glibc malloc_trim), so a burst's pages do not stay resident; at least 1s, 0: never")

    /// Starts trimming every ``key``'s interval, unless it is 0.
    /// - Throws: ``ConfigurationError`` when the value is not a duration, or is under a second
    ///   and not 0 (a trim walks every arena: done all the time it would only burn a core).
    public static func start(_ config: Configuration) throws {
        let interval = try config.duration(key.name) ?? .seconds(30)
        guard interval != .zero else { return }
        guard interval >= .seconds(1) else {
            throw ConfigurationError(
                code: .invalidValue, key: key.name, source: config.source(of: key.name),
                detail: "must be 0 (never) or at least 1s, not \(interval)")
        }
        SystemThread.trimMallocPeriodically(every: interval)
    }
}

/// The heap's gauges, read from glibc at a scrape: `gpuplane_process_heap_in_use_bytes` (the
/// bytes of live allocations) and `gpuplane_process_heap_free_bytes` (free chunks malloc
/// keeps). A resident set far above the first is memory held by the allocator, not by objects:
/// what `memory-trim-interval` hands back, or fragments it cannot.
///
/// A reading walks every free chunk of every arena under that arena's lock (glibc `mallinfo2`:
/// 13 ms per 100,000 free chunks on the 2-core machine of docs/benchmarks.md, while every
/// allocation in the arena waits), so scrapes closer together than ``maximumAge`` show the
/// last reading.
public enum HeapMetrics {
    private static let registered = Locked(false)
    private static let lastRead = Locked<ContinuousClock.Instant?>(nil)

    private static let age = Locked(Duration.seconds(30))

    /// How old a reading a scrape may show (30 s; tests set less).
    public static var maximumAge: Duration {
        get { age.withLock { $0 } }
        set { age.withLock { $0 = newValue } }
    }

    /// Registers the gauges (once per process; ``MetricsExporter/bootstrap()`` first).
    public static func register() {
        let first = registered.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let inUse = Gauge(label: "gpuplane_process_heap_in_use_bytes")
        let free = Gauge(label: "gpuplane_process_heap_free_bytes")
        MetricsExporter.beforeRender {
            let now = ContinuousClock.now
            let due = lastRead.withLock { last -> Bool in
                guard last.map({ now - $0 >= maximumAge }) ?? true else { return false }
                last = now
                return true
            }
            guard due else { return }
            let heap = HeapUsage.current()
            inUse.record(heap.inUse)
            free.record(heap.free)
        }
    }
}
