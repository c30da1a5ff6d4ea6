#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// The placement pipeline: where one pending replica goes, and why not when it can't.
///
/// Read it top to bottom, like Nomad's `stack.go`:
///
/// 1. **Request filters** look at the request alone (tenant GPU limit): one check, and a refusal
///    that names the numbers.
/// 2. **Attach**, before any new VRAM is spent. Mode 3: a running server of the slug with room
///    for one more tenant. Mode 2: an idle server of the slug (the warm pool's, or one its
///    replica left), taken over whole as the replica's dedicated slot, ready ones first; one
///    replica per Mode 2 server. The node filters (ready, cordon, mode, machine type, health)
///    and the server's GPU health apply as anywhere; the batch order (priority, then age)
///    decides who gets an idle server first.
/// 3. **Node filters**, cheapest and most selective first, then **fit**, which chooses GPUs,
///    then **CPU and memory** (`CPUMemoryFilter`, every request, attachments included):
///    allocatable minus what bound replicas hold, never overcommitted; after the fit, so a node
///    out of GPUs says so rather than that its GPUs' CPU is taken. CPU pods visit every node,
///    CPU-only nodes first, each part in a seeded shuffle. GPU requests' nodes are visited group by group, a group being the nodes of one `gpu-mode` and machine
///    type: the pod's ordered machine types in its order, or else the smallest GPUs first.
///    Within a group the order is a seeded shuffle with a seeded starting point, so the same
///    snapshot and seed place the same way. Visiting stops once enough feasible nodes were
///    found (kube-scheduler's percentageOfNodesToScore).
/// 4. **Scores**, weighted, 0…100 each; the highest sum wins, the first visited on a tie.
///    `FragmentationScore` measures each candidate against the workload the snapshot holds.
/// 5. **Refusal**: when no node fits, every node is run through the same chain and the first
///    reason that refused it is counted: `0/12 nodes: 8 insufficient VRAM, 4 gpu-mode is shared`,
///    `0/3 nodes: 2 insufficient memory, 1 node cordoned`.
///
/// Preemption (`Pipeline+Preemption.swift`) and batches and deployments
/// (`Pipeline+Batch.swift`) are built on `evaluate(_:in:)`.
public struct Pipeline: Sendable {
    /// Knobs.
    public struct Configuration: Sendable, Hashable {
        /// Percentage of the nodes to find feasible before choosing; nil adapts like
        /// kube-scheduler (50% minus 1% per 125 nodes, at least 5%).
        public var percentageOfNodesToScore: Int?
        /// Feasible nodes to find at least, whatever the percentage (kube-scheduler: 100).
        public var minFeasibleNodesToFind: Int

        /// Makes a configuration.
        public init(percentageOfNodesToScore: Int? = nil, minFeasibleNodesToFind: Int = 100) {
            self.percentageOfNodesToScore = percentageOfNodesToScore
            self.minFeasibleNodesToFind = minFeasibleNodesToFind
        }
    }

    // 1. Request filters: O(1) each, and they refuse the request as a whole.
    /// The default request filters.
    public static let defaultRequestFilters: [any RequestFilterPlugin] = [
        TenantGPULimitFilter(),  // whole GPUs held + wanted ≤ the tenant's limit (default 4)
    ]

    // 3. Node filters, in order; the first to refuse a node names the reason it is counted under.
    /// The default node filters.
    public static let defaultNodeFilters: [any NodeFilterPlugin] = [
        NodeReadyFilter(),    // no heartbeat, no work: cheapest and decisive
        NodeCordonFilter(),   // operators drain a node by cordoning it
        CPUOnlyNodeFilter(),  // a node without GPUs takes CPU pods only
        GPUModeFilter(),      // gpu-mode label: dedicated (Mode 1, deployments), large (2), shared (3); CPU pods any
        MachineTypeFilter(),  // in the pod's ordered machine-type list, when it gives one
        GPUHealthFilter(),    // enough healthy GPUs (no XID/ECC faults) for what is asked
    ]
    // …then GPUFit: GPU count and VRAM, choosing the GPUs (see `GPUFit`),
    // …then CPUMemoryFilter: CPU and memory free (CPU pods: what GPU hosts' free GPUs leave).

