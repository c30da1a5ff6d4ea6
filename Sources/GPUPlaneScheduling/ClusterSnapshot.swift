#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// One GPU of a node as the scheduler sees it: what it has, who holds it, whether it works.
public struct GPUState: Sendable, Hashable {
    /// The NVML index.
    public let index: Int
    /// The NVML UUID.
    public let uuid: String
    /// Total VRAM, whole GB.
    public let vramTotalGB: Int
    /// VRAM taken: all of it when held whole, the packed servers' footprints when shared.
    public internal(set) var vramAllocatedGB: Int
    /// The replica key (`tenant/name`) holding the whole GPU, or `modelserver/<name>` for a
    /// Mode 2 server with no bound replica; nil when not held whole.
    public internal(set) var owner: String?
    /// Mode 3 model servers packed on it, by name.
    public internal(set) var sharedServers: [String]
    /// Whether it takes work (NVML health; no report counts as healthy).
    public let healthy: Bool

    /// VRAM still free, GB.
    public var vramFreeGB: Int { vramTotalGB - vramAllocatedGB }
    /// Free to be given whole: healthy, unowned, nothing packed on it.
    public var isFreeWhole: Bool { healthy && owner == nil && sharedServers.isEmpty }
    /// Can take a new shared server: healthy and not held whole.
    public var isShareable: Bool { healthy && owner == nil }
}

/// One node as the scheduler sees it.
public struct NodeState: Sendable {
    /// The node's name.
    public let name: String
    /// The raw `gpu-mode` label, if any.
    public let gpuModeLabel: String?
    /// The mode the label admits; nil when the label is missing, unknown, or `mixed`.
    public let gpuMode: GPUMode?
    /// The modes the label admits, one bit per ``GPUMode/rawValue``: the one of `gpuMode`, or
    /// Mode 1 and Mode 3 for `gpu-mode=mixed` (whole GPUs and shared servers on one host).
    let modeMask: UInt8
    /// The canonical machine-type name.
    public let machineType: String
    /// The `Ready` condition.
    public let ready: Bool
    /// Cordoned: takes no new work.
    public let cordoned: Bool
    /// The GPUs, by NVML index.
    public internal(set) var gpus: [GPUState]
    /// GPUs NVML calls healthy.
    public let healthyGPUs: Int
    /// Interned machine type, for cheap comparisons.
    let typeID: Int
    /// CPU and memory the node offers (``NodeSpec/allocatableCPUMilli``/``NodeSpec/allocatableMemoryMB``);
    /// nil when it reports none: then CPU and memory are not accounted there and always fit.
    public let allocatable: ComputeResources?
    /// CPU and memory held by the replicas bound to it.
    public internal(set) var allocated: ComputeResources
    /// One GPU's share of CPU and memory: its GPU machine type's (zero when the type is no GPU type).
    public let gpuShare: ComputeResources
    /// A CPU-only node (`gpuplane.io/node-kind=cpu`, or no GPUs): it takes CPU pods only.
    public let isCPUOnly: Bool
    /// GPUs held by whole-GPU replicas (Mode 1, deployments), which hold their GPU's share of
    /// CPU and memory in ``allocated``; every other GPU (free, or a model server's) keeps its
    /// share from CPU pods.
    public internal(set) var gpusHoldingTheirShare: Int = 0
    /// Its fragmentation relative to ``ClusterSnapshot/workload``, thousandths of a GPU
    /// (``WorkloadProfile/fragmentation(of:after:cpuMilli:vramGB:)``), kept current by the snapshot.
    public internal(set) var fragmentation: Double = 0

    /// The `gpu-mode` label value of a host that takes both Mode 1 whole GPUs and Mode 3 shared
    /// servers (a GPU is either given whole or shared, never both).
    public static let mixedModeLabel = "mixed"

    /// Whether the node's `gpu-mode` label admits `mode`.
    public func admits(_ mode: GPUMode) -> Bool { modeMask & (1 << UInt8(mode.rawValue)) != 0 }

    /// The modes a `gpu-mode` label value admits, as a bit mask.
    static func modeMask(label: String?) -> UInt8 {
        if label == mixedModeLabel {
            return 1 << UInt8(GPUMode.dedicated.rawValue) | 1 << UInt8(GPUMode.sharedPinned.rawValue)
        }
        guard let mode = GPUMode.allCases.first(where: { $0.nodeLabel == label }) else { return 0 }
        return 1 << UInt8(mode.rawValue)
    }

