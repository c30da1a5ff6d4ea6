#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// A binding to write, with the model server to create beside it: what one etcd transaction of
/// a batch commits.
public struct ReplicaBinding: Sendable, Hashable {
    /// The replica's tenant.
    public let tenant: String
    /// The replica's name.
    public let name: String
    /// Where it goes.
    public let binding: Binding
    /// A server to create with it (Mode 2, or Mode 3 when none could be attached to).
    public let newModelServer: ModelServerPlan?
}

/// What a batch decided, in the order it decided.
public struct BatchResult: Sendable {
    /// What became of one replica.
    public enum Outcome: Sendable, Hashable {
        /// Bind it now.
        case bound(Placement)
        /// Stop the plan's victims first; then the placement becomes possible.
        case preempting(PreemptionPlan, Placement)
        /// Nothing fits now.
        case refused(Refusal)
        /// The request itself is wrong.
        case invalid(PlacementError)
    }

    /// One replica's outcome.
    public struct Entry: Sendable, Hashable {
        /// The replica's tenant.
        public let tenant: String
        /// The replica's name.
        public let name: String
        /// What became of it.
        public let outcome: Outcome
    }

    /// Every replica, in placement order (priority, then age).
    public internal(set) var entries: [Entry] = []

    /// The bindings to commit now, in one transaction.
    public var bindings: [ReplicaBinding] {
        entries.compactMap { entry in
            guard case .bound(let placement) = entry.outcome else { return nil }
            return ReplicaBinding(
                tenant: entry.tenant, name: entry.name, binding: placement.binding,
                newModelServer: placement.newModelServer)
        }
    }

    /// Preemptions to carry out (stop the victims, then the preemptor is placed on a later pass).
    public var preemptions: [PreemptionPlan] {
        entries.compactMap { entry in
            guard case .preempting(let plan, _) = entry.outcome else { return nil }
            return plan
        }
    }

    /// Replicas bound now.
    public var boundCount: Int { bindings.count }
}

/// Partial placement of a deployment's instances (`reference/custom-llm-deployments.txt`: run
/// what fits, bill only what runs, say how many wait).
public struct InstancePlacement: Sendable {
    /// Instances placed by this call.
    public let placements: [Placement]
    /// Why the rest wait, when some do.
    public let refusal: Refusal?
    /// Instances running or placed.
    public let running: Int
    /// Instances wanted.
    public let wanted: Int

    /// `running` when every wanted instance has a place, `partial` when some do, `deploying`
    /// when none does yet.
    public var state: DeploymentStatus.State {
        if running >= wanted { return .running }
        return running > 0 ? .partial : .deploying
    }

    /// `2/3 running, waiting for capacity`, or `3/3 running`.
    public var message: String {
        running >= wanted ? "\(running)/\(wanted) running" : "\(running)/\(wanted) running, waiting for capacity"
    }
}

extension Pipeline {
    /// Batch order: higher tier first, then older first, then tenant and name.
    public static func batchOrder(_ a: PlacementRequest, _ b: PlacementRequest) -> Bool {
        if a.priority != b.priority { return a.priority > b.priority }
        switch (a.created, b.created) {
        case let (x?, y?) where x != y: return x < y
        case (.some, nil): return true
        case (nil, .some): return false
        default: return (a.tenant, a.name) < (b.tenant, b.name)
        }
    }

    /// Places many pending replicas in one pass (replicas already bound are skipped), ordered by
    /// priority then age, committing each placement to `snapshot` before the next, so no GPU is
    /// given twice. With `preempt`, a replica that doesn't fit evicts lower tiers in the
    /// snapshot and is reported as `preempting`.
    public func placeBatch(
        _ replicas: [Replica], in snapshot: inout ClusterSnapshot, preempt: Bool = false
    ) -> BatchResult {
        var result = BatchResult()
        var requests: [PlacementRequest] = []
        requests.reserveCapacity(replicas.count)
        for replica in replicas where replica.binding == nil {
            do {
                requests.append(try request(for: replica))
            } catch {
                result.entries.append(.init(
                    tenant: replica.metadata.tenant, name: replica.metadata.name, outcome: .invalid(error)))
            }
        }
        let placed = placeBatch(requests: requests, in: &snapshot, preempt: preempt)
        result.entries.append(contentsOf: placed.entries)
        return result
    }

