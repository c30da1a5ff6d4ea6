import Foundation
import GPUPlaneCore
import GPUPlaneStore

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

    /// Refuses when `adding` whole GPUs on top of what the tenant's other replicas hold passes
    /// its limit. `replacing` are replicas the write removes (the object's own, on update).
    func checkGPULimit(tenant: Tenant, replacing owner: OwnerReference?, adding: Int, field: String) async throws {
        // Only whole GPUs count; shared attachments and CPU pods never need the tenant-wide read.
        guard adding > 0 else { return }
        let existing = try await replicas(of: tenant.metadata.name)
        let held = ReplicaPlanner.wholeGPUs(existing.filter { replica in
            guard let owner else { return true }
            return !(replica.spec.owner.kind == owner.kind && replica.spec.owner.name == owner.name)
        })
        let limit = tenant.spec.gpuLimit
        if adding > 0, held + adding > limit {
            throw APIError(
                .forbidden, .forbidden,
                "this needs \(adding) whole GPU\(adding == 1 ? "" : "s") but \(held) of your limit of \(limit) are already held; free some or ask an operator to raise the limit (e.g. 4 instances × 1 GPU or 1 instance × 4 GPUs)",
                field: field)
        }
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