    /// GPUs free to be given whole.
    public var freeWholeGPUs: Int {
        var n = 0
        for gpu in gpus where gpu.isFreeWhole { n += 1 }
        return n
    }

    /// CPU and memory still free for work of a GPU (allocatable minus allocated); nil when not accounted.
    public var free: ComputeResources? {
        allocatable.map { ComputeResources(cpuMilli: $0.cpuMilli - allocated.cpuMilli, memoryMB: $0.memoryMB - allocated.memoryMB) }
    }

    /// CPU and memory free for a CPU pod: on a GPU host, only what is left once each GPU that
    /// no whole-GPU replica holds (free ones, and model servers', whose containers hold no
    /// accounted CPU or memory) keeps its share, so CPU pods never stand in the way of GPU work.
    public var freeForCPUPods: ComputeResources? {
        guard let free else { return nil }
        let kept = gpuShare.times(max(0, gpus.count - gpusHoldingTheirShare))
        return ComputeResources(cpuMilli: free.cpuMilli - kept.cpuMilli, memoryMB: free.memoryMB - kept.memoryMB)
    }

    /// The position in `gpus` of the GPU with NVML index `index`.
    func position(ofGPU index: Int) -> Int? {
        if index >= 0, index < gpus.count, gpus[index].index == index { return index }
        return gpus.firstIndex { $0.index == index }
    }
}

/// A model server as the scheduler sees it.
public struct ModelServerState: Sendable, Hashable {
    /// The server's name.
    public let name: String
    /// The slug it serves.
    public let slug: String
    /// Mode 2 or Mode 3.
    public let mode: GPUMode
    /// VRAM it holds, GB.
    public let vramGB: Int
    /// Its node's position in `ClusterSnapshot.nodes`.
    public let node: Int
    /// Its GPU's NVML index.
    public let gpuIndex: Int
    /// Replica keys attached to it (bound by the scheduler): Mode 3 tenants, or the one
    /// replica holding a Mode 2 server's slot.
    public internal(set) var attached: [String]
    /// Attachments its status reports, which may include ones the snapshot hasn't seen.
    public internal(set) var reportedAttachments: Int
    /// Stopped in this snapshot (preempted).
    public internal(set) var stopped: Bool
    /// Its status says it answers (`/v1/models`); preferred when attaching to an idle Mode 2 server.
    public internal(set) var ready: Bool

    /// Tenants attached.
    public var attachments: Int { max(attached.count, reportedAttachments) }

    /// The GPU owner a Mode 2 server stands for while no replica holds its slot.
    var slotOwner: String { "modelserver/\(name)" }
}

/// A replica holding capacity in the snapshot.
struct HeldReplica: Sendable {
    var key: String
    var name: String
    var tenant: String
    var ownerKey: String
    var priority: GPUPriority
    var node: Int?
    var gpuIndices: [Int]
    var wholeGPUs: Int
    var server: Int?
    /// CPU and memory it holds on `node`.
    var resources: ComputeResources = .zero
    /// GPUs of its node whose share it holds (whole-GPU replicas).
    var shareGPUs = 0
    /// What it holds, as the fragmentation measure counts it (nil: a CPU pod).
    var shape: DemandShape?
}

/// Nodes sharing a `gpu-mode` and a machine type, visited together.
struct NodeGroup: Sendable {
    var typeID: Int
    var typeName: String
    var vramGB: Int
    var nodes: [Int]
}

/// The part of a ``ClusterSnapshot`` made from the nodes alone: their states with nothing held
/// on them, the groups pipelines visit and the CPU pods' visiting order. It is the same for
/// every snapshot while no node changes (a burst of placements changes replicas, not nodes), so
/// the leader keeps it from one pass to the next (``ClusterSnapshot/init(nodes:replicas:modelServers:tenants:machineTypes:maxAttachmentsPerServer:seed:reusing:)``).
public struct SnapshotNodeBase: Sendable {
    /// The nodes' names and resourceVersions, in the order given.
    let names: [String]
    let versions: [String]
    let seed: UInt64
    let states: [NodeState]
    let typeNames: [String]
    let nodeIndex: [String: Int]
    let groupsByMode: [GPUMode: [NodeGroup]]
    let cpuVisitOrder: [Int]

