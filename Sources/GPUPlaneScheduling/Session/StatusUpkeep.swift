#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// Step 6 of the pass: the status fields that summarise other objects, each written only when
/// it changes. No state of its own.
///
/// - A deployment's `status` says how many instances are placed ("2/3 running, waiting for
///   capacity"), how many run and how many are wanted.
/// - A model server's `status.attachedReplicas` lists the replicas bound to it.
enum StatusUpkeep {
    /// The deployments' and the model servers' status updates.
    static func writes(_ input: PassInput) -> [WriteUnit] {
        deploymentStatus(input.deployments, input.replicas) + serverAttachments(input.servers, input.replicas)
    }

    /// Deployments whose status differs from what their replicas say: one update each.
    static func deploymentStatus(_ deployments: [Deployment], _ replicas: [Replica]) -> [WriteUnit] {
        var owned: [String: [Replica]] = [:]
        for replica in replicas where replica.spec.owner.kind == .deployment {
            owned["\(replica.metadata.tenant)/\(replica.spec.owner.name)", default: []].append(replica)
        }
        var units: [WriteUnit] = []
        for deployment in deployments {
            switch deployment.status.state {
            case .deleting, .failed, .stopped: continue
            default: break
            }
            let mine = owned["\(deployment.metadata.tenant)/\(deployment.metadata.name)"] ?? []
            let wanted = deployment.status.instancesWanted > 0 ? deployment.status.instancesWanted : mine.count
            guard wanted > 0 else { continue }
            let placed = mine.filter(\.holdsCapacity).count
            let summary = InstancePlacement(placements: [], refusal: nil, running: placed, wanted: wanted)
            var status = deployment.status
            status.state = summary.state
            status.message = summary.message
            status.instancesRunning = mine.filter { $0.binding != nil && $0.status.phase == .running }.count
            status.instancesWanted = wanted
            guard status != deployment.status else { continue }
            var updated = deployment
            updated.status = status
            units.append(WriteUnit(ops: [.update(updated)]))
        }
        return units
    }

    /// Model servers whose `attachedReplicas` (`tenant/name` of each replica bound to them,
    /// sorted) differ from what the replicas say: one update each.
    static func serverAttachments(_ servers: [ModelServer], _ replicas: [Replica]) -> [WriteUnit] {
        var attached: [String: [String]] = [:]
        for replica in replicas {
            guard replica.holdsCapacity, let server = replica.binding?.modelServer else { continue }
            attached[server, default: []].append("\(replica.metadata.tenant)/\(replica.metadata.name)")
        }
        var units: [WriteUnit] = []
        for server in servers {
            let now = (attached[server.metadata.name] ?? []).sorted()
            guard now != server.status.attachedReplicas else { continue }
            var updated = server
            updated.status.attachedReplicas = now
            units.append(WriteUnit(ops: [.update(updated)]))
        }
        return units
    }
}
