#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
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
        // What may not run on each node, worked out once per node (a pass asks for each of
        // thousands of replicas).
        var checks: [String: NodeCheck] = [:]
        checks.reserveCapacity(input.nodes.count)
        // By index, here and below: a `for node in` copies every Node or Replica (dozens of
        // references each), thousands a pass.
        for position in input.nodes.indices where checks[input.nodes[position].metadata.name] == nil {
            checks[input.nodes[position].metadata.name] = NodeCheck(input.nodes[position], position: position)
        }
        var units: [WriteUnit] = []

        // Why nothing may run on `node`'s GPUs `indices`, or nil when all is well.
        func trouble(_ nodeName: String, _ indices: [Int]) -> String? {
            guard let check = checks[nodeName] else { return "node \(nodeName) is gone" }
            if let reason = check.notReady { return "node \(nodeName) not ready (\(reason))" }
            for index in indices {
                guard check.indices.contains(index) else { return "GPU \(index) is gone from node \(nodeName)" }
                if let unhealthy = check.unhealthy[index] { return "GPU \(index) on node \(nodeName) is unhealthy (\(unhealthy))" }
            }
            return nil
        }

        // Unhealthy GPUs, reported once each; a report is forgotten once its GPU is no longer
        // reported unhealthy.
        for position in input.nodes.indices where checks[input.nodes[position].metadata.name]?.anyUnhealthy == true {
            let node = input.nodes[position]
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
        }
        state.withLock { s in
            guard !s.unhealthyReported.isEmpty else { return }
            s.unhealthyReported = s.unhealthyReported.filter { key in
                guard let slash = key.firstIndex(of: "/"), let check = checks[String(key[..<slash])] else { return true }
                let uuid = key[key.index(after: slash)...]
                return input.nodes[check.position].status.unhealthyGPUs[String(uuid)] != nil
            }
        }

        var goneServers = Set<String>()
        for i in input.servers.indices {
            guard let binding = input.servers[i].binding, trouble(binding.node, binding.gpuIndices) != nil else { continue }
            goneServers.insert(input.servers[i].metadata.name)
            units.append(WriteUnit(ops: [.delete(input.servers[i])]))
        }
        let existingServers = Set(input.servers.map(\.metadata.name)).subtracting(goneServers)
        var evicted = 0
        for i in input.replicas.indices {
            guard let binding = input.replicas[i].binding else { continue }
            var why: String?
            if let message = trouble(binding.node, binding.gpuIndices) {
                why = message
            } else if let server = binding.modelServer, !existingServers.contains(server) {
                why = "model server \(server) is gone"
            }
            guard let why else { continue }
            let replica = input.replicas[i]
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

/// What one node allows, for ``Evictions``: whether it is ready, its GPUs' indices, and why
/// each unhealthy one is (a healthy node costs one array).
private struct NodeCheck {
    /// The node's place in the pass's list.
    var position: Int
    /// The `Ready` condition's reason when the node is not ready.
    var notReady: String?
    /// The indices of its GPUs.
    var indices: [Int]
    /// GPU index → why it is unhealthy (empty when all are healthy).
    var unhealthy: [Int: String] = [:]
    /// Whether any GPU is reported unhealthy.
    var anyUnhealthy: Bool

    init(_ node: Node, position: Int) {
        self.position = position
        if !node.status.isReady {
            notReady = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }?.reason ?? "NotReady"
        }
        indices = node.spec.gpus.map(\.index)
        let byUUID = node.status.unhealthyGPUs
        anyUnhealthy = !byUUID.isEmpty
        guard anyUnhealthy else { return }
        // The first GPU of an index counts.
        var seen = Set<Int>()
        for gpu in node.spec.gpus where seen.insert(gpu.index).inserted {
            if let reason = byUUID[gpu.uuid] { unhealthy[gpu.index] = reason }
        }
    }
}
