import GPUPlaneCore

/// Spreads one application's or deployment's replicas over nodes: 100 on a node with none of
/// them, 50 with one, 33 with two, …
public struct OwnerSpreadScore: ScorePlugin {
    public var name: String { "OwnerSpread" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        100 / (1 + (context.ownerNodeCounts[nodePosition] ?? 0))
    }
}
