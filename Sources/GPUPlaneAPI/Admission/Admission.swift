import GPUPlaneCore
import GPUPlaneStore

/// What the api-server decides before it writes, and the writes it decides on: the tenant's
/// plan, its GPU and spending limits (``Limits.swift``), applications (``ApplicationAdmission``)
/// and deployments (``DeploymentAdmission``). Routes decode a request, call one of these and
/// encode what it returns; a ``StoreError`` let through is answered by ``ErrorMiddleware``.
struct Admission: Sendable {
    let deps: APIDependencies

    /// The tenant's record.
    /// - Throws: 403 when the tenant was never provisioned.
    func tenant(_ name: String) async throws -> Tenant {
        // The cache answers once synced; a tenant it hasn't seen yet (created a moment ago
        // through another replica) is read from etcd.
        if deps.tenants.hasSynced, let cached = deps.tenants.get(tenant: ObjectMeta.clusterTenant, name: name) {
            return cached
        }
        do {
            return try await deps.store.get(Tenant.self, tenant: ObjectMeta.clusterTenant, name: name)
        } catch let error as StoreError where error.code == .notFound {
            throw APIError(.forbidden, .forbidden, "tenant '\(name)' has no plan yet; ask an admin to create it (POST /v1/tenants)")
        }
    }

    /// Every replica of a tenant, or only those whose names start with `namePrefix` (one
    /// owner's: `<app>.` or `deploy.<model>.`).
    func replicas(of tenant: String, namePrefix: String = "") async throws -> [Replica] {
        try await deps.store.list(Replica.self, tenant: tenant, namePrefix: namePrefix).items
    }

    /// Thrown when a write lost the race to another admission it was guarded against; the
    /// caller reads and decides again (``retryingRaces(attempts:_:)``).
    struct Race: Error {}

    /// Runs an admission (read, decide, write guarded) again while it loses the race to another
    /// GPU admission of the same tenant; after `attempts`, answers 409.
    static func retryingRaces<T>(attempts: Int = 8, _ body: () async throws -> T) async throws -> T {
        for _ in 1..<attempts {
            do { return try await body() } catch is Race { continue }
        }
        do {
            return try await body()
        } catch is Race {
            throw APIError(.conflict, .conflict, "other applies of this tenant kept taking GPUs while this one was admitted; retry")
        }
    }

    /// `error` as ``Race`` when what failed is a GPU decision's guard (by its tag), else
    /// `error` itself.
    static func race(_ error: StoreError) -> any Error {
        error.code == .preconditionFailed && error.failedConditionTag == .gpuAdmission ? Race() : error
    }
}
