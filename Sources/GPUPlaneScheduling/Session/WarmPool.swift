#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging

/// Step 7 of the pass: model servers kept running with no tenant, and idle ones stopped. No
/// state of its own.
///
/// - **Idle** servers (no replica bound to them) beyond a slug's pool size stop once they are
///   ``idleServerGrace`` old; warm ones are kept first.
/// - **Missing** warm servers are placed like a replica would be, always on a new server, on
///   the snapshot the placement step left (so they never take what a binding just took).
///
/// A replica of the slug takes a warm server before any new one is started (Mode 3 attaches
/// to it; Mode 2 takes an idle one over as its dedicated slot, see ``Pipeline``): the server
/// is then used, no longer idle, and a new warm one replaces it.
struct WarmPool: Sendable {
    /// The tenant the warm pool's placement requests use (no GPU limit).
    static let tenant = "_warm"

    /// Model servers kept running with no tenant attached, per catalog slug.
    var pool: [String: Int]
    /// A model server no bound replica uses is stopped once it is this old (and not needed
    /// for the pool).
    var idleServerGrace: Duration
    let pipeline: Pipeline
    /// The leader key's create revision, written into every binding.
    let leaderRevision: Int64
    let logger: Logger

    /// The idle servers to stop and the warm ones to start; `snapshot` takes every one started.
    func writes(_ input: PassInput, _ snapshot: inout ClusterSnapshot) -> [WriteUnit] {
        var used = Set<String>()
        for replica in input.replicas {
            if let server = replica.binding?.modelServer { used.insert(server) }
        }
        var idleBySlug: [String: [ModelServer]] = [:]
        for server in input.servers where !used.contains(server.metadata.name) {
            idleBySlug[server.spec.slug, default: []].append(server)
        }
        var units: [WriteUnit] = []
        // Idle servers beyond the pool stop once past their grace (warm ones are kept first).
        let grace = Double(idleServerGrace.components.seconds)
        for (slug, idle) in idleBySlug {
            let keep = pool[slug] ?? 0
            let ordered = idle.sorted { ($0.spec.warm ? 0 : 1, $0.metadata.name) < ($1.spec.warm ? 0 : 1, $1.metadata.name) }
            for server in ordered.dropFirst(keep) {
                guard let created = server.metadata.created, input.now.timeIntervalSince(created) >= grace else { continue }
                units.append(WriteUnit(ops: [.delete(server)], events: [
                    .init(involved: EventRecorder.reference(server), tenant: ObjectMeta.clusterTenant, severity: .normal,
                          reason: EventRecorder.Reason.modelServer, message: "stopped idle model server \(server.metadata.name)",
                          aggregate: false)
                ]))
            }
        }
        // Missing warm servers are placed like a replica would be, but always on a new server.
        for (slug, count) in pool.sorted(by: { $0.key < $1.key }) {
            let missing = count - (idleBySlug[slug]?.count ?? 0)
            guard missing > 0, let model = pipeline.catalog.model(slug) else { continue }
            for i in 0..<missing {
                let demand: PlacementRequest.Demand
                switch model.mode {
                case .sharedPinned: demand = .shared(slug: slug, vramGB: model.vramGB)
                case .largePinned: demand = .largeSlot(slug: slug, vramGB: max(model.vramGB, PlacementRequest.largeSlotMinimumGB))
                case .dedicated: continue
                }
                let request = PlacementRequest(
                    name: "warm-\(slug)-\(i)", tenant: Self.tenant, demand: demand, priority: .batch)
                var trial = snapshot
                trial.openServers[slug] = []
                trial.idleLargeServers[slug] = []
                guard case .bound(let placement) = pipeline.evaluate(request, in: trial),
                    let plan = placement.newModelServer
                else {
                    logger.debug("no room for a warm model server", metadata: ["slug": "\(slug)"])
                    break
                }
                snapshot.commit(placement)
                var server = plan.modelServer(catalog: pipeline.catalog)
                server.spec.warm = true
                server.binding?.leaderRevision = leaderRevision
                units.append(WriteUnit(ops: [.create(server)], events: [
                    .init(involved: OwnerReference(kind: .modelServer, name: server.metadata.name, uid: ""),
                          tenant: ObjectMeta.clusterTenant, severity: .normal, reason: EventRecorder.Reason.modelServer,
                          message: "started warm model server of \(slug) on \(plan.node) GPU \(plan.gpuIndex)", aggregate: false)
                ]))
            }
        }
        return units
    }
}
