#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// Replays a GPU cluster trace through the real placement pipeline, with the protocol of Weng
/// et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
/// Gradient Descent" (USENIX ATC '23): tasks drawn at random from the trace are submitted one at
/// a time, each placed or dropped at once, until the GPU demand that arrived reaches the fleet's
/// GPU capacity; then the share of GPU capacity allocated tells how well the policy packed.
///
/// The mapping onto gpuplane:
/// - every trace node becomes a Ready node labelled `gpu-mode=mixed` (Mode 1 whole GPUs and
///   Mode 3 shared servers on one host, as the trace's hosts run both) of the machine type of
///   its GPU model (``gpuModels``), with the trace's CPU and memory as allocatable (MiB taken
///   as MB); nodes without GPUs become CPU-only nodes;
/// - a GPU-sharing task (`num_gpu` 1, `gpu_milli` < 1000) asks for a new Mode 3 server holding
///   its share of VRAM: `gpu_milli`/1000 of the smallest GPU it may use (the fleet's, or its
///   `gpu_spec` types'), rounded to the GB, at least 1 GB; its own slug, so nothing attaches;
/// - a task of whole GPUs (`gpu_milli` 1000) asks for `num_gpu` whole GPUs of any VRAM;
/// - a task without GPUs is a CPU pod;
/// - `cpu_milli`/`memory_mib` are the task's CPU and memory on its node; `gpu_spec` is its
///   ordered machine-type list;
/// - one tenant with no GPU limit; every task its own owner (no spreading).
///
/// GPUs are counted in the pipeline's own units: a GPU held whole is 1, a shared one
/// its allocated VRAM over its VRAM.
public struct TraceReplay: Sendable {
    /// A trace GPU model and the machine type it becomes.
    public struct GPUModel: Sendable, Hashable {
        /// The trace's name (`model`, `gpu_spec`).
        public let model: String
        /// The machine type's name.
        public let machineType: String
        /// VRAM of one GPU, GB.
        public let vramGB: Int
    }

    /// The trace's GPU models: the public cards with their VRAM; G1, G2 and G3 are Alibaba's
    /// undisclosed internal codes, given 16 GB (the fleet's common size, so a share of them is
    /// the trace's share to the GB).
    public static let gpuModels: [GPUModel] = [
        GPUModel(model: "P100", machineType: "GPU-P100", vramGB: 16),
        GPUModel(model: "T4", machineType: "GPU-T4", vramGB: 16),
        GPUModel(model: "V100M16", machineType: "GPU-V100-16GB", vramGB: 16),
        GPUModel(model: "V100M32", machineType: "GPU-V100-32GB", vramGB: 32),
        GPUModel(model: "A10", machineType: "GPU-A10", vramGB: 24),
        GPUModel(model: "G1", machineType: "GPU-G1", vramGB: 16),
        GPUModel(model: "G2", machineType: "GPU-G2", vramGB: 16),
        GPUModel(model: "G3", machineType: "GPU-G3", vramGB: 16),
    ]

    /// The trace's model names.
    public static var knownModels: Set<String> { Set(gpuModels.map(\.model)) }

    /// The standard machine types plus the trace's; the trace types carry no per-GPU CPU or
    /// memory share (the trace states each task's own).
    public static let machineTypes = MachineTypeTable(
        MachineTypeTable.standard.types + gpuModels.map {
            MachineType(name: $0.machineType, family: .gpu, vramGB: $0.vramGB, ramMB: 0, cpuMilli: 0)
        })

    /// A policy: a score list for the same pipeline.
    public enum Policy: String, Sendable, CaseIterable {
        /// Uniformly random feasible node.
        case randomFit = "random-fit"
        /// Least free CPU and GPU left.
        case bestFit = "best-fit"
        /// Partly used GPUs first, then used nodes, then idle ones.
        case gpuPacking = "gpu-packing"
        /// Fragmentation Gradient Descent against the trace's task shapes.
        case fgd = "fgd"
        /// gpuplane's scorers before fragmentation-aware scoring (``Pipeline/packingScores``).
        case gpuplanePacking = "gpuplane-packing"
        /// gpuplane's default scorers (``Pipeline/defaultScores``).
        case gpuplane = "gpuplane"
    }

