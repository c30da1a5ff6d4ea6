import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem

/// Checks that look at what a tenant already holds: plan, GPU limit, spending limit.
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
        } catch let error as StoreError {
            throw APIError.from(error, what: "tenant \(name)")
        }
    }

    /// Every replica of a tenant, or only those whose names start with `namePrefix` (one
    /// owner's: `<app>.` or `deploy.<model>.`).
    func replicas(of tenant: String, namePrefix: String = "") async throws -> [Replica] {
        do {
            return try await deps.store.list(Replica.self, tenant: tenant, namePrefix: namePrefix).items
        } catch let error as StoreError {
            throw APIError.from(error, what: "replicas")
        }
    }

    /// What a GPU-limit decision was made on: commit it with ``guardDecision(_:)`` so two
    /// applies that each fit the limit alone cannot both commit.
    struct GPUDecision: Sendable {
        /// The tenant's admission marker key.
        let key: String
        /// The revision the tenant's replicas were read at.
        let revision: Int64
    }

    /// Why a transaction guarded by a ``GPUDecision`` failed: another GPU admission of the same
    /// tenant committed after the decision's read.
    static let gpuDecisionReason = "another apply of this tenant took GPUs meanwhile"

    /// Thrown when the guard failed; the caller reads and decides again.
    struct Race: Error {}

    /// `/gpuplane/admission/<tenant>/gpus` (``Tenant/gpuAdmissionKey(_:)``).
    static func gpuMarker(tenant: String) -> String { Tenant.gpuAdmissionKey(tenant) }

    /// Refuses when `adding` whole GPUs on top of what the tenant's other replicas hold passes
    /// its limit. `replacing` are replicas the write removes (the object's own, on update).
    /// Returns the decision to guard the write with (nil when no whole GPU is added).
    func checkGPULimit(tenant: Tenant, replacing owner: OwnerReference?, adding: Int, field: String) async throws -> GPUDecision? {
        // Only whole GPUs count; shared attachments and CPU pods never need the tenant-wide read.
        guard adding > 0 else { return nil }
        let list: ResourceList<Replica>
        do {
            list = try await deps.store.list(Replica.self, tenant: tenant.metadata.name)
        } catch let error as StoreError {
            throw APIError.from(error, what: "replicas")
        }
        let held = ReplicaPlanner.wholeGPUs(list.items.filter { replica in
            guard let owner else { return true }
            return !(replica.spec.owner.kind == owner.kind && replica.spec.owner.name == owner.name)
        })
        let limit = tenant.spec.gpuLimit
        if held + adding > limit {
            throw APIError(
                .forbidden, .forbidden,
                "this needs \(adding) whole GPU\(adding == 1 ? "" : "s") but \(held) of your limit of \(limit) are already held; free some or ask an operator to raise the limit (e.g. 4 instances × 1 GPU or 1 instance × 4 GPUs)",
                field: field)
        }
        return GPUDecision(key: Self.gpuMarker(tenant: tenant.metadata.name), revision: list.revision)
    }

    /// Adds `decision`'s guard to a transaction: it commits only if no other GPU admission of
    /// the tenant committed since the decision's read.
    static func guardDecision(_ decision: GPUDecision?, in txn: inout StoreTransaction) {
        guard let decision else { return }
        txn.bump(decision.key, unchangedSince: decision.revision, reason: gpuDecisionReason)
    }

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

    /// Turns a store failure of a guarded write into ``Race`` when the guard is what failed.
    static func race(_ error: StoreError) -> (any Error)? {
        error.code == .preconditionFailed && error.failedCondition == gpuDecisionReason ? Race() : nil
    }

    /// Refuses new GPU work when the month's metered spend has reached the tenant's limit.
    func checkSpendingLimit(tenant: Tenant, wantsGPU: Bool) async throws {
        guard wantsGPU, let limit = tenant.spec.spendingLimitMicroDollars else { return }
        let spent = try await monthToDateSpend(tenant: tenant.metadata.name)
        if spent >= limit {
            throw APIError(
                .forbidden, .forbidden,
                "your spending limit of $\(String(format: "%.2f", Double(limit) / 1e6)) this month is reached ($\(String(format: "%.2f", Double(spent) / 1e6)) spent); raise it or wait for next month")
        }
    }

    /// Micro-dollars billed to a tenant since the start of this month (UTC).
    func monthToDateSpend(tenant: String) async throws -> Int64 {
        let start = Admission.monthStart(Date())
        do {
            return try await deps.store.list(UsageRecord.self, tenant: tenant).items
                .filter { $0.spec.intervalStart >= start }
                .reduce(0) { $0 + $1.spec.costMicroDollars }
        } catch let error as StoreError {
            throw APIError.from(error, what: "usage")
        }
    }

    /// The first instant of `date`'s month in UTC.
    static func monthStart(_ date: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        return calendar.date(from: calendar.dateComponents([.year, .month], from: date)) ?? date
    }
}

/// Per tenant, how often an apply without a version named an application that already existed,
/// recent applies weighing most (each moves the rate a fifth of the way to 0 or 1).
///
/// Why: a first apply tries create-if-absent, one transaction when the name is new. For a name
/// that exists (a re-apply, e.g. from a GitOps loop) that transaction fails, which still costs
/// etcd a raft round, a read to tell why, and in a flat write batch a resend of the whole
/// batch nested. Once most of a tenant's applies are re-applies, they read first instead.
/// Either path gives the same answer; this only picks the cheaper one. Each api-server replica
/// keeps its own.
final class ApplyHistory: Sendable {
    private let rates = Locked([String: Double]())
    /// Above this, a tenant's applies read first.
    static let readFirstAbove = 0.5
    /// Tenants remembered at most (all are forgotten past it; they start over at create-first).
    static let capacity = 100_000

    /// Records whether an apply of `tenant` found its application already there.
    func record(tenant: String, existed: Bool) {
        rates.withLock { rates in
            if rates.count >= Self.capacity, rates[tenant] == nil { rates.removeAll() }
            rates[tenant] = (rates[tenant] ?? 0) * 0.8 + (existed ? 0.2 : 0)
        }
    }

    /// Whether `tenant`'s applies should read before writing.
    func readsFirst(tenant: String) -> Bool {
        rates.withLock { ($0[tenant] ?? 0) > Self.readFirstAbove }
    }
}