    /// Whether it was made from `nodes` as they are now (the same names, in the same order, at
    /// the same resourceVersions) with `seed`. Never for nodes without a resourceVersion.
    func matches(_ nodes: [Node], seed: UInt64) -> Bool {
        guard seed == self.seed, nodes.count == names.count else { return false }
        for i in nodes.indices {
            let version = nodes[i].metadata.resourceVersion
            guard !version.isEmpty, version == versions[i], nodes[i].metadata.name == names[i] else { return false }
        }
        return true
    }

    init(nodes: [Node], table: MachineTypeTable, seed: UInt64) {
        self.names = nodes.map(\.metadata.name)
        self.versions = nodes.map(\.metadata.resourceVersion)
        self.seed = seed
        // Nodes, with machine types interned and GPUs' health joined by UUID.
        var typeIDs: [String: Int] = [:]
        var typeNames: [String] = []
        var typeVRAM: [Int] = []
        var states: [NodeState] = []
        states.reserveCapacity(nodes.count)
        for position in ClusterSnapshot.order(nodes, by: { $0.metadata.name }) {
            let node = nodes[position]
            let rawType = node.metadata.labels[Node.machineTypeLabel] ?? node.spec.machineType
            let typeName = table.named(rawType)?.name ?? rawType
            let typeID: Int
            if let id = typeIDs[typeName] {
                typeID = id
            } else {
                typeID = typeNames.count
                typeIDs[typeName] = typeID
                typeNames.append(typeName)
                typeVRAM.append(
                    table.named(typeName)?.vramGB ?? node.spec.gpus.map(\.memoryGB).max() ?? 0)
            }
            // Empty (and not built) for a node whose GPUs are all healthy: most of thousands.
            let unhealthy = node.status.unhealthyGPUs
            let devices = node.spec.gpus
            let inOrder = zip(devices, devices.dropFirst()).allSatisfy { $0.index <= $1.index }
            let gpus = (inOrder ? devices : devices.sorted { $0.index < $1.index }).map { device in
                GPUState(
                    index: device.index, uuid: device.uuid, vramTotalGB: device.memoryGB,
                    vramAllocatedGB: 0, owner: nil, sharedServers: [],
                    healthy: unhealthy[device.uuid] == nil)
            }
            let label = node.metadata.labels[Node.gpuModeLabel]
            var allocatable: ComputeResources?
            if node.spec.allocatableCPUMilli != nil || node.spec.allocatableMemoryMB != nil {
                // One of the two reported: the other is not accounted (no limit from it).
                allocatable = ComputeResources(
                    cpuMilli: node.spec.allocatableCPUMilli ?? Int.max / 4,
                    memoryMB: node.spec.allocatableMemoryMB ?? Int.max / 4)
            }
            let gpuType = table.named(typeName).flatMap { $0.family == .gpu ? $0 : nil }
            states.append(NodeState(
                name: node.metadata.name, gpuModeLabel: label,
                gpuMode: GPUMode.allCases.first { $0.nodeLabel == label },
                modeMask: NodeState.modeMask(label: label),
                machineType: typeName, ready: node.status.isReady,
                cordoned: node.spec.unschedulable, gpus: gpus,
                healthyGPUs: gpus.reduce(0) { $0 + ($1.healthy ? 1 : 0) }, typeID: typeID,
                allocatable: allocatable, allocated: .zero,
                gpuShare: gpuType.map(ComputeResources.init) ?? .zero,
                isCPUOnly: node.metadata.labels[Node.nodeKindLabel] == Node.cpuNodeKind || gpus.isEmpty))
        }
        self.states = states
        self.typeNames = typeNames
        self.nodeIndex = Dictionary(
            states.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })

        // Groups of (mode, machine type), smallest VRAM first, each in a seeded shuffled order.
        var groups: [GPUMode: [Int: [Int]]] = [:]
        for (i, node) in states.enumerated() {
            for mode in GPUMode.allCases where node.admits(mode) {
                groups[mode, default: [:]][node.typeID, default: []].append(i)
            }
        }
        var generator = SplitMix64(seed: seed)
        var byMode: [GPUMode: [NodeGroup]] = [:]
        for mode in GPUMode.allCases {
            let members = groups[mode] ?? [:]
            byMode[mode] = members.keys.sorted {
                (typeVRAM[$0], typeNames[$0]) < (typeVRAM[$1], typeNames[$1])
            }.map { id in
                var nodes = members[id] ?? []
                nodes.shuffle(using: &generator)
                return NodeGroup(typeID: id, typeName: typeNames[id], vramGB: typeVRAM[id], nodes: nodes)
            }
        }
        self.groupsByMode = byMode
        var cpuOnly = states.indices.filter { states[$0].isCPUOnly }
        var others = states.indices.filter { !states[$0].isCPUOnly }
        cpuOnly.shuffle(using: &generator)
        others.shuffle(using: &generator)
        self.cpuVisitOrder = cpuOnly + others
    }
}

