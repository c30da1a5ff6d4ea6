#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

extension LeaderSession {
    /// A node's `Ready` reasons written by the node-lifecycle step (``NodeLifecycle``).
    public enum ReadyReason {
        /// The heartbeat key says silent (or stayed missing past the grace): the node stopped calling.
        public static let heartbeatExpired = "HeartbeatExpired"
        /// The heartbeat key is there.
        public static let heartbeatReceived = "HeartbeatReceived"
    }
}

/// Step 1 of the pass: a node's `Ready` condition follows its heartbeat key.
///
/// A key that says silent (its api-server saw the node stop beating), or a test's key seen to
/// expire → `Ready` false (`HeartbeatExpired`); a live key back → true (`HeartbeatReceived`). A
/// Ready node without a key (it registered a moment ago, this term began after its key went,
/// or the key vanished with its api-server's lease while the node moves to another
/// api-server) gets ``heartbeatGrace`` on this scheduler's own clock first, so two watches a
/// moment apart, or an api-server's death, never make a node that never stopped NotReady.
/// Since when each such node is missing its key is this step's state across passes. A node
/// whose grace ran out is NotReady only once etcd itself confirms it has no live key: the
/// heartbeat watch may lag the node watch (a loaded machine, a slow stream), and a key that is
/// there but not yet delivered is not a silent node.
final class NodeLifecycle: Sendable {
    /// How long a Ready node may show no heartbeat key, without its key saying silent, before
    /// it is NotReady.
    let heartbeatGrace: Duration
    /// Ready nodes without a heartbeat key whose expiry was not seen, since when.
    private let missingSince = Locked([String: ContinuousClock.Instant]())

    init(heartbeatGrace: Duration) { self.heartbeatGrace = heartbeatGrace }

    /// The nodes whose `Ready` condition changes, one unit each with its event.
    ///
    /// `confirmSilent` is asked, only when some Ready node's grace ran out, which of those nodes
    /// etcd shows without a live key now (``HeartbeatWatcher/confirmSilent(_:)``); the others
    /// stay Ready and keep their grace's start, so the next pass asks again until the watch
    /// delivers their key.
    func writes(_ input: PassInput, confirmSilent: (Set<String>) async throws -> Set<String>) async throws -> [WriteUnit] {
        let liveness = input.liveness
        let clock = input.clock
        var units: [WriteUnit] = []
        // A Ready node whose key is absent but was never seen to expire is silent only once
        // the grace has passed on this scheduler's own clock.
        let graceOver: Set<String> = missingSince.withLock { missingSince in
            var graceOver: Set<String> = []
            var missing: [String: ContinuousClock.Instant] = [:]
            // By index, here and below: a `for node in` copies every Node (dozens of references).
            for i in input.nodes.indices {
                let name = input.nodes[i].metadata.name
                guard !liveness.live.contains(name) && !liveness.expired.contains(name) else { continue }
                let since = missingSince[name] ?? clock
                missing[name] = since
                if clock - since >= heartbeatGrace, input.nodes[i].status.isReady { graceOver.insert(name) }
            }
            missingSince = missing
            return graceOver
        }
        let silent = graceOver.isEmpty ? liveness.expired : liveness.expired.union(try await confirmSilent(graceOver))
        for i in input.nodes.indices {
            let current = input.nodes[i].status.conditions.first { $0.type == NodeHeartbeat.readyCondition }
            let alive = liveness.live.contains(input.nodes[i].metadata.name)
            let ready = current?.status ?? false
            guard alive != ready else { continue }
            let node = input.nodes[i]
            var updated = node
            let involved = OwnerReference(kind: .node, name: node.metadata.name, uid: node.metadata.uid)
            if alive, !ready, current == nil || current?.reason == LeaderSession.ReadyReason.heartbeatExpired {
                updated.status.conditions.removeAll { $0.type == NodeHeartbeat.readyCondition }
                updated.status.conditions.append(Condition(
                    type: NodeHeartbeat.readyCondition, status: true, reason: LeaderSession.ReadyReason.heartbeatReceived,
                    message: "heartbeat key present", lastTransition: input.now))
                units.append(WriteUnit(ops: [.update(updated)], events: [
                    .init(involved: involved, tenant: ObjectMeta.clusterTenant, severity: .normal,
                          reason: EventRecorder.Reason.nodeReady, message: "node \(node.metadata.name) is ready", aggregate: false)
                ]))
            } else if !alive, ready, silent.contains(node.metadata.name) {
                updated.status.conditions.removeAll { $0.type == NodeHeartbeat.readyCondition }
                updated.status.conditions.append(Condition(
                    type: NodeHeartbeat.readyCondition, status: false, reason: LeaderSession.ReadyReason.heartbeatExpired,
                    message: "no heartbeat", lastTransition: input.now))
                units.append(WriteUnit(ops: [.update(updated)], events: [
                    .init(involved: involved, tenant: ObjectMeta.clusterTenant, severity: .warning,
                          reason: EventRecorder.Reason.nodeNotReady,
                          message: "node \(node.metadata.name) heartbeat expired; its replicas are rescheduled", aggregate: false)
                ]))
            }
        }
        return units
    }
}
