import GPUPlaneCore

/// Refuses nodes whose machine type isn't in the pod's ordered list, when it gives one.
/// The order itself is `MachineTypeOrderScore`'s business.
public struct MachineTypeFilter: NodeFilterPlugin {
    /// The node's machine type isn't one the pod allows.
    public static let notAllowed = RefusalReason(code: "MachineTypeNotAllowed", message: "machine type not requested")

    public var name: String { "MachineType" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        if request.machineTypes.isEmpty || request.machineTypes.contains(node.machineType) { return nil }
        return Self.notAllowed
    }
}
