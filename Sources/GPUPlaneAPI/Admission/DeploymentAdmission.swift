import GPUPlaneCore
import GPUPlaneStore

/// Creates, scalings and deletes of custom LLM deployments: a deployment and the replicas of
/// its instances are admitted (GPU limit, spending limit) and written together, in one
/// transaction, or not at all.
struct DeploymentAdmission: Sendable {
    let deps: APIDependencies
    var admission: Admission { Admission(deps: deps) }

    /// Creates a deployment of `spec` for `tenant` with `min_instances` instances. Returns it
    /// as stored and the replicas of its instances.
    /// - Throws: 403 over a limit; 409 when the tenant has a deployment of that name.
    func create(_ spec: DeploymentSpec, tenant: Tenant) async throws -> (Deployment, [Replica]) {
        let tenantName = tenant.metadata.name
        var deployment = Deployment(
            metadata: ObjectMeta(name: spec.modelName, tenant: tenantName, uid: ObjectMeta.newUID()), spec: spec)
        let wanted = spec.settings.minInstances
        deployment.status = DeploymentStatus(state: wanted == 0 ? .stopped : .deploying, instancesRunning: 0, instancesWanted: wanted)
        let replicas = (0..<wanted).map { deps.planner.replica(for: deployment, index: $0) }
        let stored = try await admission.inTurn(tenantName) {
            let decision = try await admission.checkGPULimit(
                tenant: tenant, replacing: nil, adding: spec.numGPUs * wanted, field: "settings.min_instances")
            try await admission.checkSpendingLimit(tenant: tenant, wantsGPU: wanted > 0)
            do {
                let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<Deployment> in
                    Admission.guardDecision(decision, in: &txn)
                    let handle = try txn.create(deployment)
                    for replica in replicas { try txn.create(replica) }
                    return handle
                }
                return try result.object(handle)
            } catch let error as StoreError where error.code == .alreadyExists {
                throw APIError(
                    .conflict, .conflict, "a deployment named \(tenantName)/\(spec.modelName) exists; pick another model_name or update it",
                    field: "model_name")
            } catch let error as StoreError {
                throw Admission.race(error)
            }
        }
        return (stored, replicas)
    }

    /// Scales `deployment` to `settings` (`min_instances`, `max_instances`), adding or removing
    /// instances in the same transaction: the instances wanted stay where the autoscaler put
    /// them, within the new bounds. With `expectedVersion`, only if the deployment is at it.
    /// Returns the deployment as stored.
    /// - Throws: 403 over a limit or for bounds the plan refuses, 422 for bounds that break a
    ///   rule, 409 when the version is not the deployment's.
    func scale(_ deployment: Deployment, to settings: DeploymentSettings, tenant: Tenant, expectedVersion: String?) async throws -> Deployment {
        let tenantName = tenant.metadata.name
        var deployment = deployment
        if let expected = expectedVersion, expected != deployment.metadata.resourceVersion {
            throw APIError(
                .conflict, .conflict,
                "deployment \(deployment.spec.modelName) is at resourceVersion \(deployment.metadata.resourceVersion), not \(expected); read it again and retry")
        }
        var spec = deployment.spec
        spec.settings = settings
        let diagnostics = DeploymentValidator(context: deps.validationContext(for: tenant)).validate(spec)
            .filter { $0.path.hasPrefix("settings") || $0.code == .gpuLimitExceeded }
        if diagnostics.hasErrors { throw APIError.rejected(diagnostics) }
        let mine = try await admission.replicas(of: tenantName, namePrefix: ReplicaPlanner.replicaPrefix(deployment: deployment.metadata.name))
            .filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == deployment.metadata.name }
        // Wanted stays where the autoscaler put it, within the new bounds.
        let wanted = min(max(deployment.status.instancesWanted, settings.minInstances), settings.maxInstances)
        let decision = try await admission.checkGPULimit(
            tenant: tenant, replacing: OwnerReference(kind: .deployment, name: deployment.metadata.name, uid: deployment.metadata.uid),
            adding: spec.numGPUs * wanted, field: "settings.min_instances")
        if wanted > mine.count { try await admission.checkSpendingLimit(tenant: tenant, wantsGPU: true) }
        deployment.spec = spec
        deployment.status.instancesWanted = wanted
        let indices = Set(mine.compactMap { Int($0.spec.role) })
        let toCreate = (0..<wanted).filter { !indices.contains($0) }.map { deps.planner.replica(for: deployment, index: $0) }
        let toDelete = mine.filter { (Int($0.spec.role) ?? Int.max) >= wanted }
        let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<Deployment> in
            Admission.guardDecision(decision, in: &txn)
            let handle = try txn.update(deployment)
            for replica in toCreate { try txn.create(replica) }
            for replica in toDelete {
                txn.delete(Replica.self, tenant: tenantName, name: replica.metadata.name, expectedVersion: replica.metadata.resourceVersion)
            }
            return handle
        }
        return try result.object(handle)
    }

    /// Deletes `deployment` (only at `expectedVersion` when given) and its instances, in one
    /// transaction.
    func delete(_ deployment: Deployment, expectedVersion: String?) async throws {
        let tenant = deployment.metadata.tenant
        let replicas = try await admission.replicas(of: tenant, namePrefix: ReplicaPlanner.replicaPrefix(deployment: deployment.metadata.name))
            .filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == deployment.metadata.name }
        _ = try await deps.store.transaction { txn in
            txn.delete(Deployment.self, tenant: tenant, name: deployment.metadata.name, expectedVersion: expectedVersion)
            for replica in replicas {
                txn.delete(Replica.self, tenant: tenant, name: replica.metadata.name, expectedVersion: replica.metadata.resourceVersion)
            }
        }
    }
}
