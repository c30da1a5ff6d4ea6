import GPUPlaneCore

/// Refuses CPU-only nodes (`gpuplane.io/node-kind=cpu`, or no GPUs) to everything but CPU pods.
public struct CPUOnlyNodeFilter: NodeFilterPlugin {
    /// The node has no GPU and the request wants one.
    public static let cpuOnly = RefusalReason(code: "CPUOnlyNode", message: "cpu-only node")

    public var name: String { "CPUOnlyNode" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        node.isCPUOnly && !request.isCPU ? Self.cpuOnly : nil
    }
}