/// The world as the pipeline sees it: nodes with per-GPU state, model servers, what each
/// tenant holds and may hold. Built once from the store's objects, then updated in place after
/// every bind so that a batch of placements never re-reads the world.
public struct ClusterSnapshot: Sendable {
    /// Nodes, sorted by name (so a snapshot of the same objects is the same, whatever their order).
    public internal(set) var nodes: [NodeState]
    /// Model servers, running or placed in this snapshot.
    public internal(set) var modelServers: [ModelServerState]
    /// Tenants attached to one Mode 3 server at most.
    public let maxAttachmentsPerServer: Int
    /// The seed of every shuffle: the same snapshot and seed place the same way.
    public let seed: UInt64
    /// Placements committed to this snapshot so far.
    public internal(set) var placementsCommitted: Int

    /// The part made from the nodes alone, for the next snapshot's `reusing:`.
    public let nodeBase: SnapshotNodeBase
    var nodeIndex: [String: Int]
    var typeNames: [String]
    var groupsByMode: [GPUMode: [NodeGroup]]
    /// The order CPU pods visit nodes in: CPU-only nodes first, then the others, each part in
    /// a seeded shuffled order.
    var cpuVisitOrder: [Int]
    var serverIndex: [String: Int]
    /// slug → servers with room for another attachment.
    var openServers: [String: [Int]]
    /// slug → Mode 2 servers no replica holds (a warm pool's, or one whose replica left):
    /// candidates a Mode 2 replica of the slug takes over before a new slot is started,
    /// re-checked when used (``GPUFit/attachLarge(_:server:serverID:node:)``).
    var idleLargeServers: [String: [Int]]
    /// slug → every server of the slug.
    var serversBySlug: [String: [Int]]
    var held: [String: HeldReplica]
    var tenantGPUs: [String: Int]
    var tenantLimits: [String: Int]
    /// owner key → node position → replicas of that owner on it.
    var ownerNodeCounts: [String: [Int: Int]]
    /// Replicas held per demand shape: the workload fragmentation is measured against.
    var demandCounts: [DemandShape: Int] = [:]
    /// Replicas counted in `demandCounts`.
    var demandTotal = 0
    /// Requests refused in this snapshot and not placed since, with their shapes: they count in
    /// the workload as much as the held ones (work that waits is work the fleet must fit).
    var waiting: [String: DemandShape] = [:]
    /// Changes to `demandCounts` since `workload` was last rebuilt.
    var demandChanges = 0

    /// The workload the held and waiting replicas make up, each shape weighted by how many hold
    /// it (and smoothed towards heavier CPU, ``rebuildWorkload()``); rebuilt once the counts
    /// moved by 1/64 of their total (a distribution, not a ledger).
    public private(set) var workload = WorkloadProfile([])

    /// Counts `shape` held (`by` 1) or released (`by` −1).
    mutating func countDemand(_ shape: DemandShape?, by change: Int) {
        guard let shape else { return }
        let count = (demandCounts[shape] ?? 0) + change
        demandCounts[shape] = count > 0 ? count : nil
        demandTotal += change
        demandChanges += 1
        if demandChanges >= max(1, demandTotal / 64) { rebuildWorkload() }
    }

    /// Counts a refused request in the workload, once per request until it is placed.
    mutating func noteWaiting(_ request: PlacementRequest) {
        guard waiting[request.key] == nil,
            let shape = DemandShape(request, cpuMilli: request.fixedResources?.cpuMilli ?? 0)
        else { return }
        waiting[request.key] = shape
        countDemand(shape, by: 1)
    }

