import GPUPlaneSystem

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
