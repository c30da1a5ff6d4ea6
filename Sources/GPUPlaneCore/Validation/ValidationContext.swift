/// What validation checks against: the catalog, the machine types, the fleet's largest GPU,
/// and (when known) the tenant's plan and GPU limit.
public struct ValidationContext: Sendable {
    /// The model catalog.
    public var catalog: Catalog
    /// The machine-type table.
    public var machineTypes: MachineTypeTable
    /// The largest `gpu.memoryGB` the fleet can give (96 on the reference fleet).
    public var maxGPUMemoryGB: Int
    /// The tenant's plan; entitlement is not checked when nil.
    public var plan: Plan?
    /// The tenant's GPU limit.
    public var gpuLimit: Int

    /// The default largest GPU memory, per `reference/gpu-block-and-modes.txt`.
    public static let defaultMaxGPUMemoryGB = 96

    /// Makes a context.
    public init(
        catalog: Catalog, machineTypes: MachineTypeTable = .standard,
        maxGPUMemoryGB: Int = ValidationContext.defaultMaxGPUMemoryGB, plan: Plan? = nil,
        gpuLimit: Int = Tenant.defaultGPULimit
    ) {
        self.catalog = catalog
        self.machineTypes = machineTypes
        self.maxGPUMemoryGB = maxGPUMemoryGB
        self.plan = plan
        self.gpuLimit = gpuLimit
    }
}

/// The antipattern table of `reference/gpu-block-and-modes.txt`, one message per row, each
/// showing the right form. Used by the manifest reader for keys that have no place in a pod.
public enum Antipattern {
    /// The finding for `key` found where it does not belong, if it is a known antipattern.
    public static func forMisplacedKey(_ key: String, value: String?, inPodAt path: FieldPath) -> Diagnostic? {
        switch key {
        case "model":
            let slug = value ?? "llama-3.3-70b"
            return Diagnostic(
                .modelAtPodRoot, path: path["model"].description,
                "'model' does not belong at the pod root; request the model in the gpu block: "
                    + "gpu: {enabled: true, model: \(slug), priority: inference}")
        case "useGPU", "use_gpu", "usegpu":
            return Diagnostic(
                .useGPUDeprecated, path: path[key].description,
                "'\(key)' is deprecated; write gpu: {enabled: true, model: custom, memoryGB: 96} "
                    + "(or a catalog slug instead of custom)")
        default:
            return nil
        }
    }
}
