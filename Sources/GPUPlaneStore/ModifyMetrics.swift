import Metrics

/// How ``ResourceStore/modify(_:tenant:name:attempts:before:_:)``'s read-modify-writes were decided,
/// on `/metrics`: `gpuplane_store_modifies_total{read}`, `serializable` when the first read (from
/// the etcd member's applied state) was written back as it was, `linearizable` when a doubt was
/// settled by reading again (the object missing, the change refusing it, or its compare-and-swap
/// meeting a newer version). Many of the second kind mean the first read rarely helps: etcd
/// applying late, or writers racing on the same objects.
public enum ModifyMetrics {
    /// Which read decided a modify.
    public enum Read: String, CaseIterable, Sendable {
        /// The first, serializable read.
        case serializable
        /// A linearizable read after it.
        case linearizable
        /// Of those, a linearizable read that found the object already as the change would
        /// make it: nothing written (``ResourceStore/modifyIfChanged(_:tenant:name:attempts:before:_:)``).
        case unchanged
    }

    /// The counter of modifies decided by `read`.
    static func modifies(_ read: Read) -> Counter {
        switch read {
        case .serializable: return serializable
        case .linearizable: return linearizable
        case .unchanged: return unchanged
        }
    }

    private static let serializable = counter(.serializable)
    private static let linearizable = counter(.linearizable)
    private static let unchanged = counter(.unchanged)

    private static func counter(_ read: Read) -> Counter {
        Counter(label: "gpuplane_store_modifies_total", dimensions: [("read", read.rawValue)])
    }

    /// Creates the counters now, so `/metrics` shows them from the first scrape; call after
    /// `MetricsExporter.bootstrap()` in a process that modifies (the api-server).
    public static func register() {
        _ = (serializable, linearizable, unchanged)
    }
}