    /// `placeBatch(_:in:preempt:)` for requests already resolved.
    public func placeBatch(
        requests: [PlacementRequest], in snapshot: inout ClusterSnapshot, preempt: Bool = false
    ) -> BatchResult {
        var result = BatchResult()
        result.entries.reserveCapacity(requests.count)
        // Within a batch capacity only shrinks (until a preemption frees some), so a shape that
        // was refused once is refused again: remember the refusal instead of re-diagnosing.
        var refusedShapes: [Shape: Refusal] = [:]
        var unpreemptable: Set<Shape> = []
        for request in requests.sorted(by: Self.batchOrder) {
            let shape = Shape(request)
            let outcome: BatchResult.Outcome
            if let refusal = refusedShapes[shape] {
                outcome = preemptOrRefuse(request, refusal, shape, &snapshot, preempt, &unpreemptable, &refusedShapes)
            } else {
                switch place(request, in: &snapshot) {
                case .bound(let placement):
                    outcome = .bound(placement)
                case .refused(let refusal):
                    refusedShapes[shape] = refusal
                    outcome = preemptOrRefuse(request, refusal, shape, &snapshot, preempt, &unpreemptable, &refusedShapes)
                }
            }
            result.entries.append(.init(tenant: request.tenant, name: request.name, outcome: outcome))
        }
        return result
    }

    /// Places a deployment's pending instances until `wanted` have a place, stopping at the first
    /// that doesn't fit (they all have the same shape): "2/3 running, waiting for capacity".
    public func placeInstances(
        _ pending: [Replica], running: Int, wanted: Int, in snapshot: inout ClusterSnapshot
    ) throws(PlacementError) -> InstancePlacement {
        var placements: [Placement] = []
        var refusal: Refusal?
        let ordered = pending.filter { $0.binding == nil }.sorted { $0.metadata.name < $1.metadata.name }
        for replica in ordered where running + placements.count < wanted {
            let request = try request(for: replica)
            switch place(request, in: &snapshot) {
            case .bound(let placement):
                placements.append(placement)
            case .refused(let why):
                refusal = why
            }
            if refusal != nil { break }
        }
        return InstancePlacement(
            placements: placements, refusal: refusal, running: running + placements.count, wanted: wanted)
    }

    // MARK: Pieces

    /// What decides whether two requests fit the same places (the tenant only when it has a limit to meet).
    struct Shape: Hashable {
        var demand: PlacementRequest.Demand
        var machineTypes: [String]
        var tenant: String
        var priority: GPUPriority
        var fixedResources: ComputeResources?

        init(_ request: PlacementRequest) {
            fixedResources = request.fixedResources
            demand = request.demand
            machineTypes = request.machineTypes
            tenant = request.wholeGPUs > 0 ? request.tenant : ""
            priority = request.priority
        }
    }

    private func preemptOrRefuse(
        _ request: PlacementRequest, _ refusal: Refusal, _ shape: Shape, _ snapshot: inout ClusterSnapshot,
        _ preempt: Bool, _ unpreemptable: inout Set<Shape>, _ refusedShapes: inout [Shape: Refusal]
    ) -> BatchResult.Outcome {
        guard preempt, !unpreemptable.contains(shape), let plan = preemption(for: request, in: snapshot) else {
            unpreemptable.insert(shape)
            return .refused(refusal)
        }
        var trial = snapshot
        trial.evict(plan)
        guard case .bound(let placement) = place(request, in: &trial) else {
            unpreemptable.insert(shape)
            return .refused(refusal)
        }
        snapshot = trial
        // Room was made: refusals remembered so far may no longer hold.
        refusedShapes.removeAll()
        return .preempting(plan, placement)
    }
}
