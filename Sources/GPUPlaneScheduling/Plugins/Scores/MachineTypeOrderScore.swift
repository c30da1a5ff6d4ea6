import GPUPlaneCore

/// For an ordered machine-type list, earlier types are preferred: with three types, the first
/// scores 100, the second 66, the third 33. With no list every node scores 100.
public struct MachineTypeOrderScore: ScorePlugin {
    public var name: String { "MachineTypeOrder" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        let n = context.typeListCount
        guard n > 0 else { return 100 }
        guard let rank = context.typeRank[node.typeID] else { return 0 }
        return 100 * (n - rank) / n
    }
}
