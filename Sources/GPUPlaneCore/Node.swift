#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One GPU of a node, as NVML reports it.
public struct GPUDevice: Codable, Sendable, Hashable {
    /// The NVML index.
    public var index: Int
    /// The NVML UUID (`GPU-…`).
    public var uuid: String
    /// The product name, e.g. `NVIDIA H100 80GB HBM3`.
    public var product: String
    /// Total memory in MiB.
    public var memoryMiB: Int
    /// The PCI bus id.
    public var pciBusID: String?

    /// Makes a GPU.
    public init(index: Int, uuid: String, product: String, memoryMiB: Int, pciBusID: String? = nil) {
        self.index = index
        self.uuid = uuid
        self.product = product
        self.memoryMiB = memoryMiB
        self.pciBusID = pciBusID
    }

    /// Memory in whole GB (rounded), as machine types state it.
    public var memoryGB: Int { Int((Double(memoryMiB) / 1024).rounded()) }
}

/// A condition of a node or a GPU, in Kubernetes' habit.
public struct Condition: Codable, Sendable, Hashable {
    /// `Ready`, `GPUHealthy`, …
    public var type: String
    /// Whether it holds.
    public var status: Bool
    /// A CamelCase reason such as `HeartbeatExpired` or `Xid79`.
    public var reason: String?
    /// Words for a person.
    public var message: String?
    /// When `status` last changed.
    public var lastTransition: Date?

    /// Makes a condition.
    public init(type: String, status: Bool, reason: String? = nil, message: String? = nil, lastTransition: Date? = nil) {
        self.type = type
        self.status = status
        self.reason = reason
        self.message = message
        self.lastTransition = lastTransition
    }
}

/// What a node offers.
public struct NodeSpec: Codable, Sendable, Hashable {
    /// The machine type matched from its GPUs (or CPU size).
    public var machineType: String
    /// The GPUs.
    public var gpus: [GPUDevice]
    /// Cordoned: takes no new work.
    public var unschedulable: Bool
    /// The address the gateway reaches its containers on.
    public var address: String?
    /// The node's pod subnet (IPv4 CIDR, e.g. `10.251.3.0/24`): its pods' addresses, routed to
    /// ``address`` by the other nodes' agents (see docs/architecture.md, "Pod network"); nil
    /// when the node-agent runs no pod network.
    public var podSubnet: String? = nil
    /// CPU the node offers to replicas, in thousandths of a core: what its node-agent read from
    /// the host (online CPUs or the cgroup's quota, minus a reserve) or was configured with
    /// (`allocatable-cpu`). Nil (old agents, hollow nodes of benchmarks) means the node's CPU is
    /// not accounted: the scheduler's CPU check passes there (docs/architecture.md, "CPU and memory").
    public var allocatableCPUMilli: Int? = nil
    /// Memory the node offers to replicas, in MB (`MemTotal` or the cgroup's limit, minus a
    /// reserve, or `allocatable-memory`); nil means not accounted, like ``allocatableCPUMilli``.
    public var allocatableMemoryMB: Int? = nil
    /// The node-agent's own listener (`http(s)://<address>:<port>`, the agent's `port`), which
    /// the api-server reaches for container logs; nil when the agent runs none.
    public var agentURL: String? = nil

    /// Makes a spec.
    public init(machineType: String, gpus: [GPUDevice], unschedulable: Bool = false, address: String? = nil) {
        self.machineType = machineType
        self.gpus = gpus
        self.unschedulable = unschedulable
        self.address = address
    }
}

/// Health of one GPU.
public struct GPUHealth: Codable, Sendable, Hashable {
    /// The GPU's UUID.
    public var uuid: String
    /// Whether it takes work.
    public var healthy: Bool
    /// Why not, e.g. `Xid79`.
    public var reason: String?
    /// Memory in use, MiB.
    public var memoryUsedMiB: Int?
    /// Temperature in °C.
    public var temperatureC: Int?
    /// Power draw in W.
    public var powerW: Int?
    /// Utilisation in percent.
    public var utilizationPercent: Int?

    /// Makes a health record.
    public init(
        uuid: String, healthy: Bool, reason: String? = nil, memoryUsedMiB: Int? = nil,
        temperatureC: Int? = nil, powerW: Int? = nil, utilizationPercent: Int? = nil
    ) {
        self.uuid = uuid
        self.healthy = healthy
        self.reason = reason
        self.memoryUsedMiB = memoryUsedMiB
        self.temperatureC = temperatureC
        self.powerW = powerW
        self.utilizationPercent = utilizationPercent
    }
}