    mutating func rebuildWorkload() {
        // Each shape also counts a tenth at twice and at four times its CPU: the shapes seen so
        // far are a sample, and a rare CPU-heavy task that finds a node's CPU taken strands its
        // free GPUs; without these, CPU pods go wherever CPU is left (measured on the Alibaba
        // trace: 4 points of GPU capacity, docs/benchmarks.md).
        var weights: [(DemandShape, Double)] = []
        weights.reserveCapacity(demandCounts.count * 3)
        for (shape, count) in demandCounts {
            weights.append((shape, Double(count)))
            guard shape.cpuMilli > 0 else { continue }
            for factor in [2, 4] {
                var heavier = shape
                heavier.cpuMilli *= factor
                weights.append((heavier, Double(count) * 0.1))
            }
        }
        workload = WorkloadProfile(weights)
        demandChanges = 0
        for n in nodes.indices { refreshFragmentation(n) }
    }

    /// Measures node `n` again against the workload after it changed.
    mutating func refreshFragmentation(_ n: Int) {
        nodes[n].fragmentation = workload.fragmentation(of: nodes[n])
    }

    /// The positions of `items` in the order of `key`, equal keys in their given order (the
    /// objects themselves are not moved: a Node or Replica is large); no sort when they are in
    /// order already (the informers list nodes by name). Each key is read once: a comparison
    /// that read `items[a]` copied the whole object (a Replica retains dozens of references),
    /// twenty thousand times a pass for 1,000 replicas, which the informers list by tenant first.
    static func order<T>(_ items: [T], by key: (T) -> String) -> [Int] {
        let keys = items.map(key)
        if keys.indices.dropFirst().allSatisfy({ keys[$0 - 1] <= keys[$0] }) { return Array(items.indices) }
        return keys.indices.sorted { a, b in keys[a] < keys[b] || (keys[a] == keys[b] && a < b) }
    }

    /// Builds a snapshot. Replicas that ``Replica/holdsCapacity`` (bound, and not preempted or
    /// terminating: a `failed` one waiting out its restart backoff still holds its GPUs) hold
    /// what they are bound to; pending ones are ignored here and placed by the pipeline.
    /// Tenants not listed get `Tenant.defaultGPULimit`.
    ///
    /// `reusing`: the ``nodeBase`` of an earlier snapshot built with the same machine-type
    /// table; used when it was made from the same nodes at the same resourceVersions and seed
    /// (the nodes' states, groups and visiting orders are then not built again).
    public init(
        nodes: [Node], replicas: [Replica], modelServers: [ModelServer], tenants: [Tenant],
        machineTypes table: MachineTypeTable = .standard, maxAttachmentsPerServer: Int = 8,
        seed: UInt64 = 0, reusing: SnapshotNodeBase? = nil
    ) {
        self.maxAttachmentsPerServer = max(1, maxAttachmentsPerServer)
        self.seed = seed
        self.placementsCommitted = 0
        self.modelServers = []
        self.serverIndex = [:]
        self.openServers = [:]
        self.idleLargeServers = [:]
        self.serversBySlug = [:]
        self.held = [:]
        self.tenantGPUs = [:]
        self.ownerNodeCounts = [:]
        self.tenantLimits = Dictionary(
            tenants.map { ($0.metadata.name, $0.spec.gpuLimit) }, uniquingKeysWith: { _, last in last })

        // Nodes: kept from the previous snapshot while none changed.
        let base = reusing.flatMap { $0.matches(nodes, seed: seed) ? $0 : nil }
            ?? SnapshotNodeBase(nodes: nodes, table: table, seed: seed)
        self.nodeBase = base
        self.nodes = base.states
        self.typeNames = base.typeNames
        self.nodeIndex = base.nodeIndex
        self.groupsByMode = base.groupsByMode
        self.cpuVisitOrder = base.cpuVisitOrder

        // Model servers first, so replicas can attach to them.
        for position in Self.order(modelServers, by: { $0.metadata.name }) {
            let server = modelServers[position]
            guard let binding = server.binding, let n = nodeIndex[binding.node],
                let gpuIndex = binding.gpuIndices.first, let p = self.nodes[n].position(ofGPU: gpuIndex)
            else { continue }
            let id = registerServer(
                name: server.metadata.name, slug: server.spec.slug, mode: server.spec.mode,
                vramGB: server.spec.vramGB, node: n, gpuPosition: p, gpuIndex: gpuIndex)
            self.modelServers[id].reportedAttachments = server.status.attachedReplicas.count
            self.modelServers[id].ready = server.status.ready
        }

        // Bound replicas hold their GPUs, count against their tenant and their owner's spread.
        for position in Self.order(replicas, by: { $0.metadata.name }) {
            let replica = replicas[position]
            guard replica.holdsCapacity, let binding = replica.binding else { continue }
            let tenant = replica.metadata.tenant
            let key = "\(tenant)/\(replica.metadata.name)"
            let attaches = replica.spec.mode == .sharedPinned && replica.spec.owner.kind != .deployment
            let n = nodeIndex[binding.node]
            var record = HeldReplica(
                key: key, name: replica.metadata.name, tenant: tenant,
                ownerKey: PlacementRequest.ownerKey(tenant: tenant, owner: replica.spec.owner),
                priority: replica.spec.priority, node: n, gpuIndices: binding.gpuIndices,
                wholeGPUs: attaches ? 0 : binding.gpuIndices.count, server: nil)
            if let n {
                // CPU and memory, sized as the node-agent sizes the container.
                record.resources = replica.spec.resources(onNodeOf: self.nodes[n].machineType, in: table)
                self.nodes[n].allocated.add(record.resources)
                if replica.spec.holdsWholeGPUs {
                    record.shareGPUs = binding.gpuIndices.count
                    self.nodes[n].gpusHoldingTheirShare += record.shareGPUs
                }
            }
            if attaches {
                if let name = binding.modelServer, let id = serverIndex[name] {
                    record.server = id
                    self.modelServers[id].attached.append(key)
                }
            } else if let n {
                for index in binding.gpuIndices {
                    guard let p = self.nodes[n].position(ofGPU: index) else { continue }
                    self.nodes[n].gpus[p].owner = key
                    self.nodes[n].gpus[p].vramAllocatedGB = self.nodes[n].gpus[p].vramTotalGB
                }
                // A Mode 2 replica holds its server's slot.
                if replica.spec.mode == .largePinned, replica.spec.owner.kind != .deployment,
                    let name = binding.modelServer, let id = serverIndex[name]
                {
                    record.server = id
                    self.modelServers[id].attached.append(key)
                }
            }
            tenantGPUs[tenant, default: 0] += record.wholeGPUs
            if let n { ownerNodeCounts[record.ownerKey, default: [:]][n, default: 0] += 1 }
            record.shape = Self.shape(of: replica, record: record, servers: self.modelServers, table: table)
            if let shape = record.shape {
                demandCounts[shape, default: 0] += 1
                demandTotal += 1
            }
            held[key] = record
        }
        rebuildWorkload()
        for (slug, ids) in serversBySlug {
            openServers[slug] = ids.filter {
                self.modelServers[$0].mode == .sharedPinned
                    && self.modelServers[$0].attachments < self.maxAttachmentsPerServer
            }
            let idle = ids.filter { self.modelServers[$0].mode == .largePinned && self.modelServers[$0].attached.isEmpty }
            if !idle.isEmpty { idleLargeServers[slug] = idle }
        }
    }

