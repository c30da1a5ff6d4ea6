import GPUPlaneCore

/// Prefers the smallest GPU that fits (`reference/machine-types.txt`): a 20 GB need scores 83
/// on a 24 GB RTX 4090 and 25 on an 80 GB H100. Attaching to a running server (Mode 3) or
/// taking over an idle one (Mode 2) costs no new VRAM and scores 100.
public struct SmallestFitScore: ScorePlugin {
    public var name: String { "SmallestFit" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        if assignment.kind == .attach || assignment.kind == .attachLarge { return 100 }
        guard assignment.gpuVRAMGB > 0 else { return 0 }
        return min(100, max(0, 100 * context.request.vramGB / assignment.gpuVRAMGB))
    }
}