/// How a node is doing.
public struct NodeStatus: Codable, Sendable, Hashable {
    /// Node conditions (`Ready`).
    public var conditions: [Condition]
    /// Per-GPU health.
    public var gpuHealth: [GPUHealth]
    /// The last heartbeat.
    public var heartbeat: Date?
    /// Containers the agent runs.
    public var containers: Int

    /// Makes a status.
    public init(conditions: [Condition] = [], gpuHealth: [GPUHealth] = [], heartbeat: Date? = nil, containers: Int = 0) {
        self.conditions = conditions
        self.gpuHealth = gpuHealth
        self.heartbeat = heartbeat
        self.containers = containers
    }

    /// Whether the `Ready` condition holds.
    public var isReady: Bool { conditions.first { $0.type == "Ready" }?.status ?? false }

    /// The GPUs reported unhealthy, by UUID, with why (`unhealthy` when the report gives no
    /// reason). The one rule every reader of GPU health uses (the scheduler's snapshot, its
    /// evictions): a GPU is unhealthy when any report of its UUID says so. The api-server
    /// refuses a status that reports one UUID twice (``duplicateGPUReport``), so that matters
    /// only for what was stored before. Empty, and free, for a node whose GPUs are all healthy.
    public var unhealthyGPUs: [String: String] {
        guard gpuHealth.contains(where: { !$0.healthy }) else { return [:] }
        var unhealthy: [String: String] = [:]
        for report in gpuHealth where !report.healthy && unhealthy[report.uuid] == nil {
            unhealthy[report.uuid] = report.reason ?? "unhealthy"
        }
        return unhealthy
    }

    /// The position in ``gpuHealth`` of the first report of a UUID reported before, or nil.
    public var duplicateGPUReport: Int? {
        var seen = Set<String>()
        return gpuHealth.indices.first { !seen.insert(gpuHealth[$0].uuid).inserted }
    }
}

/// A GPU host. Its labels (in metadata) carry `gpu-mode=dedicated|large|shared|mixed` (mixed: Mode 1 and Mode 3, each GPU one or the other),
/// `gpuplane.io/machine-type` and `gpuplane.io/gpu-product`.
public struct Node: Resource, Hashable {
    public static let kind = ResourceKind.node
    /// The label naming the modes a node serves.
    public static let gpuModeLabel = "gpu-mode"
    /// The label naming the machine type.
    public static let machineTypeLabel = "gpuplane.io/machine-type"
    /// The label naming the GPU product.
    public static let gpuProductLabel = "gpuplane.io/gpu-product"
    /// The label the node-agent sets on a host without GPUs (NVML missing or no GPU):
    /// `gpuplane.io/node-kind=cpu`. Such a node takes CPU pods only.
    public static let nodeKindLabel = "gpuplane.io/node-kind"
    /// The value of ``nodeKindLabel`` on a CPU-only node.
    public static let cpuNodeKind = "cpu"

    /// The fields, boxed (``CopyOnWrite``): copies of a node share them until one changes.
    private var fields: CopyOnWrite<Fields>

    private struct Fields: Codable, Sendable, Hashable {
        var metadata: ObjectMeta
        var spec: NodeSpec
        var status: NodeStatus
    }

    /// Name and labels (`gpu-mode`, machine type, GPU product).
    public var metadata: ObjectMeta {
        _read { yield fields.value.metadata }
        _modify { yield &fields.value.metadata }
    }

    /// Its GPUs, machine type, address and what it can allocate.
    public var spec: NodeSpec {
        _read { yield fields.value.spec }
        _modify { yield &fields.value.spec }
    }

    /// Its conditions, GPU health and last heartbeat.
    public var status: NodeStatus {
        _read { yield fields.value.status }
        _modify { yield &fields.value.status }
    }

    /// Makes a node.
    public init(metadata: ObjectMeta, spec: NodeSpec, status: NodeStatus = .init()) {
        fields = CopyOnWrite(Fields(metadata: metadata, spec: spec, status: status))
    }

    /// Decodes the node's JSON (its fields at the top level).
    public init(from decoder: any Decoder) throws {
        fields = try CopyOnWrite(from: decoder)
    }

    /// Encodes the node's JSON (its fields at the top level).
    public func encode(to encoder: any Encoder) throws {
        try fields.encode(to: encoder)
    }
}
