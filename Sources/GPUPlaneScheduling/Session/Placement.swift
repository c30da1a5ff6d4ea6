#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// Step 4 of the pass: every pending replica through ``Pipeline/placeBatch(_:in:preempt:)`` on a
/// snapshot of the pass's lists.
///
/// - **Bound**: the replica's binding (with the leader's revision in it) and, for Mode 2/3, the
///   new model server it starts, in one unit; a `Scheduled` event when
///   ``LeaderSession/Configuration/recordBindEvents``.
/// - **Preempting**: the binding, each victim unbound with a message naming the preemptor, and
///   the model servers the plan stops, in one unit; `Preempted`/`Preempting` events.
/// - **Refused** or **invalid**: a `FailedScheduling` note, and the replica's `status.message`
///   when it changes. A replica preempted this term keeps saying by whom while it waits.
///
/// The replicas preempted this term (with the words saying by whom) and the invalid outcomes
/// reported already are this step's state across passes.
final class PlacementStep: Sendable {
    let pipeline: Pipeline
    /// The leader key's create revision: written into every binding and seeding the snapshot.
    let leaderRevision: Int64
    /// Whether a replica that doesn't fit may preempt lower tiers.
    let preemption: Bool
    /// Whether each bind is recorded as an `Event` (`Scheduled`).
    let recordBindEvents: Bool
    private let state = Locked(State())

    private struct State {
        /// The last snapshot's nodes part, reused while no node changes.
        var nodeBase: SnapshotNodeBase?
        /// Replicas whose `invalid` outcome was reported already.
        var reportedInvalid: [String: String] = [:]
        /// Replicas preempted this term, with the words saying by whom (kept in their message
        /// while they wait).
        var preempted: [String: String] = [:]
    }

    init(pipeline: Pipeline, leaderRevision: Int64, preemption: Bool, recordBindEvents: Bool) {
        self.pipeline = pipeline
        self.leaderRevision = leaderRevision
        self.preemption = preemption
        self.recordBindEvents = recordBindEvents
    }

    /// The cluster as the pass's lists show it, with the warm pool's tenant (no GPU limit); the
    /// nodes' part is the previous pass's while no node changed.
    func snapshot(of input: PassInput) -> ClusterSnapshot {
        var tenants = input.tenants
        tenants.append(Tenant(metadata: ObjectMeta(name: WarmPool.tenant), spec: .init(plan: .enterprise, gpuLimit: .max)))
        let snapshot = ClusterSnapshot(
            nodes: input.nodes, replicas: input.replicas, modelServers: input.servers, tenants: tenants,
            machineTypes: pipeline.machineTypes, seed: UInt64(bitPattern: leaderRevision),
            reusing: state.withLock { $0.nodeBase })
        state.withLock { $0.nodeBase = snapshot.nodeBase }
        return snapshot
    }

    /// The bindings and preemptions, then the messages of replicas that wait; `snapshot`
    /// takes every placement made.
    func writes(_ input: PassInput, _ snapshot: inout ClusterSnapshot) -> [WriteUnit] {
        let pending = input.replicas.filter { $0.binding == nil && $0.status.phase == .pending }
        guard !pending.isEmpty else { return [] }
        // Positions, not copies: a Replica retains dozens of references, and this names all.
        let positions = Dictionary(
            input.replicas.indices.map { ("\(input.replicas[$0].metadata.tenant)/\(input.replicas[$0].metadata.name)", $0) },
            uniquingKeysWith: { a, _ in a })
        func byKey(_ key: String) -> Replica? { positions[key].map { input.replicas[$0] } }
        let serversByName = Dictionary(input.servers.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let result = pipeline.placeBatch(pending, in: &snapshot, preempt: preemption)

        var units: [WriteUnit] = []
        var messages: [WriteUnit] = []
        for entry in result.entries {
            let key = "\(entry.tenant)/\(entry.name)"
            guard let replica = byKey(key) else { continue }
            switch entry.outcome {
            case .bound(let placement):
                units.append(bindUnit(replica, placement))
            case .preempting(let plan, let placement):
                var unit = bindUnit(replica, placement)
                for victim in plan.victims {
                    guard var v = byKey(victim.key), v.binding != nil else { continue }
                    v.unbind(message: plan.message(for: victim))
                    unit.ops.append(.update(v))
                    state.withLock { $0.preempted[victim.key] = plan.message(for: victim) }
                    unit.events.append(.init(
                        involved: EventRecorder.reference(v), tenant: v.metadata.tenant, severity: .warning,
                        reason: EventRecorder.Reason.preempted, message: plan.message(for: victim), aggregate: false))
                }
                for name in plan.modelServersToStop {
                    if let server = serversByName[name] { unit.ops.append(.delete(server)) }
                }
                unit.events.append(.init(
                    involved: EventRecorder.reference(replica), tenant: replica.metadata.tenant, severity: .normal,
                    reason: EventRecorder.Reason.preempting, message: plan.preemptorMessage, aggregate: false))
                units.append(unit)
            case .refused(let refusal):
                var summary = refusal.summary
                if let preempted = state.withLock({ $0.preempted[key] }) { summary = "\(preempted); waiting: \(summary)" }
                messages.append(contentsOf: waiting(replica, summary))
            case .invalid(let error):
                let seen = state.withLock { $0.reportedInvalid.updateValue(error.message, forKey: key) }
                guard seen != error.message else { continue }
                messages.append(contentsOf: waiting(replica, error.message))
            }
        }
        return units + messages
    }

    /// A `FailedScheduling` note for `replica`, and its message when it changes.
    private func waiting(_ replica: Replica, _ message: String) -> [WriteUnit] {
        var units: [WriteUnit] = [.note(.init(
            involved: EventRecorder.reference(replica), tenant: replica.metadata.tenant, severity: .warning,
            reason: EventRecorder.Reason.failedScheduling, message: message, aggregate: true))]
        if replica.status.message != message {
            var updated = replica
            updated.status.message = message
            units.append(WriteUnit(ops: [.update(updated)]))
        }
        return units
    }

    private func bindUnit(_ replica: Replica, _ placement: Placement) -> WriteUnit {
        state.withLock { _ = $0.preempted.removeValue(forKey: "\(replica.metadata.tenant)/\(replica.metadata.name)") }
        var updated = replica
        var binding = placement.binding
        binding.leaderRevision = leaderRevision
        updated.binding = binding
        updated.status.phase = .bound
        updated.status.message = nil
        var ops: [WriteOp] = []
        if let plan = placement.newModelServer {
            var server = plan.modelServer(catalog: pipeline.catalog)
            server.binding?.leaderRevision = leaderRevision
            server.status.attachedReplicas = ["\(replica.metadata.tenant)/\(replica.metadata.name)"]
            ops.append(.create(server))
        }
        ops.append(.update(updated))
        var unit = WriteUnit(ops: ops, bindings: [binding])
        if recordBindEvents {
            let gpus = binding.gpuIndices.map(String.init).joined(separator: ",")
            let server = binding.modelServer.map { " (model server \($0))" } ?? ""
            let what = binding.gpuIndices.isEmpty ? " (CPU)" : " GPU \(gpus)"
            unit.events.append(.init(
                involved: EventRecorder.reference(replica), tenant: replica.metadata.tenant, severity: .normal,
                reason: EventRecorder.Reason.scheduled,
                message: "bound to \(binding.node)\(what)\(server)", aggregate: false))
        }
        return unit
    }
}