    // MARK: Reading

    /// The node called `name`.
    public func node(named name: String) -> NodeState? { nodeIndex[name].map { nodes[$0] } }

    /// The model server called `name`.
    public func modelServer(named name: String) -> ModelServerState? {
        serverIndex[name].map { modelServers[$0] }
    }

    /// Whole GPUs `tenant` holds now (Mode 1, Mode 2 and deployments; Mode 3 holds none).
    public func wholeGPUsHeld(by tenant: String) -> Int { tenantGPUs[tenant] ?? 0 }

    /// The most whole GPUs `tenant` may hold.
    public func gpuLimit(of tenant: String) -> Int { tenantLimits[tenant] ?? Tenant.defaultGPULimit }

    /// Replicas of `ownerKey` (`tenant/kind/name`) on the node at `node`.
    public func replicas(ofOwner ownerKey: String, onNode node: Int) -> Int {
        ownerNodeCounts[ownerKey]?[node] ?? 0
    }

    /// Whether the replica `tenant/name` holds capacity in this snapshot.
    public func holds(replica key: String) -> Bool { held[key] != nil }

    // MARK: Updating

    /// Records `placement`: its GPUs, server, tenant usage and spread change in place.
    public mutating func commit(_ placement: Placement) {
        guard let n = nodeIndex[placement.binding.node] else { return }
        let request = placement.request
        var record = HeldReplica(
            key: request.key, name: request.name, tenant: request.tenant, ownerKey: request.ownerKey,
            priority: request.priority, node: n, gpuIndices: placement.binding.gpuIndices,
            wholeGPUs: request.wholeGPUs, server: nil, resources: request.resources(on: nodes[n]))
        nodes[n].allocated.add(record.resources)
        if case .wholeGPUs = request.demand {
            record.shareGPUs = placement.binding.gpuIndices.count
            nodes[n].gpusHoldingTheirShare += record.shareGPUs
        }
        switch placement.assignment.kind {
        case .cpu:
            break
        case .wholeGPUs, .largeSlot:
            for index in placement.binding.gpuIndices {
                guard let p = nodes[n].position(ofGPU: index) else { continue }
                nodes[n].gpus[p].owner = request.key
                nodes[n].gpus[p].vramAllocatedGB = nodes[n].gpus[p].vramTotalGB
            }
            if placement.assignment.kind == .largeSlot, let server = placement.newModelServer,
                let index = placement.binding.gpuIndices.first,
                let p = nodes[n].position(ofGPU: index)
            {
                let id = registerServer(
                    name: server.name, slug: server.slug, mode: .largePinned, vramGB: server.vramGB,
                    node: n, gpuPosition: p, gpuIndex: index, packs: false)
                record.server = id
                modelServers[id].attached.append(request.key)
            }
        case .attach:
            if let name = placement.binding.modelServer, let id = serverIndex[name] {
                record.server = id
                attach(request.key, to: id)
            }
        case .attachLarge:
            // The replica takes over an idle Mode 2 server's slot: its GPU, whole.
            if let name = placement.binding.modelServer, let id = serverIndex[name] {
                for index in placement.binding.gpuIndices {
                    guard let p = nodes[n].position(ofGPU: index) else { continue }
                    nodes[n].gpus[p].owner = request.key
                    nodes[n].gpus[p].vramAllocatedGB = nodes[n].gpus[p].vramTotalGB
                }
                record.server = id
                modelServers[id].attached.append(request.key)
                idleLargeServers[modelServers[id].slug]?.removeAll { $0 == id }
            }
        case .newSharedServer:
            if let server = placement.newModelServer, let index = placement.binding.gpuIndices.first,
                let p = nodes[n].position(ofGPU: index)
            {
                let id = registerServer(
                    name: server.name, slug: server.slug, mode: .sharedPinned, vramGB: server.vramGB,
                    node: n, gpuPosition: p, gpuIndex: index)
                record.server = id
                openServers[server.slug, default: []].append(id)
                attach(request.key, to: id)
            }
        }
        tenantGPUs[request.tenant, default: 0] += record.wholeGPUs
        ownerNodeCounts[request.ownerKey, default: [:]][n, default: 0] += 1
        // An attached tenant shares its server's slice, counted once with the server's first.
        record.shape = placement.assignment.kind == .attach ? nil : DemandShape(request, cpuMilli: record.resources.cpuMilli)
        countDemand(record.shape, by: 1)
        if let shape = waiting.removeValue(forKey: request.key) { countDemand(shape, by: -1) }
        held[request.key] = record
        placementsCommitted += 1
        refreshFragmentation(n)
    }

