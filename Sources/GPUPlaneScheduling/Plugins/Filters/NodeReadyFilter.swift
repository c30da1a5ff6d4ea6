import GPUPlaneCore

/// Refuses nodes whose `Ready` condition doesn't hold (no heartbeat, agent down).
public struct NodeReadyFilter: NodeFilterPlugin {
    /// The node is not Ready.
    public static let notReady = RefusalReason(code: "NodeNotReady", message: "node not ready")

    public var name: String { "NodeReady" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        node.ready ? nil : Self.notReady
    }
}