    /// What one replay measured.
    public struct Result: Sendable {
        /// The policy.
        public let policy: Policy
        /// The seed of the draws.
        public let seed: UInt64
        /// GPUs in the fleet.
        public let gpus: Int
        /// GPU demand that arrived, in GPUs.
        public let arrivedGPUs: Double
        /// Tasks submitted.
        public let submitted: Int
        /// Tasks placed.
        public let bound: Int
        /// GPUs allocated at the end.
        public let allocatedGPUs: Double
        /// Seconds spent placing (the pipeline only).
        public let seconds: Double
        /// GPU demand dropped (no node fitted), by task class: `share`, `1`, `2`, `4`, `8`… GPUs;
        /// CPU tasks dropped under `cpu` (as tasks, they demand no GPU).
        public let dropped: [String: Double]

        /// Allocated GPUs over the fleet's.
        public var allocatedShare: Double { allocatedGPUs / Double(max(gpus, 1)) }
        /// GPUs left unallocated.
        public var unallocatedGPUs: Double { Double(gpus) - allocatedGPUs }
        /// Decisions (placed or dropped) per second.
        public var decisionsPerSecond: Double { Double(submitted) / max(seconds, 1e-9) }
    }

    /// The fleet replayed.
    public let nodes: [TraceNode]
    /// The tasks drawn from.
    public let tasks: [TraceTask]
    /// The GPU models of the fleet.
    let fleetModels: Set<String>

    /// A replay of `tasks` on `nodes`; with `sampleNodes`, on that many of the GPU nodes, drawn
    /// with a fixed seed (the same fleet for every policy and seed).
    public init(nodes: [TraceNode], tasks: [TraceTask], sampleNodes: Int? = nil) {
        var fleet = nodes
        if let k = sampleNodes, k < nodes.count {
            var generator = SplitMix64(seed: 0x7ace)
            fleet = Array(nodes.shuffled(using: &generator).prefix(max(1, k))).sorted { $0.name < $1.name }
        }
        self.nodes = fleet
        self.tasks = tasks
        self.fleetModels = Set(fleet.filter { $0.gpus > 0 }.map(\.model))
    }

    /// Reads the node and pod lists.
    public init(nodesFile: String, tasksFile: String, sampleNodes: Int? = nil) throws(TraceFileError) {
        self.init(
            nodes: try TraceFile.nodes(at: nodesFile, knownModels: Self.knownModels),
            tasks: try TraceFile.tasks(at: tasksFile, knownModels: Self.knownModels),
            sampleNodes: sampleNodes)
    }

    /// GPUs in the fleet.
    public var gpus: Int { nodes.reduce(0) { $0 + $1.gpus } }

    /// The fleet as gpuplane nodes.
    public func fleet() -> [Node] {
        let byModel = Dictionary(uniqueKeysWithValues: Self.gpuModels.map { ($0.model, $0) })
        return nodes.map { trace in
            var labels: [String: String] = [:]
            var type = "cpu"
            var devices: [GPUDevice] = []
            if trace.gpus > 0, let model = byModel[trace.model] {
                type = model.machineType
                labels[Node.gpuModeLabel] = NodeState.mixedModeLabel
                devices = (0..<trace.gpus).map {
                    GPUDevice(index: $0, uuid: "\(trace.name)-gpu\($0)", product: model.model, memoryMiB: model.vramGB * 1024)
                }
            } else {
                labels[Node.nodeKindLabel] = Node.cpuNodeKind
            }
            labels[Node.machineTypeLabel] = type
            var spec = NodeSpec(machineType: type, gpus: devices)
            spec.allocatableCPUMilli = trace.cpuMilli
            spec.allocatableMemoryMB = trace.memoryMiB
            return Node(
                metadata: ObjectMeta(name: trace.name, labels: labels), spec: spec,
                status: NodeStatus(conditions: [Condition(type: "Ready", status: true)]))
        }
    }

    /// The request a task becomes, the `draw`-th of a replay.
    public func request(for task: TraceTask, draw: Int) -> PlacementRequest {
        let name = "t\(draw)"
        let resources = ComputeResources(cpuMilli: task.cpuMilli, memoryMB: task.memoryMiB)
        let types = machineTypes(of: task)
        let demand: PlacementRequest.Demand
        if task.gpus == 0 {
            demand = .cpu(cpuMilli: task.cpuMilli, memoryMB: task.memoryMiB)
        } else if task.isSharing {
            demand = .shared(slug: "trace-\(draw)", vramGB: sharedVRAMGB(of: task))
        } else {
            demand = .wholeGPUs(count: task.gpus, vramGB: 0)
        }
        return PlacementRequest(
            name: name, tenant: Self.tenant, ownerKey: "\(Self.tenant)/task/\(name)", demand: demand,
            machineTypes: task.gpus == 0 ? [] : types, fixedResources: task.gpus == 0 ? nil : resources)
    }