    /// Releases what the replica `tenant/name` holds (it stopped, or is being preempted).
    public mutating func release(replica key: String) {
        guard let record = held.removeValue(forKey: key) else { return }
        countDemand(record.shape, by: -1)
        defer { if let n = record.node { refreshFragmentation(n) } }
        tenantGPUs[record.tenant, default: 0] -= record.wholeGPUs
        if let n = record.node {
            ownerNodeCounts[record.ownerKey]?[n, default: 1] -= 1
            nodes[n].allocated.subtract(record.resources)
            nodes[n].gpusHoldingTheirShare -= record.shareGPUs
            if record.wholeGPUs > 0 {
                for index in record.gpuIndices {
                    guard let p = nodes[n].position(ofGPU: index), nodes[n].gpus[p].owner == key else { continue }
                    nodes[n].gpus[p].owner = nil
                    nodes[n].gpus[p].vramAllocatedGB = 0
                }
            }
        }
        if let id = record.server {
            modelServers[id].attached.removeAll { $0 == key }
            modelServers[id].reportedAttachments = min(
                modelServers[id].reportedAttachments, modelServers[id].attached.count)
            let server = modelServers[id]
            if server.mode == .sharedPinned, !server.stopped,
                server.attachments < maxAttachmentsPerServer,
                !(openServers[server.slug]?.contains(id) ?? false)
            {
                openServers[server.slug, default: []].append(id)
            }
            // A Mode 2 server its replica left is idle again: the next replica of its slug may
            // take it over (its GPU is free whole meanwhile, as before, for whoever fits first).
            if server.mode == .largePinned, !server.stopped, server.attached.isEmpty,
                !(idleLargeServers[server.slug]?.contains(id) ?? false)
            {
                idleLargeServers[server.slug, default: []].append(id)
            }
        }
    }

