import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem
import Logging

/// Many simulated node-agents in one process (like Kubernetes' kubemark), for measuring the
/// control plane at fleet sizes no test machine has GPUs for.
///
/// Each hollow node is the agent's own api-server path without its host: it registers through
/// the api-server with ``NodeLiveness`` (the registration and heartbeat code ``NodeAgent`` runs),
/// holds its watch of the replicas and model servers bound to it with
/// ``NodeAPI/Client/workloadChanges(node:)`` (one connection), and, instead of starting containers, reports each
/// replica bound to it `running` (and each model server ready) ``HollowFleetConfiguration/runDelay``
/// after its watch showed the binding. No NVML, no container engine.
///
/// Nodes are a fixed mix of the machine-types table by index (``HollowNodeShape``): H100, A100,
/// L40, RTX 4090 and CPU-only hosts.
public final class HollowFleet: Sendable {
    /// The configuration.
    public let configuration: HollowFleetConfiguration
    private let tokens: [String: String]
    private let transports: [CurlHTTP.Client]
    private let counters = Locked(HollowFleetStatistics())
    private let journal: HollowJournal?
    /// Injected XIDs not healed yet: node → GPU index → how many.
    private let faults = Locked([String: [Int: Int]]())
    private let logger: Logger

    /// Makes a fleet. `tokens` maps each node name (``HollowFleetConfiguration/nodeName(_:)``)
    /// to its node token. Nothing is sent until ``run()``.
    public init(configuration: HollowFleetConfiguration, tokens: [String: String]) throws(HollowFleetError) {
        guard !configuration.apiServers.isEmpty else { throw HollowFleetError("give at least one api-server URL") }
        for index in 0..<configuration.nodes where tokens[configuration.nodeName(index)] == nil {
            throw HollowFleetError("no node token for \(configuration.nodeName(index))")
        }
        self.configuration = configuration
        self.tokens = tokens
        self.logger = configuration.logger
        let shards = max(1, (configuration.nodes + configuration.nodesPerTransport - 1) / configuration.nodesPerTransport)
        // libcurl's connection cache counts the connections in use too: each node holds two
        // watches open, so a cache of one connection per node closed every beat's connection
        // after its answer (a new TCP connection per beat, most of the api-servers' CPU).
        // Room for each node's watches, a beat and a status report, as a real agent has.
        self.transports = (0..<shards).map {
            CurlHTTP.Client(name: "hollow-curl-\($0)", maxConnections: configuration.nodesPerTransport * HollowFleetConfiguration.connectionsPerNode)
        }
        self.journal = try configuration.journalPath.map { path throws(HollowFleetError) in try HollowJournal(path: path) }
    }

    deinit {
        for transport in transports { transport.shutdown() }
    }

    /// What the fleet has done so far.
    public var statistics: HollowFleetStatistics { counters.withLock { $0 } }

