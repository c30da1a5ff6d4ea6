import GPUPlaneCore

/// Refuses cordoned nodes (`spec.unschedulable`): they keep what runs but take nothing new.
public struct NodeCordonFilter: NodeFilterPlugin {
    /// The node is cordoned.
    public static let cordoned = RefusalReason(code: "NodeCordoned", message: "node cordoned")

    public var name: String { "NodeCordon" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        node.cordoned ? Self.cordoned : nil
    }
}
