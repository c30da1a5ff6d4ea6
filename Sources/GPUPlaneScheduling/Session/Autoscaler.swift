#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// Step 5 of the pass: sizes every deployment between `min_instances` and `max_instances` from
/// the load the api-servers' gateways report (``DeploymentLoad``).
///
/// - **Wanted**: enough instances for the requests in flight or waiting at once, summed over
///   every api-server, at `max_batch_size` each: `ceil(demand / max_batch_size)`, within the
///   bounds. A request turned away because no instance was ready counts as demand for one, so a
///   deployment at zero instances starts one when called.
/// - **Up** at once, as far as the tenant's GPU limit allows (the rest is an Event saying so),
///   never for a tenant over its spending limit; guarded by the tenant's GPU admission key, so a
///   scale-up and an api-server's admission cannot together pass the limit.
/// - **Down** only after the wanted count stayed below the current one for `scaleDownDelay`,
///   to the highest count wanted during that time; the instances with the highest indices go.
///
/// The new count is the deployment's `status.instancesWanted`, written with the instances it
/// adds or removes in one fenced transaction.
///
/// When the last round ran, since when each deployment wanted fewer instances than it has
/// (and the most it wanted since), and the rounds run are this step's state across passes.
final class Autoscaler: Sendable {
    /// Knobs.
    struct Configuration: Sendable {
        /// How often the reports are read and deployments sized.
        var interval: Duration = .seconds(2)
        /// How long the wanted count must stay below the current one before scaling down.
        var scaleDownDelay: Duration = .seconds(300)
    }

    /// Why an autoscaler event was written.
    enum Reason {
        /// Instances added or removed for the load.
        static let scaled = "Scaled"
        /// The load wants more instances than the tenant's GPU limit allows.
        static let scaleLimited = "ScaleLimited"
    }

    let configuration: Configuration
    /// Makes the replicas of the instances it adds.
    let planner: ReplicaPlanner
    let logger: Logger
    private let state = Locked(State())

    private struct State {
        var lastRun: ContinuousClock.Instant?
        /// Rounds run: load reports read, deployments sized.
        var rounds = 0
        /// deployment key → since when fewer instances were wanted than run, and the most
        /// wanted since.
        var low: [String: (since: ContinuousClock.Instant, highest: Int)] = [:]
    }

    init(configuration: Configuration, planner: ReplicaPlanner, logger: Logger) {
        self.configuration = configuration
        self.planner = planner
        self.logger = logger
    }

    /// Rounds run so far.
    var rounds: Int { state.withLock { $0.rounds } }

    /// Whether a run is due.
    func isDue(now: ContinuousClock.Instant) -> Bool {
        guard let last = state.withLock({ $0.lastRun }) else { return true }
        return now - last >= configuration.interval
    }

    /// Starts a round at `now`: the gateways' load reports summed per `<tenant>/<deployment>`
    /// (requests at once), or nil when they cannot be read (etcd slow or failing over): that
    /// skips the round, it must not end the term.
    func readDemand(from loads: LoadReports, now: ContinuousClock.Instant) async -> [String: Int]? {
        state.withLock { $0.lastRun = now }
        let reports: [LoadReports.Report]
        do {
            reports = try await loads.all()
        } catch {
            logger.warning("cannot read the deployments' load reports; sizing them on a later round", metadata: ["error": "\(error)"])
            return nil
        }
        var demand: [String: Int] = [:]
        for report in reports { demand["\(report.tenant)/\(report.deployment)", default: 0] += report.load.demand }
        state.withLock { $0.rounds += 1 }
        return demand
    }