    // 4. Scores and their weights: the pod's own machine-type order outweighs everything,
    //    then the smallest GPU that fits and fragmentation (what the replica leaves usable for
    //    the work the fleet runs: issue 19, docs/benchmarks.md), then spreading, with packing
    //    on a tie. CPU pods: CPU-only nodes first, then fragmentation (the CPU GPU hosts'
    //    free GPUs need), packing and spreading.
    /// The default scorers.
    public static let defaultScores: [WeightedScore] = [
        WeightedScore(MachineTypeOrderScore(), weight: 5),  // earlier types in the pod's list
        WeightedScore(CPUNodePreferenceScore(), weight: 5), // CPU pods on CPU-only nodes, GPU hosts keep room
        WeightedScore(SmallestFitScore(), weight: 3),       // 20 GB lands on an RTX 4090, not an H100
        WeightedScore(FragmentationScore(), weight: 4),     // GPUs left usable for the work the fleet runs
        WeightedScore(BinPackingScore(), weight: 1),        // fuller shared GPUs, fuller nodes: near-ties
        WeightedScore(OwnerSpreadScore(), weight: 2),       // one owner's replicas over many nodes
    ]

    /// The scorers before fragmentation-aware scoring (issue 19), for comparison in benchmarks.
    public static let packingScores: [WeightedScore] = [
        WeightedScore(MachineTypeOrderScore(), weight: 5),
        WeightedScore(CPUNodePreferenceScore(), weight: 5),
        WeightedScore(SmallestFitScore(), weight: 3),
        WeightedScore(BinPackingScore(), weight: 2),
        WeightedScore(OwnerSpreadScore(), weight: 2),
    ]

    /// Resolves slugs (`auto`, modes, VRAM).
    public let catalog: Catalog
    /// Resolves machine-type names and aliases.
    public let machineTypes: MachineTypeTable
    /// Knobs.
    public let configuration: Configuration
    /// Stage 1.
    public let requestFilters: [any RequestFilterPlugin]
    /// Stage 3, before fit.
    public let nodeFilters: [any NodeFilterPlugin]
    /// Stage 3, the fit.
    public let fit: GPUFit
    /// Stage 3, after the fit: CPU and memory.
    public let resources: CPUMemoryFilter
    /// Stage 4.
    public let scores: [WeightedScore]
    /// Whether a scorer reads ``ScoringContext/workload``.
    let measuresWorkload: Bool

    /// Makes a pipeline; the plugin lists default to the ones above.
    public init(
        catalog: Catalog, machineTypes: MachineTypeTable = .standard,
        configuration: Configuration = .init(),
        requestFilters: [any RequestFilterPlugin] = Pipeline.defaultRequestFilters,
        nodeFilters: [any NodeFilterPlugin] = Pipeline.defaultNodeFilters,
        scores: [WeightedScore] = Pipeline.defaultScores
    ) {
        self.catalog = catalog
        self.machineTypes = machineTypes
        self.configuration = configuration
        self.requestFilters = requestFilters
        self.nodeFilters = nodeFilters
        self.fit = GPUFit()
        self.resources = CPUMemoryFilter()
        self.scores = scores
        self.measuresWorkload = scores.contains { $0.plugin is FragmentationScore }
    }

    /// Resolves a replica against the catalog and machine types.
    public func request(for replica: Replica) throws(PlacementError) -> PlacementRequest {
        try PlacementRequest(replica: replica, catalog: catalog, machineTypes: machineTypes)
    }

    /// Places `request` and, when bound, commits it to `snapshot` so the next placement sees it;
    /// when refused, counts it in the snapshot's workload as waiting (once per request).
    public func place(_ request: PlacementRequest, in snapshot: inout ClusterSnapshot) -> PlacementResult {
        let result = evaluate(request, in: snapshot)
        switch result {
        case .bound(let placement): snapshot.commit(placement)
        case .refused: if measuresWorkload { snapshot.noteWaiting(request) }
        }
        return result
    }