    /// Stops the Mode 3 server `name`: frees its VRAM; its attached replicas must be released too.
    public mutating func stopModelServer(named name: String) {
        guard let id = serverIndex[name], !modelServers[id].stopped else { return }
        modelServers[id].stopped = true
        let server = modelServers[id]
        openServers[server.slug]?.removeAll { $0 == id }
        idleLargeServers[server.slug]?.removeAll { $0 == id }
        guard server.mode == .sharedPinned, let p = nodes[server.node].position(ofGPU: server.gpuIndex)
        else { return }
        nodes[server.node].gpus[p].vramAllocatedGB -= server.vramGB
        nodes[server.node].gpus[p].sharedServers.removeAll { $0 == name }
        refreshFragmentation(server.node)
    }

    /// The demand shape a bound replica holds (nil for a CPU pod).
    private static func shape(
        of replica: Replica, record: HeldReplica, servers: [ModelServerState], table: MachineTypeTable
    ) -> DemandShape? {
        let spec = replica.spec
        let types = spec.machineTypes.map { table.named($0)?.name ?? $0 }
        let cpu = record.resources.cpuMilli
        if spec.owner.kind == .deployment || spec.mode == .dedicated {
            return DemandShape(kind: .whole, gpus: max(1, record.gpuIndices.count), vramGB: max(0, spec.vramGB),
                               cpuMilli: cpu, mode: .dedicated, machineTypes: types)
        }
        switch spec.mode {
        case .largePinned:
            return DemandShape(kind: .whole, gpus: 1, vramGB: max(spec.vramGB, PlacementRequest.largeSlotMinimumGB),
                               cpuMilli: cpu, mode: .largePinned, machineTypes: types)
        case .sharedPinned:
            // Attached tenants share their server's slice: the server is the shape, once.
            guard let id = record.server, servers[id].attached.first == record.key else { return nil }
            return DemandShape(kind: .shared, gpus: 1, vramGB: servers[id].vramGB, cpuMilli: cpu,
                               mode: .sharedPinned, machineTypes: types)
        case .dedicated, nil:
            return nil
        }
    }

    /// A name for a new server of `slug` on `node`'s GPU `gpuIndex`, unique in the snapshot.
    func newServerName(slug: String, node: Int, gpuIndex: Int) -> String {
        let base = "\(slug)-\(nodes[node].name)-gpu\(gpuIndex)"
        guard serverIndex[base] != nil else { return base }
        var n = 2
        while serverIndex["\(base)-\(n)"] != nil { n += 1 }
        return "\(base)-\(n)"
    }

    private mutating func registerServer(
        name: String, slug: String, mode: GPUMode, vramGB: Int, node n: Int, gpuPosition p: Int,
        gpuIndex: Int, packs: Bool = true
    ) -> Int {
        let id = modelServers.count
        modelServers.append(ModelServerState(
            name: name, slug: slug, mode: mode, vramGB: vramGB, node: n, gpuIndex: gpuIndex,
            attached: [], reportedAttachments: 0, stopped: false, ready: false))
        serverIndex[name] = id
        serversBySlug[slug, default: []].append(id)
        if mode == .sharedPinned, packs {
            nodes[n].gpus[p].sharedServers.append(name)
            nodes[n].gpus[p].vramAllocatedGB += vramGB
        } else if nodes[n].gpus[p].owner == nil {
            // A Mode 2 server holds its GPU whole, even before its replica is seen.
            nodes[n].gpus[p].owner = modelServers[id].slotOwner
            nodes[n].gpus[p].vramAllocatedGB = nodes[n].gpus[p].vramTotalGB
        }
        return id
    }

    private mutating func attach(_ key: String, to id: Int) {
        modelServers[id].attached.append(key)
        if modelServers[id].attachments >= maxAttachmentsPerServer {
            openServers[modelServers[id].slug]?.removeAll { $0 == id }
        }
    }
}

extension ComputeResources {
    mutating func add(_ other: ComputeResources) {
        cpuMilli += other.cpuMilli
        memoryMB += other.memoryMB
    }

    mutating func subtract(_ other: ComputeResources) {
        cpuMilli -= other.cpuMilli
        memoryMB -= other.memoryMB
    }
}

