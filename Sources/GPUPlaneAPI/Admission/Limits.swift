import Foundation
import GPUPlaneCore
import GPUPlaneStore

extension StoreTransaction.ConditionTag {
    /// The guard of a GPU decision: the tenant's GPU admission marker did not move since the
    /// decision's read (``Admission/GPUDecision``).
    static let gpuAdmission = Self("api.gpu-admission")
}

/// The tenant's limits: whole GPUs held at once, and the month's spend.
extension Admission {
    /// What a GPU-limit decision was made on: commit it with ``guardDecision(_:in:)`` so two
    /// admissions that each fit the limit alone cannot both commit.
    struct GPUDecision: Sendable {
        /// The tenant.
        let tenant: String
        /// The revision the tenant's replicas were read at.
        let revision: Int64
    }

    /// Refuses when `adding` whole GPUs on top of what the tenant's other replicas hold passes
    /// its limit. `replacing` are replicas the write removes (the object's own, on update).
    /// Returns the decision to guard the write with (nil when no whole GPU is added).
    func checkGPULimit(tenant: Tenant, replacing owner: OwnerReference?, adding: Int, field: String) async throws -> GPUDecision? {
        // Only whole GPUs count; shared attachments and CPU pods never need the tenant-wide read.
        guard adding > 0 else { return nil }
        let list = try await deps.store.list(Replica.self, tenant: tenant.metadata.name)
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
        return GPUDecision(tenant: tenant.metadata.name, revision: list.revision)
    }

    /// Adds `decision`'s guard to a transaction: it commits only if no other GPU admission of
    /// the tenant (an api-server's, or the autoscaler's scale-up) committed since the
    /// decision's read, and moves the tenant's marker (``KeySpace/gpuAdmission(tenant:)``) so
    /// the next one waits for this. A failed guard is ``StoreTransaction/ConditionTag/gpuAdmission``
    /// (``race(_:)``).
    static func guardDecision(_ decision: GPUDecision?, in txn: inout StoreTransaction) {
        guard let decision else { return }
        txn.bump(
            KeySpace.gpuAdmission(tenant: decision.tenant), unchangedSince: decision.revision,
            reason: "another apply of this tenant took GPUs meanwhile", tag: .gpuAdmission)
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
        return try await deps.store.list(UsageRecord.self, tenant: tenant).items
            .filter { $0.spec.intervalStart >= start }
            .reduce(0) { $0 + $1.spec.costMicroDollars }
    }

    /// The first instant of `date`'s month in UTC.
    static func monthStart(_ date: Date) -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        return calendar.date(from: calendar.dateComponents([.year, .month], from: date)) ?? date
    }
}
