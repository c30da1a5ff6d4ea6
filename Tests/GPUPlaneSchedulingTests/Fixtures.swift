import Foundation
import GPUPlaneCore
@testable import GPUPlaneScheduling

/// Small builders for nodes, replicas, servers and tenants.
enum Fixture {
    static let catalog: Catalog = {
        do { return try Catalog.standard() } catch { fatalError("the bundled catalog must load: \(error)") }
    }()

    static let pipeline = Pipeline(catalog: catalog)

    /// NVML-style memory sizes of the machine types used here.
    static func memoryMiB(_ type: String) -> Int {
        switch type {
        case "GPU-RTX4090": return 24_564
        case "GPU-RTX5090": return 32_607
        case "GPU-A100": return 40_960
        case "GPU-L40": return 46_068
        case "GPU-H100": return 81_559
        case "GPU-RTXPRO6000": return 97_887
        case "GPU-H200": return 143_771
        default: return 0
        }
    }

    static func node(
        _ name: String, mode: String? = "dedicated", type: String = "GPU-H100", gpus: Int = 8,
        ready: Bool = true, cordoned: Bool = false, unhealthy: Set<Int> = []
    ) -> Node {
        var labels: [String: String] = [Node.machineTypeLabel: type]
        if let mode { labels[Node.gpuModeLabel] = mode }
        let devices = (0..<gpus).map {
            GPUDevice(index: $0, uuid: "GPU-\(name)-\($0)", product: type, memoryMiB: memoryMiB(type))
        }
        return Node(
            metadata: ObjectMeta(name: name, labels: labels),
            spec: NodeSpec(machineType: type, gpus: devices, unschedulable: cordoned),
            status: NodeStatus(
                conditions: [Condition(type: "Ready", status: ready)],
                gpuHealth: devices.map { GPUHealth(uuid: $0.uuid, healthy: !unhealthy.contains($0.index)) }))
    }

    static func replica(
        _ name: String, tenant: String = "acme", owner: String? = nil, ownerKind: ResourceKind = .application,
        mode: GPUMode? = .dedicated, slug: String? = nil, gpus: Int = 1, vramGB: Int = 80,
        machineTypes: [String] = [], priority: GPUPriority = .inference, created: Date? = nil,
        binding: Binding? = nil, phase: ReplicaStatus.Phase = .pending
    ) -> Replica {
        Replica(
            metadata: ObjectMeta(name: name, tenant: tenant, uid: "uid-\(name)", created: created),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: ownerKind, name: owner ?? name, uid: "uid-\(owner ?? name)"),
                role: "main", mode: mode, modelSlug: slug, gpus: gpus, vramGB: vramGB,
                machineTypes: machineTypes, priority: priority, image: "img"),
            binding: binding, status: ReplicaStatus(phase: phase))
    }

    static func shared(
        _ name: String, slug: String = "llama-3.1-8b", tenant: String = "acme",
        priority: GPUPriority = .inference, binding: Binding? = nil
    ) -> Replica {
        replica(
            name, tenant: tenant, mode: .sharedPinned, slug: slug, gpus: 0, vramGB: 0, priority: priority,
            binding: binding, phase: binding == nil ? .pending : .running)
    }

    static func server(
        _ name: String, slug: String, node: String, gpu: Int, vramGB: Int, attached: [String] = []
    ) -> ModelServer {
        ModelServer(
            metadata: ObjectMeta(name: name), spec: .init(slug: slug, mode: .sharedPinned, vramGB: vramGB),
            binding: Binding(node: node, gpuIndices: [gpu]), status: .init(ready: true, attachedReplicas: attached))
    }

    static func tenant(_ name: String, limit: Int = Tenant.defaultGPULimit) -> Tenant {
        Tenant(metadata: ObjectMeta(name: name), spec: .init(plan: .enterprise, gpuLimit: limit))
    }

    static func snapshot(
        _ nodes: [Node], replicas: [Replica] = [], servers: [ModelServer] = [], tenants: [Tenant] = [],
        maxAttachments: Int = 8, seed: UInt64 = 1
    ) -> ClusterSnapshot {
        ClusterSnapshot(
            nodes: nodes, replicas: replicas, modelServers: servers, tenants: tenants,
            maxAttachmentsPerServer: maxAttachments, seed: seed)
    }

    static func request(_ replica: Replica) -> PlacementRequest {
        do { return try pipeline.request(for: replica) } catch { fatalError("\(error)") }
    }
}

extension Fixture {
    /// The state of one node built alone.
    static func state(_ node: Node) -> NodeState { snapshot([node]).nodes[0] }

    /// A Mode 1 request.
    static func dedicated(_ name: String = "r", gpus: Int = 1, vramGB: Int = 80, types: [String] = []) -> PlacementRequest {
        PlacementRequest(name: name, tenant: "acme", demand: .wholeGPUs(count: gpus, vramGB: vramGB), machineTypes: types)
    }
}
