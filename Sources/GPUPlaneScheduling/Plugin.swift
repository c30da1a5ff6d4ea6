import GPUPlaneCore

/// Why a node (or the whole request) was refused: a named constant of the plugin that refused,
/// compared by value, never by its text.
public struct RefusalReason: Hashable, Sendable, CustomStringConvertible {
    /// A stable CamelCase code for events and metrics, e.g. `NodeNotReady`.
    public let code: String
    /// The words used in summaries, e.g. `node not ready`.
    public let message: String

    /// Makes a reason; plugins declare theirs as `static let`.
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A check of the request alone, before any node is looked at (kube-scheduler's PreFilter).
public protocol RequestFilterPlugin: Sendable {
    /// The plugin's name, for logs.
    var name: String { get }
    /// nil when the request may go on; otherwise the reason and words naming the numbers.
    func filter(_ request: PlacementRequest, in snapshot: ClusterSnapshot) -> RequestRefusal?
}

/// A refusal of the request as a whole, with words naming its numbers.
public struct RequestRefusal: Hashable, Sendable {
    /// The reason constant.
    public let reason: RefusalReason
    /// E.g. `acme holds 4 of 4 whole GPUs, 1 more wanted`.
    public let detail: String

    /// Makes a request refusal.
    public init(_ reason: RefusalReason, detail: String) {
        self.reason = reason
        self.detail = detail
    }
}

/// How many nodes one reason refused.
public struct ReasonCount: Hashable, Sendable {
    /// The reason.
    public let reason: RefusalReason
    /// Nodes it refused.
    public let nodes: Int
}

/// A cheap yes/no on one node (Nomad's feasibility checkers, kube-scheduler's Filter).
public protocol NodeFilterPlugin: Sendable {
    /// The plugin's name, for logs.
    var name: String { get }
    /// nil when the node passes; otherwise why not.
    func filter(_ request: PlacementRequest, node: NodeState) -> RefusalReason?
}

/// What the fit stage chose on one node.
public struct Assignment: Sendable, Hashable {
    /// How the replica would use the node.
    public enum Kind: Sendable, Hashable {
        /// Whole GPUs (Mode 1, deployments).
        case wholeGPUs
        /// One whole GPU with a new dedicated Mode 2 server.
        case largeSlot
        /// Attach to a running Mode 3 server.
        case attach
        /// Take over an idle Mode 2 server of the slug (a warm one, or one whose replica left):
        /// its GPU, whole, as the replica's dedicated slot; no new server is started.
        case attachLarge
        /// A new Mode 3 server packed on a shared GPU.
        case newSharedServer
        /// A CPU pod: CPU and memory of the node, no GPU.
        case cpu
    }

    /// How.
    public var kind: Kind
    /// NVML indices of the GPUs used (the server's GPU when attaching).
    public var gpuIndices: [Int]
    /// The server attached to (`attach`, `attachLarge`), by position in `ClusterSnapshot.modelServers`.
    public var server: Int?
    /// VRAM of the largest GPU chosen, GB.
    public var gpuVRAMGB: Int
    /// VRAM allocated on the chosen shared GPU once placed, GB (shared kinds only).
    public var sharedAllocatedAfterGB: Int
    /// GPUs of the node still free to be given whole once placed.
    public var nodeFreeWholeAfter: Int
}

/// What scorers may read besides the node: per-request facts computed once.
public struct ScoringContext: Sendable {
    /// The request.
    public let request: PlacementRequest
    /// Replicas of the request's owner per node position.
    public let ownerNodeCounts: [Int: Int]
    /// Rank (0 = first) of each machine type ID in the request's ordered list.
    let typeRank: [Int: Int]
    /// Entries in the request's ordered machine-type list.
    public let typeListCount: Int
    /// The workload the snapshot's held replicas make up (``ClusterSnapshot/workload``), when a
    /// scorer of the pipeline measures fragmentation against it; nil otherwise.
    public internal(set) var workload: WorkloadProfile? = nil
}

/// A scorer of one feasible node: 0 (worst) … 100 (best).
public protocol ScorePlugin: Sendable {
    /// The plugin's name, for logs.
    var name: String { get }
    /// 0 … 100.
    func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int
}

/// A scorer and its weight in the sum.
public struct WeightedScore: Sendable {
    /// The scorer.
    public let plugin: any ScorePlugin
    /// Its weight.
    public let weight: Int

    /// Pairs a scorer with a weight.
    public init(_ plugin: any ScorePlugin, weight: Int) {
        self.plugin = plugin
        self.weight = weight
    }
}

/// A new model server the caller must create along with the binding.
public struct ModelServerPlan: Sendable, Hashable {
    /// Its name, unique in the snapshot.
    public var name: String
    /// The slug it serves.
    public var slug: String
    /// Mode 2 or Mode 3.
    public var mode: GPUMode
    /// VRAM it holds, GB.
    public var vramGB: Int
    /// The node.
    public var node: String
    /// The GPU's NVML index.
    public var gpuIndex: Int
    /// The GPU's VRAM, GB: a Mode 3 server's engine may use only its model's share of it.
    public var gpuVRAMGB: Int = 0

    /// The resource to store (uid, tenant and version are the store's business), with the
    /// serving image, command line (``ServingCommand``: one GPU, and for Mode 3 the model's
    /// share of the GPU's memory) and port `catalog` gives its slug.
    public func modelServer(catalog: Catalog) -> ModelServer {
        let shape = ServingShape(gpus: 1, gpuVRAMGB: gpuVRAMGB > 0 ? gpuVRAMGB : nil, sharesGPU: mode == .sharedPinned)
        return ModelServer(
            metadata: ObjectMeta(name: name),
            spec: .init(slug: slug, mode: mode, vramGB: vramGB, serving: catalog.model(slug).map { ModelServer.Serving($0, shape: shape) }),
            binding: Binding(node: node, gpuIndices: [gpuIndex]))
    }
}

/// A decision to bind one replica.
public struct Placement: Sendable, Hashable {
    /// What was placed.
    public let request: PlacementRequest
    /// Where: node, GPU indices, model server (attached or new).
    public let binding: Binding
    /// How the node is used.
    public let assignment: Assignment
    /// A model server to create with the binding (Mode 2 when no idle one of the slug could be
    /// taken over, Mode 3 when none could be attached to).
    public let newModelServer: ModelServerPlan?
    /// The winning weighted score.
    public let score: Int
    /// Feasible nodes scored before choosing.
    public let nodesScored: Int
}

/// A refusal: why no node would do, counted per reason. Waiting may help (capacity frees up,
/// limits change); requests no fleet could serve are `PlacementError`s instead.
public struct Refusal: Sendable, Hashable {
    /// Nodes in the snapshot.
    public let nodesTotal: Int
    /// How many nodes each reason refused, most first.
    public let counts: [ReasonCount]
    /// A request-level reason (tenant limit) with its words; nil when nodes refused.
    public let requestReason: RequestRefusal?

    /// Makes a refusal from per-reason counts, ordering them most first, then by message.
    public init(
        nodesTotal: Int, counts: [RefusalReason: Int],
        requestReason: RequestRefusal? = nil
    ) {
        self.nodesTotal = nodesTotal
        self.counts = counts.map { ReasonCount(reason: $0.key, nodes: $0.value) }
            .sorted { ($1.nodes, $0.reason.message) < ($0.nodes, $1.reason.message) }
        self.requestReason = requestReason
    }

    /// `0/12 nodes: 8 insufficient VRAM, 4 gpu-mode is shared`, or for a request-level reason
    /// `0/12 nodes: tenant GPU limit reached (acme holds 4 of 4 whole GPUs, 1 more wanted)`.
    public var summary: String {
        if let requestReason { return "0/\(nodesTotal) nodes: \(requestReason.reason.message) (\(requestReason.detail))" }
        if nodesTotal == 0 { return "0/0 nodes: no nodes in the cluster" }
        return "0/\(nodesTotal) nodes: " + counts.map { "\($0.nodes) \($0.reason.message)" }.joined(separator: ", ")
    }

    /// The reason that refused the most nodes (or the request-level one).
    public var primaryReason: RefusalReason? { requestReason?.reason ?? counts.first?.reason }
}

/// The outcome of placing one replica.
public enum PlacementResult: Sendable, Hashable {
    /// Bind it here.
    case bound(Placement)
    /// No node would do now.
    case refused(Refusal)

    /// The placement, when bound.
    public var placement: Placement? {
        if case .bound(let placement) = self { return placement }
        return nil
    }

    /// The refusal, when refused.
    public var refusal: Refusal? {
        if case .refused(let refusal) = self { return refusal }
        return nil
    }
}