    /// Runs every node until cancelled. Nodes start at ``HollowFleetConfiguration/startRate``
    /// per second, so a large fleet does not register all at once.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            if let every = configuration.xidEvery { group.addTask { await self.faultLoop(every: every) } }
            group.addTask { await self.journal?.flushLoop() }
            let pause = Duration.seconds(1) / max(1, configuration.startRate)
            for index in 0..<configuration.nodes {
                if Task.isCancelled { break }
                group.addTask { await self.runNode(index) }
                try? await Task.sleep(for: pause)
            }
            await group.waitForAll()
        }
        journal?.flush()
    }

    // MARK: One node

    private func client(_ index: Int) -> NodeAPI.Client {
        let name = configuration.nodeName(index)
        var log = logger
        log[metadataKey: "node"] = "\(name)"
        // Spread over the api-servers as node-agents are: the node's own first (its name
        // picks it), the others after it.
        let servers = NodeAPI.Configuration.ownFirst(configuration.apiServers, node: name)
        return NodeAPI.Client(
            NodeAPI.Configuration(
                baseURL: servers[0], token: tokens[name] ?? "", requestTimeout: configuration.requestTimeout,
                connectTimeout: .seconds(5), watchIdleTimeout: configuration.watchIdleTimeout, logger: log,
                otherURLs: Array(servers.dropFirst()), returnAfter: configuration.returnAfter),
            http: transports[index / configuration.nodesPerTransport])
    }

    private func runNode(_ index: Int) async {
        let api = client(index)
        let name = configuration.nodeName(index)
        let host = shape(index)
        let liveness = NodeLiveness(api: api, nodeName: name, heartbeatInterval: configuration.heartbeatInterval, logger: api.logger)
        let registration = host.registration(name: name, machineTypes: configuration.machineTypes)
        guard await register(liveness, registration) else { return }
        let node = HollowNode(name: name, index: index, api: api, shape: host, fleet: self)
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // A beat answered after more than an interval is journaled (`slowbeat`): the
                // report tells a slow answer from a node that sent late.
                let interval = self.configuration.heartbeatInterval
                await liveness.heartbeatLoop(answered: { latency in
                    guard latency > interval else { return }
                    self.journal?.append("slowbeat", name, detail: String(Int64(latency / .milliseconds(1))))
                }) { _ = await self.register(liveness, registration) }
            }
            group.addTask { await node.followWorkloads() }
            group.addTask { await node.reportGPUHealth(faulty: []) }
            await group.waitForAll()
        }
    }

    private func register(_ liveness: NodeLiveness, _ registration: NodeRegistration) async -> Bool {
        guard await liveness.register({ registration }) != nil else { return false }
        counters.withLock { $0.registrations += 1 }
        return true
    }

    /// Node `index`'s host: ``HollowFleetConfiguration/shape`` or the mix.
    private func shape(_ index: Int) -> HollowNodeShape {
        configuration.shape ?? HollowNodeShape.forIndex(configuration.firstIndex + index)
    }

    // MARK: Faults

    /// Every `every`: an XID 79 on a random GPU of a random GPU node, reported as its agent's
    /// health monitor would (the GPU unhealthy in the Node status), healed after
    /// ``HollowFleetConfiguration/xidHeal``.
    private func faultLoop(every: Duration) async {
        var random = SplitMix64(seed: configuration.seed)
        while !Task.isCancelled {
            try? await Task.sleep(for: every)
            if Task.isCancelled { return }
            let gpuNodes = (0..<configuration.nodes).filter { shape($0).gpus > 0 }
            guard let index = gpuNodes.randomElement(using: &random) else { return }
            let host = shape(index)
            let gpu = Int.random(in: 0..<host.gpus, using: &random)
            let node = HollowNode(name: configuration.nodeName(index), index: index, api: client(index), shape: host, fleet: self)
            counters.withLock { $0.xids += 1 }
            logger.notice("injecting XID 79", metadata: ["node": "\(node.name)", "gpu": "\(gpu)"])
            let heal = configuration.xidHeal
            let faults = self.faults
            Task {
                // Each report carries every GPU of the node still within its heal time.
                let sick = faults.withLock { $0[node.name, default: [:]][gpu, default: 0] += 1; return Set($0[node.name, default: [:]].keys) }
                await node.reportGPUHealth(faulty: sick)
                try? await Task.sleep(for: heal)
                let left = faults.withLock { faults -> Set<Int> in
                    faults[node.name, default: [:]][gpu, default: 1] -= 1
                    if faults[node.name]?[gpu] == 0 { faults[node.name]?[gpu] = nil }
                    return Set(faults[node.name, default: [:]].keys)
                }
                await node.reportGPUHealth(faulty: left)
            }
        }
    }

    // MARK: Bookkeeping for HollowNode

    func count(_ update: (inout HollowFleetStatistics) -> Void) { counters.withLock(update) }

    func record(_ event: String, _ key: String) { journal?.append(event, key) }
}

