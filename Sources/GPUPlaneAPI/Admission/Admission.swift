import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Metrics

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
    /// caller reads and decides again (``inTurn(_:attempts:_:)``).
    struct Race: Error {}

    /// Runs an admission of `tenant` (read, decide, write guarded) once the tenant's admissions
    /// before it in this api-server are done, and again while it loses the race to another GPU
    /// admission of the tenant (another api-server's, the autoscaler's); after `attempts`,
    /// answers 409.
    ///
    /// Taking turns matters under bursts: a tenant's concurrent admissions each read its
    /// replicas and commit under a compare-and-swap of its marker, so of n at once one commits
    /// and n − 1 read again, n²/2 round trips in all (a burst of ten applies per tenant ran 7×
    /// slower through the fleet bench than one per tenant). In turn, each reads once.
    func inTurn<T: Sendable>(_ tenant: String, attempts: Int = 8, _ body: () async throws -> T) async throws -> T {
        try await deps.admissionTurns.run(tenant) {
            for _ in 1..<attempts {
                do { return try await body() } catch is Race { countRace() }
            }
            do {
                return try await body()
            } catch is Race {
                countRace()
                throw APIError(.conflict, .conflict, "other applies of this tenant kept taking GPUs while this one was admitted; retry")
            }
        }
    }

    private func countRace() {
        deps.admissionRaces.withLock { $0 += 1 }
        APIServerMetrics.admissionRaces.increment()
    }

    /// `error` as ``Race`` when what failed is a GPU decision's guard (by its tag), else
    /// `error` itself.
    static func race(_ error: StoreError) -> any Error {
        error.code == .preconditionFailed && error.failedConditionTag == .gpuAdmission ? Race() : error
    }
}