    /// Where `request` would go, without changing `snapshot`.
    public func evaluate(_ request: PlacementRequest, in snapshot: ClusterSnapshot) -> PlacementResult {
        // 1. Request filters.
        for filter in requestFilters {
            if let refusal = filter.filter(request, in: snapshot) {
                return .refused(Refusal(nodesTotal: snapshot.nodes.count, counts: [:], requestReason: refusal))
            }
        }
        let context = scoringContext(for: request, in: snapshot)
        var best = Best()

        // 2. Attach: a running Mode 3 server of the slug with room, or an idle Mode 2 server of
        //    the slug, ready ones before those still starting.
        if case .largeSlot(let slug, _) = request.demand, let idle = snapshot.idleLargeServers[slug], !idle.isEmpty {
            for ready in [true, false] {
                for id in idle where snapshot.modelServers[id].ready == ready {
                    let server = snapshot.modelServers[id]
                    let node = snapshot.nodes[server.node]
                    guard passesNodeFilters(request, node),
                        let assignment = fit.attachLarge(request, server: server, serverID: id, node: node),
                        resources.filter(request, node: node) == nil
                    else { continue }
                    best.consider(assignment, node: server.node, score: score(assignment, node, server.node, context))
                }
                if let placement = best.placement(request, in: snapshot) { return .bound(placement) }
            }
        }
        if case .shared(let slug, _) = request.demand {
            for id in snapshot.openServers[slug] ?? [] {
                let server = snapshot.modelServers[id]
                let node = snapshot.nodes[server.node]
                guard passesNodeFilters(request, node),
                    let assignment = fit.attach(
                        request, server: server, serverID: id, node: node,
                        maxAttachments: snapshot.maxAttachmentsPerServer),
                    resources.filter(request, node: node) == nil
                else { continue }
                best.consider(assignment, node: server.node, score: score(assignment, node, server.node, context))
                if best.found >= feasibleNodesToFind(snapshot.nodes.count) { break }
            }
            if let placement = best.placement(request, in: snapshot) { return .bound(placement) }
        }

        // 3. Node filters and fit over a bounded sample: CPU pods over every node, CPU-only
        //    ones first; GPU requests group by group.
        let target = feasibleNodesToFind(snapshot.nodes.count)
        if request.isCPU {
            for position in snapshot.cpuVisitOrder {
                let node = snapshot.nodes[position]
                guard passesNodeFilters(request, node), case .fits(let assignment) = fit.fit(request, node: node),
                    resources.filter(request, node: node) == nil
                else { continue }
                best.consider(assignment, node: position, score: score(assignment, node, position, context))
                if best.found >= target { break }
            }
        }
        visiting: for (g, group) in groups(for: request, in: snapshot).enumerated() {
            let count = group.nodes.count
            let start = Int(SplitMix64.draw(
                seed: snapshot.seed, salt: UInt64(snapshot.placementsCommitted) << 16 | UInt64(g)) % UInt64(count))
            for k in 0..<count {
                let position = group.nodes[(start + k) % count]
                let node = snapshot.nodes[position]
                guard passesNodeFilters(request, node),
                    case .fits(let assignment) = fit.fit(request, node: node),
                    resources.filter(request, node: node) == nil
                else { continue }
                // 4. Scores.
                best.consider(assignment, node: position, score: score(assignment, node, position, context))
                if best.found >= target { break visiting }
            }
        }
        if let placement = best.placement(request, in: snapshot) { return .bound(placement) }

        // 5. Nothing fits: every node, through the same chain, counted by its first refusal.
        return .refused(diagnose(request, in: snapshot))
    }

    /// Per-request facts the scorers share.
    public func scoringContext(for request: PlacementRequest, in snapshot: ClusterSnapshot) -> ScoringContext {
        var rank: [Int: Int] = [:]
        for (r, name) in request.machineTypes.enumerated() {
            for group in request.mode.flatMap({ snapshot.groupsByMode[$0] }) ?? [] where group.typeName == name && rank[group.typeID] == nil {
                rank[group.typeID] = r
            }
        }
        return ScoringContext(
            request: request, ownerNodeCounts: snapshot.ownerNodeCounts[request.ownerKey] ?? [:],
            typeRank: rank, typeListCount: request.machineTypes.count,
            workload: measuresWorkload ? snapshot.workload : nil)
    }

