import GPUPlaneCore

/// Refuses nodes with fewer healthy GPUs than the request could ever use there (one for
/// Mode 2 and 3, N for Mode 1): XID errors, ECC faults, lost GPUs.
public struct GPUHealthFilter: NodeFilterPlugin {
    /// Too few healthy GPUs.
    public static let unhealthy = RefusalReason(code: "GPUUnhealthy", message: "GPU unhealthy")

    public var name: String { "GPUHealth" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        node.healthyGPUs >= request.gpusNeeded ? nil : Self.unhealthy
    }
}
