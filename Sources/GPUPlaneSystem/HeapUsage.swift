import CSystemShim

/// What glibc's malloc holds now, over every arena.
public struct HeapUsage: Sendable, Equatable {
    /// Bytes of the chunks allocated now (mmapped ones included): live objects and buffers.
    public var inUse: Int
    /// Bytes of the free chunks malloc keeps for later; their pages stay resident until a
    /// trim (`memory-trim-interval`) hands the whole ones back.
    public var free: Int

    /// The process's heap now (glibc `mallinfo2`, which walks every arena under its lock).
    public static func current() -> HeapUsage {
        var inUse: UInt64 = 0
        var free: UInt64 = 0
        gp_heap_usage(&inUse, &free)
        return HeapUsage(inUse: Int(clamping: inUse), free: Int(clamping: free))
    }
}
