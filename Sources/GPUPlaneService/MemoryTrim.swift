import GPUPlaneSystem

/// `memory-trim-interval`, a setting of the api-server and the scheduler: how often the daemon
/// hands freed heap memory back to the kernel (``SystemThread/trimMallocPeriodically(every:)``).
public enum MemoryTrim {
    /// The configuration key (30 s; 0: never).
    public static let key = ConfigurationKey(
        "memory-trim-interval", .duration, default: "30s",
        help: "how often freed heap memory is handed back to the kernel (glibc malloc_trim), so a burst's pages do not stay resident; 0: never")

    /// Starts trimming every ``key``'s interval, unless it is 0.
    /// - Throws: ``ConfigurationError`` when the value is not a duration.
    public static func start(_ config: Configuration) throws {
        let interval = try config.duration(key.name) ?? .seconds(30)
        guard interval > .zero else { return }
        SystemThread.trimMallocPeriodically(every: interval)
    }
}
