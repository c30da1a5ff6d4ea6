import Foundation
import GPUPlaneCore
import GPUPlaneSystem

/// Step 2 of the pass: what may no longer run where it is bound goes.
///
/// Replicas bound to a node that is gone or not ready, to a GPU that is gone or unhealthy, or
/// to a model server that is gone go back to pending with a message saying why (`Rescheduled`);
/// model servers on such nodes or GPUs are deleted (the node-agent stops what is no longer bound
/// to it). Each unhealthy GPU is reported once (`GPUUnhealthy`) until it is healthy again: the
/// GPUs reported, and the count of replicas evicted, are this step's state across passes.
final class Evictions: Sendable {
    private struct State {
        /// Unhealthy GPUs already reported (node/uuid).
        var unhealthyReported: Set<String> = []
        /// Replicas sent back to pending so far (decided, whether or not they committed).
        var evicted = 0
    }
    private let state = Locked(State())

    init() {}

    /// Replicas sent back to pending so far.
    var evicted: Int { state.withLock { $0.evicted } }

    /// The deletes and unbinds due, one unit each, and a note per newly unhealthy GPU.
    func writes(_ input: PassInput) -> [WriteUnit] {
        let byName = Dictionary(input.nodes.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var units: [WriteUnit] = []

        // Why nothing may run on `node`'s GPUs `indices`, or nil when all is well.
        func trouble(_ nodeName: String, _ indices: [Int]) -> String? {
            guard let node = byName[nodeName] else { return "node \(nodeName) is gone" }
            if !node.status.isReady {
                let reason = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }?.reason ?? "NotReady"
                return "node \(nodeName) not ready (\(reason))"
            }
            let health = Dictionary(node.status.gpuHealth.map { ($0.uuid, $0) }, uniquingKeysWith: { a, _ in a })
            for index in indices {
                guard let gpu = node.spec.gpus.first(where: { $0.index == index }) else {
                    return "GPU \(index) is gone from node \(nodeName)"
                }
                if let report = health[gpu.uuid], !report.healthy {
                    return "GPU \(index) on node \(nodeName) is unhealthy (\(report.reason ?? "unhealthy"))"
                }
            }
            return nil
        }

        // Unhealthy GPUs, reported once each.
        for node in input.nodes {
            for report in node.status.gpuHealth where !report.healthy {
                let key = "\(node.metadata.name)/\(report.uuid)"
                let fresh = state.withLock { $0.unhealthyReported.insert(key).inserted }
                guard fresh else { continue }
                let index = node.spec.gpus.first { $0.uuid == report.uuid }?.index ?? -1
                units.append(.note(.init(
                    involved: OwnerReference(kind: .node, name: node.metadata.name, uid: node.metadata.uid),
                    tenant: ObjectMeta.clusterTenant, severity: .warning, reason: EventRecorder.Reason.gpuUnhealthy,
                    message: "GPU \(index) (\(report.uuid)) unhealthy: \(report.reason ?? "unknown"); it takes no new work",
                    aggregate: false)))
            }
            let healthyNow = Set(node.status.gpuHealth.filter(\.healthy).map { "\(node.metadata.name)/\($0.uuid)" })
            state.withLock { $0.unhealthyReported.subtract(healthyNow) }
        }

        var goneServers = Set<String>()
        for server in input.servers {
            guard let binding = server.binding, trouble(binding.node, binding.gpuIndices) != nil else { continue }
            goneServers.insert(server.metadata.name)
            units.append(WriteUnit(ops: [.delete(server)]))
        }
        let existingServers = Set(input.servers.map(\.metadata.name)).subtracting(goneServers)
        var evicted = 0
        for replica in input.replicas {
            guard let binding = replica.binding else { continue }
            var why: String?
            if let message = trouble(binding.node, binding.gpuIndices) {
                why = message
            } else if let server = binding.modelServer, !existingServers.contains(server) {
                why = "model server \(server) is gone"
            }
            guard let why else { continue }
            var updated = replica
            updated.unbind(message: "\(why); rescheduling")
            units.append(WriteUnit(ops: [.update(updated)], events: [
                .init(involved: EventRecorder.reference(replica), tenant: replica.metadata.tenant, severity: .warning,
                      reason: EventRecorder.Reason.rescheduled, message: "\(why); rescheduling", aggregate: false)
            ]))
            evicted += 1
        }
        if evicted > 0 { state.withLock { $0.evicted += evicted } }
        return units
    }
}