/// The settings of a ``HollowFleet``.
public struct HollowFleetConfiguration: Sendable {
    /// The api-servers' base URLs; each node calls the one its name picks
    /// (``NodeAPI/Configuration/ownFirst(_:node:)``), as a node-agent does.
    public var apiServers: [String]
    /// How long after leaving its own api-server a node asks whether it answers again, to go
    /// back (``NodeAPI/Configuration/returnAfter``); nil: never.
    public var returnAfter: Duration? = .seconds(30)
    /// How many nodes.
    public var nodes: Int
    /// The nodes' names: `<prefix>-<index>`, index from ``firstIndex``.
    public var namePrefix: String = "hollow"
    /// The first node's index (several fleet processes take disjoint ranges).
    public var firstIndex: Int = 0
    /// How often each node beats (the real agent's default: 1 s).
    public var heartbeatInterval: Duration = .seconds(1)
    /// How long after its watch shows a binding a replica is reported running.
    public var runDelay: Duration = .seconds(1)
    /// An XID on a random GPU this often; nil: none.
    public var xidEvery: Duration? = nil
    /// How long an injected XID keeps its GPU unhealthy.
    public var xidHeal: Duration = .seconds(30)
    /// Nodes started per second.
    public var startRate: Int = 200
    /// Nodes sharing one libcurl thread. Each thread's loop polls every connection of its
    /// nodes at each wake-up (a beat, an answer): at 250 nodes a thread, polling was most of
    /// the process's CPU (docs/benchmarks.md, "The simulation's own cost").
    public var nodesPerTransport: Int = 25
    /// Connections a node may hold at once, kept for reuse by its transport: two watches, a
    /// beat, a status report.
    public static let connectionsPerNode = 4
    /// The deadline of one api-server call.
    public var requestTimeout: Duration = .seconds(10)
    /// A watch silent this long (not even a bookmark) is dropped and resumed.
    public var watchIdleTimeout: Duration = .seconds(45)
    /// The machine types GPUs are matched against.
    public var machineTypes: MachineTypeTable = .standard
    /// Where each replica's first sight of its binding and its running report are appended
    /// (`seen|running <tenant>/<name> <unix ms>`), for measuring watch fan-out; nil: nowhere.
    public var journalPath: String? = nil
    /// Every node this host (8 GPUs of one type, ``HollowNodeShape/init(machineType:)``); nil:
    /// the mix of ``HollowNodeShape/forIndex(_:)``.
    public var shape: HollowNodeShape? = nil
    /// The seed of the fault injector's choices.
    public var seed: UInt64 = 1
    /// Where the fleet logs (each node's lines carry `node`).
    public var logger: Logger

    /// Makes a configuration.
    public init(apiServers: [String], nodes: Int, logger: Logger = Logger(label: "gpuplane.hollow")) {
        self.apiServers = apiServers
        self.nodes = nodes
        self.logger = logger
    }

    /// The name of node `index` (0-based within this fleet).
    public func nodeName(_ index: Int) -> String { "\(namePrefix)-\(firstIndex + index)" }

    /// Every node's name.
    public var nodeNames: [String] { (0..<nodes).map(nodeName) }
}

/// What a ``HollowFleet`` has done.
public struct HollowFleetStatistics: Sendable, Hashable {
    /// Successful registrations (first ones and re-registrations).
    public var registrations = 0
    /// Replicas reported running.
    public var replicasRunning = 0
    /// Model servers reported ready.
    public var modelServersReady = 0
    /// Reports the api-server refused or did not answer.
    public var reportFailures = 0
    /// Watch changes received (lists count once).
    public var watchChanges = 0
    /// XIDs injected.
    public var xids = 0
}

