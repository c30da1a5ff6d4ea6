import GPUPlaneCore

/// Refuses a request whose whole GPUs would take its tenant over its limit (default 4, as
/// `reference/custom-llm-deployments.txt` says). Mode 3 holds no whole GPU and always passes.
public struct TenantGPULimitFilter: RequestFilterPlugin {
    /// The tenant would hold more whole GPUs than it may.
    public static let limitReached = RefusalReason(code: "TenantGPULimit", message: "tenant GPU limit reached")

    public var name: String { "TenantGPULimit" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, in snapshot: ClusterSnapshot) -> RequestRefusal? {
        let wanted = request.wholeGPUs
        guard wanted > 0 else { return nil }
        let held = snapshot.wholeGPUsHeld(by: request.tenant)
        let limit = snapshot.gpuLimit(of: request.tenant)
        guard held + wanted > limit else { return nil }
        return RequestRefusal(
            Self.limitReached,
            detail: "\(request.tenant) holds \(held) of \(limit) whole GPUs, \(wanted) more wanted")
    }
}
