#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// A micro-benchmark of the pipeline on a synthetic fleet, for `gpuplane-bench`.
///
/// The fleet: half the nodes `dedicated` (RTX 4090, L40, H100, H200), a fifth `large`
/// (RTX PRO 6000), the rest `shared` (RTX 4090, L40, H100), all Ready and healthy. The replicas:
/// 45% Mode 1 (1–2 GPUs of 20–80 GB, some with ordered machine types), 10% Mode 2, 40% Mode 3
/// (every shared slug and `auto`), 5% custom LLM deployments on `H100-80GB`/`A100-80GB`; four
/// tiers; one tenant per two replicas, each with the default limit of 4 whole GPUs.
public enum PlacementBenchmark {
    /// What one run measured.
    public struct Report: Sendable, CustomStringConvertible {
        /// Nodes in the fleet.
        public let nodes: Int
        /// GPUs in the fleet.
        public let gpus: Int
        /// Replicas offered.
        public let replicas: Int
        /// Replicas bound.
        public let bound: Int
        /// Replicas refused.
        public let refused: Int
        /// Seconds to build the snapshot.
        public let snapshotSeconds: Double
        /// Seconds to place the whole batch (resolving, ordering, filtering, scoring, committing).
        public let placementSeconds: Double

        /// Replicas decided (bound or refused) per second.
        public var placementsPerSecond: Double { Double(replicas) / max(placementSeconds, 1e-9) }

        public var description: String {
            let rate = Int(placementsPerSecond.rounded())
            let snapshotMs = Int((snapshotSeconds * 1000).rounded())
            let placeMs = Int((placementSeconds * 1000).rounded())
            return "\(nodes) nodes × \(gpus / max(nodes, 1)) GPUs, \(replicas) replicas: \(bound) bound, "
                + "\(refused) refused; snapshot \(snapshotMs) ms, placement \(placeMs) ms, \(rate) placements/s"
        }
    }

    /// Runs the benchmark once and returns placements per second.
    public static func run(nodes: Int, gpusPerNode: Int, replicas: Int, seed: UInt64 = 42) throws -> Double {
        try measure(nodes: nodes, gpusPerNode: gpusPerNode, replicas: replicas, seed: seed).placementsPerSecond
    }

    /// Runs the benchmark once with `scores` (the default scorers unless given) and returns the full report.
    public static func measure(
        nodes nodeCount: Int, gpusPerNode: Int, replicas replicaCount: Int, seed: UInt64 = 42,
        scores: [WeightedScore] = Pipeline.defaultScores
    ) throws -> Report {
        let catalog = try Catalog.standard()
        let pipeline = Pipeline(catalog: catalog, scores: scores)
        let fleet = (0..<nodeCount).map { node($0, gpus: gpusPerNode) }
        let sharedSlugs = catalog.models.filter { $0.mode == .sharedPinned }.map(\.slug) + [Catalog.auto]
        let largeSlugs = catalog.models.filter { $0.mode == .largePinned }.map(\.slug)
        let base = Date(timeIntervalSince1970: 1_700_000_000)
        var generator = SplitMix64(seed: seed)
        var pending: [Replica] = []
        pending.reserveCapacity(replicaCount)
        for i in 0..<replicaCount {
            let roll = Int(generator.next() % 100)
            let tier = GPUPriority.allCases[Int(generator.next() % 4)]
            let tenant = "tenant-\(i / 2)"
            let created = base.addingTimeInterval(Double(i))
            let spec: ReplicaSpec
            let owner = OwnerReference(kind: .application, name: "app-\(i / 4)", uid: "u\(i / 4)")
            switch roll {
            case 0..<45:
                let vram = [20, 40, 80][Int(generator.next() % 3)]
                let types = i % 5 == 0 ? ["GPU-H100", "GPU-H200"] : []
                spec = ReplicaSpec(
                    owner: owner, role: "main", mode: .dedicated, modelSlug: nil,
                    gpus: 1 + Int(generator.next() % 2), vramGB: vram, machineTypes: types,
                    priority: tier, image: "bench")
            case 45..<55:
                spec = ReplicaSpec(
                    owner: owner, role: "main", mode: .largePinned,
                    modelSlug: largeSlugs[Int(generator.next() % UInt64(largeSlugs.count))], gpus: 1,
                    vramGB: 96, machineTypes: [], priority: tier, image: "bench")
            case 55..<95:
                spec = ReplicaSpec(
                    owner: owner, role: "main", mode: .sharedPinned,
                    modelSlug: sharedSlugs[Int(generator.next() % UInt64(sharedSlugs.count))], gpus: 0,
                    vramGB: 0, machineTypes: [], priority: tier, image: "bench")
            default:
                spec = ReplicaSpec(
                    owner: OwnerReference(kind: .deployment, name: "dep-\(i / 3)", uid: "d\(i / 3)"),
                    role: "\(i % 3)", mode: nil, modelSlug: nil, gpus: 1, vramGB: 80,
                    machineTypes: ["H100-80GB", "A100-80GB"], priority: tier, image: "bench")
            }
            pending.append(Replica(
                metadata: ObjectMeta(name: "r-\(i)", tenant: tenant, uid: "r\(i)", created: created), spec: spec))
        }

        let clock = ContinuousClock()
        var snapshot: ClusterSnapshot?
        let buildTime = clock.measure {
            snapshot = ClusterSnapshot(nodes: fleet, replicas: [], modelServers: [], tenants: [], seed: seed)
        }
        guard var world = snapshot else { return Report(nodes: 0, gpus: 0, replicas: 0, bound: 0, refused: 0, snapshotSeconds: 0, placementSeconds: 0) }
        var result = BatchResult()
        let placeTime = clock.measure {
            result = pipeline.placeBatch(pending, in: &world)
        }
        let bound = result.boundCount
        return Report(
            nodes: nodeCount, gpus: nodeCount * gpusPerNode, replicas: replicaCount, bound: bound,
            refused: result.entries.count - bound, snapshotSeconds: seconds(buildTime),
            placementSeconds: seconds(placeTime))
    }

    private static func seconds(_ duration: Duration) -> Double {
        let parts = duration.components
        return Double(parts.seconds) + Double(parts.attoseconds) / 1e18
    }

    private static func node(_ i: Int, gpus: Int) -> Node {
        let (mode, type): (String, String)
        switch i % 10 {
        case 0, 1: (mode, type) = ("dedicated", "GPU-RTX4090")
        case 2: (mode, type) = ("dedicated", "GPU-L40")
        case 3: (mode, type) = ("dedicated", "GPU-H100")
        case 4: (mode, type) = ("dedicated", i % 20 == 4 ? "GPU-H200" : "GPU-A100-80GB")
        case 5, 6: (mode, type) = ("large", "GPU-RTXPRO6000")
        case 7: (mode, type) = ("shared", "GPU-RTX4090")
        case 8: (mode, type) = ("shared", "GPU-L40")
        default: (mode, type) = ("shared", "GPU-H100")
        }
        let memoryGB = MachineTypeTable.standard.named(type)?.vramGB ?? 0
        let devices = (0..<gpus).map {
            GPUDevice(index: $0, uuid: "GPU-\(i)-\($0)", product: type, memoryMiB: memoryGB * 1024)
        }
        let name = "node-\(i)"
        return Node(
            metadata: ObjectMeta(name: name, labels: [Node.gpuModeLabel: mode, Node.machineTypeLabel: type]),
            spec: NodeSpec(machineType: type, gpus: devices),
            status: NodeStatus(conditions: [Condition(type: "Ready", status: true)]))
    }
}