/// Why a ``HollowFleet`` cannot start.
public struct HollowFleetError: Error, Sendable, CustomStringConvertible {
    /// What is wrong, and what to do.
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The host a hollow node pretends to be.
public struct HollowNodeShape: Sendable, Hashable {
    /// The GPUs' product name as NVML reports it ("" for a CPU-only host).
    public var product: String
    /// Each GPU's memory, MiB.
    public var memoryMiB: Int
    /// How many GPUs.
    public var gpus: Int
    /// The `gpu-mode` label.
    public var gpuMode: String

    /// The mix by index, in tenths: 4 × H100 (8 GPUs; one in four of them `shared`, for model
    /// servers), 2 × A100 40GB (8 GPUs), 1 × L40 (4), 2 × RTX 4090 (2), 1 × CPU-only.
    public static func forIndex(_ index: Int) -> HollowNodeShape {
        switch index % 10 {
        case 0, 1, 2: HollowNodeShape(product: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559, gpus: 8, gpuMode: "dedicated")
        case 3: HollowNodeShape(product: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559, gpus: 8, gpuMode: index % 20 == 3 ? "shared" : "dedicated")
        case 4, 5: HollowNodeShape(product: "NVIDIA A100-SXM4-40GB", memoryMiB: 40_960, gpus: 8, gpuMode: "dedicated")
        case 6: HollowNodeShape(product: "NVIDIA L40", memoryMiB: 46_068, gpus: 4, gpuMode: "dedicated")
        case 7, 8: HollowNodeShape(product: "NVIDIA GeForce RTX 4090", memoryMiB: 24_564, gpus: 2, gpuMode: "dedicated")
        default: HollowNodeShape(product: "", memoryMiB: 0, gpus: 0, gpuMode: "")
        }
    }

    /// Makes a shape.
    public init(product: String, memoryMiB: Int, gpus: Int, gpuMode: String) {
        self.product = product
        self.memoryMiB = memoryMiB
        self.gpus = gpus
        self.gpuMode = gpuMode
    }

    /// A `dedicated` host of 8 GPUs of GPU machine type `type` (its first product name, its VRAM).
    public init(machineType type: MachineType) {
        self.init(product: "NVIDIA " + (type.productNames.first ?? type.name), memoryMiB: type.vramGB * 1024, gpus: 8, gpuMode: "dedicated")
    }

    /// GPU `i`'s UUID on node `name`.
    public static func uuid(node: String, gpu: Int) -> String { "GPU-hollow-\(node)-\(gpu)" }

    /// What node `name` registers: its GPUs, the machine type they match, and the type's CPU and
    /// memory per GPU as allocatable (a CPU-only host: 32 cores, 128 GB, the largest CPU type).
    public func registration(name: String, machineTypes: MachineTypeTable) -> NodeRegistration {
        let devices = (0..<gpus).map {
            GPUDevice(index: $0, uuid: Self.uuid(node: name, gpu: $0), product: product, memoryMiB: memoryMiB)
        }
        var registration: NodeRegistration
        if gpus == 0 {
            let allocatable = ComputeResources(cpuMilli: 32_000, memoryMB: 128 * 1024)
            registration = NodeRegistration(
                name: name, labels: [Node.nodeKindLabel: Node.cpuNodeKind],
                machineType: machineTypes.largestCPUType(fitting: allocatable)?.name, gpus: [])
            registration.allocatableCPUMilli = allocatable.cpuMilli
            registration.allocatableMemoryMB = allocatable.memoryMB
        } else {
            let type = machineTypes.matching(product: product, memoryMiB: memoryMiB)
                ?? machineTypes.gpuTypes.first { "NVIDIA " + ($0.productNames.first ?? $0.name) == product && $0.vramGB * 1024 == memoryMiB }
            registration = NodeRegistration(name: name, labels: [Node.gpuModeLabel: gpuMode], machineType: type?.name, gpus: devices)
            registration.allocatableCPUMilli = (type?.cpuMilli ?? 8000) * gpus
            registration.allocatableMemoryMB = (type?.ramMB ?? 64 * 1024) * gpus
        }
        registration.address = "127.0.0.1"
        return registration
    }
}
