import GPUPlaneCore

/// Refuses nodes without the CPU or memory the replica holds there (its CPU machine type's, or
/// its node's GPU machine type's share per whole GPU): allocatable minus what the replicas
/// bound there hold, never overcommitted. A CPU pod on a GPU host may use only what is left
/// once every GPU free to be given whole keeps its share (``NodeState/freeForCPUPods``), so CPU
/// pods never stand in the way of GPU work. Nodes that report no allocatable are not accounted
/// and pass. The pipeline runs it after the GPU fit (`Pipeline.resources`), so a node out of
/// GPUs is counted under the GPU reason.
public struct CPUMemoryFilter: NodeFilterPlugin {
    /// Not enough CPU free.
    public static let insufficientCPU = RefusalReason(code: "InsufficientCPU", message: "insufficient cpu")
    /// Not enough memory free.
    public static let insufficientMemory = RefusalReason(code: "InsufficientMemory", message: "insufficient memory")

    public var name: String { "CPUMemory" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        guard let free = request.isCPU ? node.freeForCPUPods : node.free else { return nil }
        let need = request.resources(on: node)
        if need.cpuMilli > free.cpuMilli { return Self.insufficientCPU }
        if need.memoryMB > free.memoryMB { return Self.insufficientMemory }
        return nil
    }
}