    /// The writes for `demand` (requests at once, per `<tenant>/<deployment>`) on the pass's
    /// lists; a scale-up is guarded on the revision the replicas were read at.
    func writes(_ input: PassInput, demand: [String: Int], overSpendingLimit: (Tenant) -> Bool) -> [WriteUnit] {
        let (replicas, now) = (input.replicas, input.clock)
        var instances: [String: [Replica]] = [:]
        var heldGPUs: [String: Int] = [:]
        for replica in replicas {
            heldGPUs[replica.metadata.tenant, default: 0] += replica.spec.gpus
            if replica.spec.owner.kind == .deployment {
                instances["\(replica.metadata.tenant)/\(replica.spec.owner.name)", default: []].append(replica)
            }
        }
        let tenantsByName = Dictionary(input.tenants.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var units: [WriteUnit] = []
        var seen = Set<String>()
        for deployment in input.deployments {
            let key = "\(deployment.metadata.tenant)/\(deployment.metadata.name)"
            seen.insert(key)
            guard deployment.status.state != .deleting, let tenant = tenantsByName[deployment.metadata.tenant] else { continue }
            let settings = deployment.spec.settings
            let mine = (instances[key] ?? []).filter { $0.spec.owner.uid == deployment.metadata.uid }
            let current = mine.count
            var wanted = DeploymentLoad.instances(
                forDemand: demand[key] ?? 0, maxBatchSize: deployment.spec.maxBatchSize, minInstances: settings.minInstances,
                maxInstances: settings.maxInstances)
            // Over its spending limit a tenant keeps what runs, down to min_instances (the meter
            // enforces that).
            if wanted > current, overSpendingLimit(tenant) { wanted = max(current, settings.minInstances) }
            if wanted > current {
                state.withLock { _ = $0.low.removeValue(forKey: key) }
                let perInstance = max(1, deployment.spec.numGPUs)
                let room = max(0, tenant.spec.gpuLimit - (heldGPUs[tenant.metadata.name] ?? 0)) / perInstance
                let target = min(wanted, current + room)
                var unit = WriteUnit(ops: [])
                if target < wanted {
                    unit.events.append(.init(
                        involved: EventRecorder.reference(deployment), tenant: tenant.metadata.name, severity: .warning,
                        reason: Reason.scaleLimited,
                        message: "the load wants \(wanted) instances of \(deployment.fullName) but the GPU limit of \(tenant.spec.gpuLimit) allows \(target)",
                        aggregate: true))
                }
                guard target > current else {
                    if !unit.events.isEmpty { units.append(unit) }
                    continue
                }
                heldGPUs[tenant.metadata.name, default: 0] += (target - current) * perInstance
                let taken = Set(mine.compactMap { Int($0.spec.role) })
                let added = (0..<settings.maxInstances).filter { !taken.contains($0) }.prefix(target - current)
                unit.ops += added.map { .create(planner.replica(for: deployment, index: $0)) }
                unit.ops.append(.update(scaled(deployment, to: target)))
                unit.guards.append(.init(key: KeySpace.gpuAdmission(tenant: tenant.metadata.name), revision: input.replicaRevision))
                unit.events.append(.init(
                    involved: EventRecorder.reference(deployment), tenant: tenant.metadata.name, severity: .normal,
                    reason: Reason.scaled, message: "scaled up from \(current) to \(target) instances for \(demand[key] ?? 0) requests at once",
                    aggregate: true))
                units.append(unit)
            } else if current > settings.maxInstances {
                // Above the bounds (max_instances lowered): down to max at once.
                state.withLock { _ = $0.low.removeValue(forKey: key) }
                units.append(scaleDown(deployment, tenant: tenant.metadata.name, mine, to: settings.maxInstances, why: "max_instances is \(settings.maxInstances)"))
            } else if wanted < current {
                let (since, highest) = state.withLock { s -> (ContinuousClock.Instant, Int) in
                    let entry = s.low[key].map { ($0.since, max($0.highest, wanted)) } ?? (now, wanted)
                    s.low[key] = entry
                    return entry
                }
                guard now - since >= configuration.scaleDownDelay else { continue }
                state.withLock { _ = $0.low.removeValue(forKey: key) }
                let target = max(highest, settings.minInstances)
                guard target < current else { continue }
                units.append(scaleDown(
                    deployment, tenant: tenant.metadata.name, mine, to: target,
                    why: "at most \(highest) wanted for \(configuration.scaleDownDelay)"))
            } else {
                state.withLock { _ = $0.low.removeValue(forKey: key) }
            }
        }
        state.withLock { s in s.low = s.low.filter { seen.contains($0.key) } }
        return units
    }

    /// Removes the instances with the highest indices down to `target`.
    private func scaleDown(_ deployment: Deployment, tenant: String, _ mine: [Replica], to target: Int, why: String) -> WriteUnit {
        let removed = mine.sorted { (Int($0.spec.role) ?? 0) > (Int($1.spec.role) ?? 0) }.prefix(max(0, mine.count - target))
        var unit = WriteUnit(ops: removed.map { .delete($0) } + [.update(scaled(deployment, to: target))])
        unit.events.append(.init(
            involved: EventRecorder.reference(deployment), tenant: tenant, severity: .normal, reason: Reason.scaled,
            message: "scaled down from \(mine.count) to \(target) instances: \(why)", aggregate: true))
        return unit
    }

    private func scaled(_ deployment: Deployment, to count: Int) -> Deployment {
        var updated = deployment
        updated.status.instancesWanted = count
        if count > 0, updated.status.state == .stopped { updated.status.state = .deploying }
        if count == 0 {
            updated.status.state = .stopped
            updated.status.message = nil
        }
        return updated
    }
}
