import GPUPlaneCore

/// Refuses nodes whose `gpu-mode` label doesn't admit the request's mode: Mode 1 and custom
/// LLM deployments need `dedicated`, Mode 2 `large`, Mode 3 `shared`; `mixed` admits Mode 1
/// and Mode 3 on one host.
public struct GPUModeFilter: NodeFilterPlugin {
    /// The node serves Mode 1 only.
    public static let modeIsDedicated = RefusalReason(code: "GPUModeDedicated", message: "gpu-mode is dedicated")
    /// The node serves Mode 2 only.
    public static let modeIsLarge = RefusalReason(code: "GPUModeLarge", message: "gpu-mode is large")
    /// The node serves Mode 3 only.
    public static let modeIsShared = RefusalReason(code: "GPUModeShared", message: "gpu-mode is shared")
    /// The node serves Mode 1 and Mode 3 only.
    public static let modeIsMixed = RefusalReason(code: "GPUModeMixed", message: "gpu-mode is mixed")
    /// The node has no `gpu-mode` label.
    public static let noModeLabel = RefusalReason(code: "GPUModeMissing", message: "no gpu-mode label")
    /// The label holds a value that is no mode.
    public static let unknownMode = RefusalReason(code: "GPUModeUnknown", message: "unknown gpu-mode")

    public var name: String { "GPUMode" }

    /// Makes the filter.
    public init() {}

    public func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason? {
        // A CPU pod uses no GPU: any node's mode (or none) admits it.
        guard let wanted = request.mode else { return nil }
        if node.admits(wanted) { return nil }
        guard let mode = node.gpuMode else {
            if node.gpuModeLabel == NodeState.mixedModeLabel { return Self.modeIsMixed }
            return node.gpuModeLabel == nil ? Self.noModeLabel : Self.unknownMode
        }
        return Self.reason(for: mode)
    }

    /// The reason naming what a node of `mode` serves instead.
    public static func reason(for mode: GPUMode) -> RefusalReason {
        switch mode {
        case .dedicated: return modeIsDedicated
        case .largePinned: return modeIsLarge
        case .sharedPinned: return modeIsShared
        }
    }
}
