import GPUPlaneCore

/// Prefers fuller GPUs for shared work (a new Mode 3 server goes where the GPU is most used
/// once it lands, so other GPUs stay whole), and fuller nodes for whole GPUs (so whole nodes
/// stay free for multi-GPU work).
public struct BinPackingScore: ScorePlugin {
    public var name: String { "BinPacking" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        switch assignment.kind {
        case .attach, .newSharedServer:
            guard assignment.gpuVRAMGB > 0 else { return 0 }
            return min(100, max(0, 100 * assignment.sharedAllocatedAfterGB / assignment.gpuVRAMGB))
        case .cpu:
            // CPU pods: the fuller node by CPU once placed (unaccounted nodes score 0).
            guard let allocatable = node.allocatable, allocatable.cpuMilli > 0 else { return 0 }
            let after = node.allocated.cpuMilli + context.request.resources(on: node).cpuMilli
            return min(100, max(0, 100 * after / allocatable.cpuMilli))
        case .wholeGPUs, .largeSlot, .attachLarge:
            guard !node.gpus.isEmpty else { return 0 }
            let used = node.gpus.count - assignment.nodeFreeWholeAfter
            return min(100, max(0, 100 * used / node.gpus.count))
        }
    }
}
