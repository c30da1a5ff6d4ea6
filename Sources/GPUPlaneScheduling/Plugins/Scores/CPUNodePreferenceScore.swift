import GPUPlaneCore

/// Sends CPU pods to CPU-only nodes first, so GPU hosts keep their spare CPU and memory for
/// GPU work: 100 on a CPU-only node, 0 on a GPU host. GPU requests score 100 everywhere.
public struct CPUNodePreferenceScore: ScorePlugin {
    public var name: String { "CPUNodePreference" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        guard context.request.isCPU else { return 100 }
        return node.isCPUOnly ? 100 : 0
    }
}