    /// Why each node refused `request`, counted by the first reason in pipeline order.
    public func diagnose(_ request: PlacementRequest, in snapshot: ClusterSnapshot) -> Refusal {
        var counts: [RefusalReason: Int] = [:]
        for node in snapshot.nodes {
            if let reason = firstNodeFilterRefusal(request, node) {
                counts[reason, default: 0] += 1
            } else if case .refused(let reason) = fit.fit(request, node: node) {
                counts[reason, default: 0] += 1
            } else if let reason = resources.filter(request, node: node) {
                counts[reason, default: 0] += 1
            }
        }
        return Refusal(nodesTotal: snapshot.nodes.count, counts: counts)
    }

    /// Feasible nodes to find before choosing, out of `total`.
    public func feasibleNodesToFind(_ total: Int) -> Int {
        let minimum = max(1, configuration.minFeasibleNodesToFind)
        if total <= minimum { return max(total, 1) }
        let percentage = configuration.percentageOfNodesToScore ?? max(5, 50 - total / 125)
        if percentage >= 100 { return total }
        return max(minimum, total * percentage / 100)
    }

    // MARK: Pieces

    private func passesNodeFilters(_ request: PlacementRequest, _ node: NodeState) -> Bool {
        firstNodeFilterRefusal(request, node) == nil
    }

    private func firstNodeFilterRefusal(_ request: PlacementRequest, _ node: NodeState) -> RefusalReason? {
        for filter in nodeFilters {
            if let reason = filter.filter(request, node: node) { return reason }
        }
        return nil
    }

    private func score(_ assignment: Assignment, _ node: NodeState, _ position: Int, _ context: ScoringContext) -> Int {
        var total = 0
        for weighted in scores {
            let s = weighted.plugin.score(assignment, node: node, nodePosition: position, context: context)
            total += min(100, max(0, s)) * weighted.weight
        }
        return total
    }

    /// The groups of the request's mode to visit, in order: the pod's machine types in its
    /// order, or all of them smallest GPUs first; groups whose GPUs are all too small are skipped.
    private func groups(for request: PlacementRequest, in snapshot: ClusterSnapshot) -> [NodeGroup] {
        guard let mode = request.mode else { return [] }  // CPU pods: `cpuVisitOrder`
        let all = (snapshot.groupsByMode[mode] ?? []).filter {
            $0.vramGB >= request.vramGB && !$0.nodes.isEmpty
        }
        guard !request.machineTypes.isEmpty else { return all }
        var ordered: [NodeGroup] = []
        for name in request.machineTypes where !ordered.contains(where: { $0.typeName == name }) {
            if let group = all.first(where: { $0.typeName == name }) { ordered.append(group) }
        }
        return ordered
    }

    /// The best candidate so far; the first seen wins a tie.
    private struct Best {
        var assignment: Assignment?
        var node = 0
        var score = Int.min
        var found = 0

        mutating func consider(_ assignment: Assignment, node: Int, score: Int) {
            found += 1
            if score > self.score {
                self.assignment = assignment
                self.node = node
                self.score = score
            }
        }

        func placement(_ request: PlacementRequest, in snapshot: ClusterSnapshot) -> Placement? {
            guard let assignment else { return nil }
            let nodeName = snapshot.nodes[node].name
            var serverName: String?
            var plan: ModelServerPlan?
            switch assignment.kind {
            case .wholeGPUs, .cpu:
                break
            case .attach, .attachLarge:
                serverName = assignment.server.map { snapshot.modelServers[$0].name }
            case .largeSlot, .newSharedServer:
                if let slug = request.slug, let mode = request.mode, let gpu = assignment.gpuIndices.first {
                    let name = snapshot.newServerName(slug: slug, node: node, gpuIndex: gpu)
                    serverName = name
                    plan = ModelServerPlan(
                        name: name, slug: slug, mode: mode,
                        vramGB: assignment.kind == .largeSlot ? assignment.gpuVRAMGB : request.vramGB,
                        node: nodeName, gpuIndex: gpu, gpuVRAMGB: assignment.gpuVRAMGB)
                }
            }
            return Placement(
                request: request,
                binding: Binding(node: nodeName, gpuIndices: assignment.gpuIndices, modelServer: serverName),
                assignment: assignment, newModelServer: plan, score: score, nodesScored: found)
        }
    }
}
