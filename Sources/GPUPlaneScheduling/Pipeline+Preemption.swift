import GPUPlaneCore

/// A replica to stop so that a more important one fits.
public struct Victim: Sendable, Hashable {
    /// The replica's name.
    public let name: String
    /// Its tenant.
    public let tenant: String
    /// Its tier, always strictly below the preemptor's.
    public let priority: GPUPriority
    /// The GPUs it frees (NVML indices; its server's GPU when attached to one).
    public let gpuIndices: [Int]
    /// The Mode 3 server it is attached to, which stops with it.
    public let modelServer: String?

    /// `tenant/name`.
    public var key: String { "\(tenant)/\(name)" }
}

/// Who must stop, and where, so that `preemptor` fits: the caller stops the victims gracefully,
/// emits `Event`s on both sides with the reasons below, and binds the preemptor once they are gone.
public struct PreemptionPlan: Sendable, Hashable {
    /// The `Event` reason on each victim.
    public static let preemptedReason = "Preempted"
    /// The `Event` reason on the preemptor.
    public static let preemptingReason = "Preempting"

    /// What needs the room.
    public let preemptor: PlacementRequest
    /// The node where the room is made.
    public let node: String
    /// Replicas to stop, lowest tier first.
    public let victims: [Victim]
    /// Mode 3 servers to stop (their VRAM is the room); their attached replicas are among the victims.
    public let modelServersToStop: [String]

    /// Words for a victim's event.
    public func message(for victim: Victim) -> String {
        "preempted on \(node): \(victim.priority.rawValue) yields to \(preemptor.tenant)/\(preemptor.name) (\(preemptor.priority.rawValue))"
    }

    /// Words for the preemptor's event.
    public var preemptorMessage: String {
        let names = victims.map { "\($0.key) (\($0.priority.rawValue))" }
        let servers = modelServersToStop.isEmpty ? "" : "; stopping \(modelServersToStop.joined(separator: ", "))"
        return "preempting \(victims.count) on \(node): \(names.joined(separator: ", "))\(servers)"
    }
}

extension Pipeline {
    /// The cheapest way to make room for `request` by evicting replicas of a strictly lower tier
    /// (never an equal or higher one): the node needing the fewest victims, then the one whose
    /// most important victim is least important, then the least VRAM evicted, then node name.
    /// nil when the request fits already, a request filter refuses it (preemption can't raise
    /// a tenant's limit), or no node can be freed.
    public func preemption(for request: PlacementRequest, in snapshot: ClusterSnapshot) -> PreemptionPlan? {
        for filter in requestFilters where filter.filter(request, in: snapshot) != nil { return nil }
        // CPU pods don't preempt: they never need a GPU, and GPU hosts keep their free GPUs'
        // share of CPU and memory from them anyway.
        if request.isCPU { return nil }
        var best: (cost: Cost, node: Int, units: [Unit])?
        for (position, node) in snapshot.nodes.enumerated() {
            guard nodeFilters.allSatisfy({ $0.filter(request, node: node) == nil }) else { continue }
            let options: [(deficit: Int, units: [Unit])]
            switch request.demand {
            case .wholeGPUs(let count, let vramGB):
                options = [wholeOption(count: count, vramGB: vramGB, request, node, snapshot)].compactMap { $0 }
            case .largeSlot(_, let vramGB):
                options = [wholeOption(count: 1, vramGB: vramGB, request, node, snapshot)].compactMap { $0 }
            case .shared(_, let vramGB):
                options = sharedOptions(vramGB: vramGB, request, node, snapshot)
            case .cpu:
                options = []
            }
            for option in options {
                guard let (cost, units) = Self.cheapest(option.units, covering: option.deficit) else { continue }
                if let current = best, current.cost <= cost { continue }
                best = (cost, position, units)
            }
        }
        guard let best else { return nil }
        let victims = best.units.flatMap(\.victims).sorted {
            ($0.priority.rank, $0.tenant, $0.name) < ($1.priority.rank, $1.tenant, $1.name)
        }
        return PreemptionPlan(
            preemptor: request, node: snapshot.nodes[best.node].name, victims: victims,
            modelServersToStop: best.units.compactMap(\.server).sorted())
    }

    /// One evictable thing: a whole-GPU replica, or a Mode 3 server with everyone attached to it.
    struct Unit {
        var victims: [Victim]
        var server: String?
        /// GPUs (whole) or GB (shared) it frees towards the deficit.
        var frees: Int
        var vramGB: Int
        var maxRank: Int { victims.map(\.priority.rank).max() ?? -1 }
    }