    /// The VRAM a GPU-sharing task's server holds: its share of the smallest GPU it may use.
    public func sharedVRAMGB(of task: TraceTask) -> Int {
        let allowed = task.gpuSpec.isEmpty ? fleetModels : Set(task.gpuSpec)
        let reference = Self.gpuModels.filter { allowed.contains($0.model) }.map(\.vramGB).min()
            ?? Self.gpuModels.map(\.vramGB).min() ?? 16
        return max(1, Int((Double(task.gpuMilli) * Double(reference) / 1000).rounded()))
    }

    /// The trace's task shapes by popularity: FGD's target workload.
    public func traceWorkload() -> WorkloadProfile {
        var counts: [DemandShape: Double] = [:]
        for (i, task) in tasks.enumerated() where task.gpus > 0 {
            let request = request(for: task, draw: i)
            if let shape = DemandShape(request, cpuMilli: task.cpuMilli) { counts[shape, default: 0] += 1 }
        }
        return WorkloadProfile(counts.map { ($0.key, $0.value) })
    }

    /// The score list of `policy`.
    public func scores(for policy: Policy, seed: UInt64) -> [WeightedScore] {
        switch policy {
        case .randomFit: return [WeightedScore(RandomFitScore(seed: seed), weight: 1)]
        case .bestFit:
            return [WeightedScore(BestFitScore(
                maxCPUMilli: nodes.map(\.cpuMilli).max() ?? 1, maxGPUs: nodes.map(\.gpus).max() ?? 1), weight: 1)]
        case .gpuPacking: return [WeightedScore(GPUPackingScore(), weight: 1)]
        case .fgd: return [WeightedScore(FGDScore(workload: traceWorkload()), weight: 1)]
        case .gpuplanePacking: return Pipeline.packingScores
        case .gpuplane: return Pipeline.defaultScores
        }
    }

    /// Replays with `policy` and the draws of `seed`. Every node is scored for every task
    /// (`percentageOfNodesToScore` 100), as in the paper's simulator.
    public func run(_ policy: Policy, seed: UInt64) throws -> Result {
        let pipeline = Pipeline(
            catalog: try Catalog.standard(), machineTypes: Self.machineTypes,
            configuration: .init(percentageOfNodesToScore: 100), scores: scores(for: policy, seed: seed))
        let tenant = Tenant(metadata: ObjectMeta(name: Self.tenant), spec: .init(plan: .enterprise, gpuLimit: Int.max / 4))
        var snapshot = ClusterSnapshot(
            nodes: fleet(), replicas: [], modelServers: [], tenants: [tenant], machineTypes: Self.machineTypes,
            seed: seed)
        let capacity = Double(gpus)
        var generator = SplitMix64(seed: seed)
        var arrived = 0.0
        var submitted = 0
        var bound = 0
        var dropped: [String: Double] = [:]
        let clock = ContinuousClock()
        let start = clock.now
        while arrived < capacity, !tasks.isEmpty {
            let task = tasks[Int(generator.next() % UInt64(tasks.count))]
            arrived += task.gpuDemand
            if case .bound = pipeline.place(request(for: task, draw: submitted), in: &snapshot) {
                bound += 1
            } else {
                let key = task.gpus == 0 ? "cpu" : task.isSharing ? "share" : "\(task.gpus)"
                dropped[key, default: 0] += task.gpus == 0 ? 1 : task.gpuDemand
            }
            submitted += 1
        }
        let elapsed = clock.now - start
        return Result(
            policy: policy, seed: seed, gpus: gpus, arrivedGPUs: arrived, submitted: submitted, bound: bound,
            allocatedGPUs: Self.allocatedGPUs(snapshot),
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
            dropped: dropped)
    }

    /// GPUs allocated in `snapshot`: whole ones count 1, shared ones their allocated VRAM share.
    public static func allocatedGPUs(_ snapshot: ClusterSnapshot) -> Double {
        var total = 0.0
        for node in snapshot.nodes {
            for gpu in node.gpus where gpu.vramTotalGB > 0 {
                total += gpu.owner != nil ? 1 : Double(min(gpu.vramAllocatedGB, gpu.vramTotalGB)) / Double(gpu.vramTotalGB)
            }
        }
        return total
    }

    static let tenant = "trace"


    private func machineTypes(of task: TraceTask) -> [String] {
        task.gpuSpec.compactMap { model in Self.gpuModels.first { $0.model == model }?.machineType }
    }
}
