/// CPU and memory: what a replica's container gets as engine limits and holds on its node, and
/// what a node offers. The scheduler and the node-agent both size a replica with
/// ``ReplicaSpec/resources(onNodeOf:in:)``, so what is accounted is what is enforced.
public struct ComputeResources: Codable, Sendable, Hashable, CustomStringConvertible {
    /// CPU in thousandths of a core (0.5 cores = 500).
    public var cpuMilli: Int
    /// Memory in MB (MiB, as the machine-type table counts: 1 GB = 1024 MB).
    public var memoryMB: Int

    /// Makes an amount.
    public init(cpuMilli: Int, memoryMB: Int) {
        self.cpuMilli = cpuMilli
        self.memoryMB = memoryMB
    }

    /// Nothing.
    public static let zero = ComputeResources(cpuMilli: 0, memoryMB: 0)

    /// A machine type's CPU and memory (for a GPU type: one GPU's share).
    public init(_ type: MachineType) {
        self.init(cpuMilli: type.cpuMilli, memoryMB: type.ramMB)
    }

    /// `n` times this.
    public func times(_ n: Int) -> ComputeResources {
        ComputeResources(cpuMilli: cpuMilli * n, memoryMB: memoryMB * n)
    }

    /// Memory in bytes, as engines take it.
    public var memoryBytes: Int64 { Int64(memoryMB) * 1024 * 1024 }

    /// `0.5 CPU, 512 MB`.
    public var description: String {
        let cores = cpuMilli % 1000 == 0 ? "\(cpuMilli / 1000)" : "\(Double(cpuMilli) / 1000)"
        return "\(cores) CPU, \(memoryMB) MB"
    }
}

extension MachineTypeTable {
    /// The CPU machine type a pod without a machine type gets: the smallest (XS).
    public var defaultCPUType: MachineType? {
        types.filter { $0.family == .cpu }.min { ($0.cpuMilli, $0.ramMB) < ($1.cpuMilli, $1.ramMB) }
    }

    /// The CPU machine type sizing a container whose pod names `names`: the first CPU type named
    /// (the others are accepted and ignored: a CPU type is a size, not a kind of host), else
    /// ``defaultCPUType``.
    public func cpuType(named names: [String]) -> MachineType? {
        names.lazy.compactMap { self.named($0) }.first { $0.family == .cpu } ?? defaultCPUType
    }

    /// The largest CPU machine type whose CPU and memory both fit in `capacity` (the name a
    /// CPU-only node registers with), or the smallest when none fits.
    public func largestCPUType(fitting capacity: ComputeResources) -> MachineType? {
        let cpu = types.filter { $0.family == .cpu }
        return cpu.filter { $0.cpuMilli <= capacity.cpuMilli && $0.ramMB <= capacity.memoryMB }
            .max { ($0.cpuMilli, $0.ramMB) < ($1.cpuMilli, $1.ramMB) } ?? defaultCPUType
    }
}

extension ReplicaSpec {
    /// Whether the replica holds whole GPUs of its own (Mode 1 and deployments), so that its
    /// CPU and memory are its node's GPU machine type's, per GPU.
    public var holdsWholeGPUs: Bool {
        (owner.kind == .deployment || mode == .dedicated) && gpus >= 1
    }

    /// What the replica's container gets (engine limits) and holds (scheduler accounting) on a
    /// node of machine type `nodeType`:
    ///
    /// - ``cpuMilli`` and ``memoryMB`` when the spec carries them (CPU pods, Mode 2/3 pods);
    /// - whole-GPU replicas (Mode 1, deployments): the node's GPU machine type's CPU and memory
    ///   times the GPUs held (GPU-H100 × 2 = 24 CPUs, 224 GB); nothing on a node whose type is
    ///   not a GPU type of the table;
    /// - anything else (replicas written before these fields): the table's ``MachineTypeTable/defaultCPUType``.
    public func resources(onNodeOf nodeType: String?, in table: MachineTypeTable = .standard) -> ComputeResources {
        if holdsWholeGPUs, cpuMilli == nil || memoryMB == nil {
            guard let type = nodeType.flatMap({ table.named($0) }), type.family == .gpu else { return .zero }
            return ComputeResources(type).times(gpus)
        }
        let fallback = table.defaultCPUType.map(ComputeResources.init) ?? .zero
        return ComputeResources(cpuMilli: cpuMilli ?? fallback.cpuMilli, memoryMB: memoryMB ?? fallback.memoryMB)
    }
}