    /// Fewest victims, then the lowest most-important tier, then the least VRAM.
    struct Cost: Comparable {
        var victims: Int
        var maxRank: Int
        var vramGB: Int
        static func < (a: Cost, b: Cost) -> Bool {
            (a.victims, a.maxRank, a.vramGB) < (b.victims, b.maxRank, b.vramGB)
        }
    }

    /// Largest unit sets examined exhaustively (a node rarely has more than 8 GPUs).
    static let maxUnitsExamined = 12

    /// The cheapest subset of `units` freeing at least `deficit`.
    static func cheapest(_ units: [Unit], covering deficit: Int) -> (Cost, [Unit])? {
        let pool = Array(units.sorted { ($0.victims.count, -$0.frees) < ($1.victims.count, -$1.frees) }
            .prefix(maxUnitsExamined))
        guard pool.reduce(0, { $0 + $1.frees }) >= deficit else { return nil }
        var best: (Cost, Int)?
        for mask in 1..<(1 << pool.count) {
            var frees = 0, victims = 0, maxRank = -1, vram = 0
            for i in pool.indices where mask & (1 << i) != 0 {
                frees += pool[i].frees
                victims += pool[i].victims.count
                maxRank = max(maxRank, pool[i].maxRank)
                vram += pool[i].vramGB
            }
            guard frees >= deficit else { continue }
            let cost = Cost(victims: victims, maxRank: maxRank, vramGB: vram)
            if let current = best, current.0 <= cost { continue }
            best = (cost, mask)
        }
        guard let (cost, mask) = best else { return nil }
        return (cost, pool.indices.filter { mask & (1 << $0) != 0 }.map { pool[$0] })
    }

    /// Whole GPUs: replicas of a lower tier holding GPUs large enough, freeing them all.
    private func wholeOption(
        count: Int, vramGB: Int, _ request: PlacementRequest, _ node: NodeState, _ snapshot: ClusterSnapshot
    ) -> (deficit: Int, units: [Unit])? {
        var free = 0
        var byOwner: [String: Int] = [:]
        for gpu in node.gpus where gpu.healthy && gpu.vramTotalGB >= vramGB && gpu.sharedServers.isEmpty {
            if let owner = gpu.owner { byOwner[owner, default: 0] += 1 } else { free += 1 }
        }
        let deficit = count - free
        guard deficit > 0 else { return nil }
        var units: [Unit] = []
        for (key, frees) in byOwner.sorted(by: { $0.key < $1.key }) {
            guard let held = snapshot.held[key], held.priority < request.priority else { continue }
            let vram = node.gpus.filter { $0.owner == key }.reduce(0) { $0 + $1.vramTotalGB }
            units.append(Unit(
                victims: [Victim(name: held.name, tenant: held.tenant, priority: held.priority,
                                 gpuIndices: held.gpuIndices, modelServer: nil)],
                server: nil, frees: frees, vramGB: vram))
        }
        return (deficit, units)
    }

    /// Shared GPUs: per GPU, servers whose every tenant is of a lower tier, freeing their VRAM.
    private func sharedOptions(
        vramGB: Int, _ request: PlacementRequest, _ node: NodeState, _ snapshot: ClusterSnapshot
    ) -> [(deficit: Int, units: [Unit])] {
        var options: [(deficit: Int, units: [Unit])] = []
        for gpu in node.gpus where gpu.isShareable && gpu.vramTotalGB >= vramGB {
            let deficit = vramGB - gpu.vramFreeGB
            guard deficit > 0 else { continue }
            var units: [Unit] = []
            for name in gpu.sharedServers {
                guard let id = snapshot.serverIndex[name] else { continue }
                let server = snapshot.modelServers[id]
                // Attachments the snapshot can't see can't be judged: such a server stays.
                guard !server.stopped, server.reportedAttachments <= server.attached.count else { continue }
                let held = server.attached.compactMap { snapshot.held[$0] }
                guard held.count == server.attached.count,
                    held.allSatisfy({ $0.priority < request.priority })
                else { continue }
                units.append(Unit(
                    victims: held.map {
                        Victim(name: $0.name, tenant: $0.tenant, priority: $0.priority,
                               gpuIndices: [server.gpuIndex], modelServer: name)
                    },
                    server: name, frees: server.vramGB, vramGB: server.vramGB))
            }
            options.append((deficit, units))
        }
        return options
    }
}

extension ClusterSnapshot {
    /// Applies `plan`: its victims release what they hold and its servers stop.
    public mutating func evict(_ plan: PreemptionPlan) {
        for victim in plan.victims { release(replica: victim.key) }
        for server in plan.modelServersToStop { stopModelServer(named: server) }
    }
}
