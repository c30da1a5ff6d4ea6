import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

@testable import GPUPlaneScheduling

/// Usage retention against real etcd: records of months older than the retention become
/// monthly totals, in bounded batches, exactly once whoever leads.
@Suite("Usage retention against etcd", .serialized, .enabled(if: EtcdFixture.isAvailable), .timeLimit(.minutes(5)))
struct UsageRetentionTests {
    /// What one tenant's records of a month, mode and tier add up to.
    struct Sum: Hashable {
        var seconds = 0, included = 0, billable = 0, records = 0, gpuSeconds = 0
        var cost: Int64 = 0
    }

    /// The months used: two well past the 400-day retention, one within it, and this one.
    static let now = Date()
    static let oldMonths = [UsageRecord.monthStart(of: now.addingTimeInterval(-800 * 86_400)),
                            UsageRecord.monthStart(of: now.addingTimeInterval(-700 * 86_400))]
    static let keptMonths = [UsageRecord.monthStart(of: now.addingTimeInterval(-100 * 86_400)), UsageRecord.monthStart(of: now)]

    /// `perReplica` interval records of each of `replicas` in each month, modes and tiers
    /// mixed, written as the meter writes them.
    static func records(tenant: String, replicas: Int, perReplica: Int, months: [Date]) -> [UsageRecord] {
        var out: [UsageRecord] = []
        for month in months {
            for r in 0..<replicas {
                let mode: GPUMode = [.dedicated, .largePinned, .sharedPinned][r % 3]
                let priority: GPUPriority = r % 2 == 0 ? .inference : .batch
                let gpus = mode == .sharedPinned ? 0 : 1 + r % 2
                for k in 0..<perReplica {
                    let start = month.addingTimeInterval(Double(3600 + k * 300))
                    let billable = k % 3 == 0 ? 0 : 300
                    out.append(UsageRecord(
                        metadata: ObjectMeta(
                            name: UsageRecord.name(replica: "app-\(r).api", intervalStart: start), tenant: tenant,
                            labels: ["gpuplane.io/replica": "app-\(r).api"]),
                        spec: .init(
                            replica: "app-\(r).api", owner: "applications/app-\(r)", intervalStart: start, seconds: 300,
                            mode: mode, priority: priority, gpus: gpus, includedSeconds: 300 - billable,
                            billableSeconds: billable, costMicroDollars: Int64(billable * (r + 1) * 7))))
                }
            }
        }
        return out
    }

    func write(_ h: SchedulerHarness, _ records: [UsageRecord]) async throws {
        var start = 0
        while start < records.count {
            let chunk = records[start..<min(start + 50, records.count)]
            _ = try await h.store.transaction { txn in
                for record in chunk { _ = try txn.create(record) }
            }
            start += chunk.count
        }
    }

    /// Sums by tenant, month, mode and tier: of interval records, and of everything stored
    /// (totals and the records not yet compacted), which must always agree.
    static func sums(_ records: [UsageRecord]) -> [String: Sum] {
        var out: [String: Sum] = [:]
        for record in records {
            let key = "\(record.metadata.tenant)/\(UsageRecord.month(of: record.spec.intervalStart))/\(record.spec.mode.rawValue)/\(record.spec.priority.rawValue)"
            var sum = out[key] ?? Sum()
            sum.seconds += record.spec.seconds
            sum.included += record.spec.includedSeconds
            sum.billable += record.spec.billableSeconds
            sum.cost += record.spec.costMicroDollars
            sum.records += record.spec.isMonthly ? (record.spec.records ?? 0) : 1
            sum.gpuSeconds += record.spec.isMonthly ? (record.spec.gpuSeconds ?? 0) : record.spec.seconds * record.spec.gpus
            out[key] = sum
        }
        return out
    }

    static func session(batchSize: Int, maxOperations: Int) -> LeaderSession.Configuration {
        var session = SchedulerHarness.sessionConfiguration()
        session.maxOperationsPerTransaction = maxOperations
        session.usageRetentionSettings.batchSize = batchSize
        return session
    }

    @Test("records of months past the retention become monthly totals, in bounded batches; the sums never change")
    func compactsOldMonthsOnly() async throws {
        try await SchedulerHarness.with { h in
            let old = Self.records(tenant: "acme", replicas: 4, perReplica: 9, months: Self.oldMonths)
                + Self.records(tenant: "beta", replicas: 2, perReplica: 5, months: Self.oldMonths)
            let kept = Self.records(tenant: "acme", replicas: 4, perReplica: 3, months: Self.keptMonths)
                + Self.records(tenant: "beta", replicas: 2, perReplica: 3, months: Self.keptMonths)
            try await write(h, old + kept)
            let expected = Self.sums(old + kept)
            // Pages of 10 records, transactions of at most 6 writes (totals and deletions).
            let scheduler = h.startScheduler(session: Self.session(batchSize: 10, maxOperations: 6))
            try await h.waitUntilLeading(scheduler)
            // While it works, every read adds up to the same sums: a record is in a total
            // exactly when it is gone.
            try await eventually("only totals left of the old months", timeout: 60, every: 0.05) {
                let stored = try await h.store.list(UsageRecord.self).items
                #expect(Self.sums(stored) == expected)
                return !stored.contains { !$0.spec.isMonthly && Self.oldMonths.contains(UsageRecord.monthStart(of: $0.spec.intervalStart)) }
            }
            let stored = try await h.store.list(UsageRecord.self).items
            #expect(Self.sums(stored) == expected)
            let totals = stored.filter(\.spec.isMonthly)
            // One total per tenant, month, mode and tier that had records: acme has 3 modes ×
            // 2 tiers of its 4 replicas (4 combinations), beta 2, in each of the two months.
            #expect(totals.count == (4 + 2) * 2, "\(totals.map(\.metadata.name))")
            for total in totals {
                #expect(total.metadata.name.hasPrefix("_month."))
                #expect(total.spec.intervalStart == UsageRecord.monthStart(of: total.spec.intervalStart))
                #expect(Self.oldMonths.contains(total.spec.intervalStart))
                #expect(total.metadata.labels["gpuplane.io/month"] == UsageRecord.month(of: total.spec.intervalStart))
            }
            // The months within the retention, the current one above all, are as they were.
            let intervalRecords = Set(stored.filter { !$0.spec.isMonthly }.map(\.metadata.name))
            #expect(intervalRecords == Set(kept.map(\.metadata.name)))
            // The session's own count: all of them, unless leadership lapsed on a loaded machine
            // and a later session finished the work (the sums above hold either way).
            let compacted = scheduler.currentSession?.statistics.usageRecordsCompacted ?? 0
            #expect(compacted == old.count || (1..<old.count).contains(compacted), "\(compacted) of \(old.count)")
        }
    }

    @Test("exactly once: a deposed leader's compaction commits nothing, a decision on a stale read commits nothing, a new leader finishes")
    func exactlyOnceAcrossLeaders() async throws {
        try await SchedulerHarness.with { h in
            let old = Self.records(tenant: "acme", replicas: 3, perReplica: 8, months: Self.oldMonths)
            try await write(h, old)
            let expected = Self.sums(old)
            let election = "/test/retention-election"
            let logger = SchedulerHarness.quietLogger
            func term() async throws -> LeaderFence {
                let lease = try await h.client.grantLease(ttl: 30).id
                return LeaderFence(try await h.client.campaign(election, lease: lease, value: "x"))
            }
            let settings = UsageRetention.Configuration(retention: UsageRetention.defaultRetention, interval: .seconds(3600), batchSize: 12)
            let input = PassInput(now: Date())

            // A leader whose term ended: its fenced writes are refused, nothing changes.
            let firstLease = try await h.client.grantLease(ttl: 30).id
            let firstKey = try await h.client.campaign(election, lease: firstLease, value: "a")
            try await h.client.resign(firstKey)
            let deposed = Committer(store: h.store, fence: LeaderFence(firstKey), configuration: .init(maxOperationsPerTransaction: 8), logger: logger)
            await #expect(throws: SchedulerError.self) {
                _ = try await UsageRetention(configuration: settings, logger: logger).run(input, store: h.store, committer: deposed)
            }
            #expect(try await h.store.list(UsageRecord.self).items.count == old.count)

            // The new leader decides on a read; meanwhile the same records are compacted (as a
            // leader before it did just before losing its term): the stale units are refused.
            let fence = try await term()
            let committer = Committer(store: h.store, fence: fence, configuration: .init(maxOperationsPerTransaction: 8), logger: logger)
            let page = try await h.store.page(UsageRecord.self, limit: 12)
            let group = try #require(UsageRetention.groups(UsageRetention.compactable(page.items, cutoff: Date().addingTimeInterval(-400 * 86_400))).first)
            let stale = UsageRetention.unit(for: group.records, tenant: group.tenant, monthStart: group.monthStart, totals: [], limit: 8)
            #expect(stale.records > 0)
            let other = UsageRetention(configuration: settings, logger: logger)
            while other.isDue(now: .now) {
                _ = try await other.run(PassInput(now: Date()), store: h.store, committer: committer)
            }
            #expect(Self.sums(try await h.store.list(UsageRecord.self).items) == expected)
            #expect(try await committer.commit([stale.unit]) == false)
            let stored = try await h.store.list(UsageRecord.self).items
            #expect(Self.sums(stored) == expected)
            #expect(stored.allSatisfy { $0.spec.isMonthly })
            #expect(other.compacted == old.count)

            // Run again: nothing left to do, nothing changes.
            let again = UsageRetention(configuration: settings, logger: logger)
            while again.isDue(now: .now) {
                #expect(try await again.run(PassInput(now: Date()), store: h.store, committer: committer) == false)
            }
            #expect(Self.sums(try await h.store.list(UsageRecord.self).items) == expected)
        }
    }

    @Test("a failover in the middle of compacting: the new leader finishes, every record counted once")
    func failoverMidway() async throws {
        try await SchedulerHarness.with { h in
            let old = Self.records(tenant: "acme", replicas: 6, perReplica: 20, months: Self.oldMonths)
            try await write(h, old)
            let expected = Self.sums(old)
            let session = Self.session(batchSize: 4, maxOperations: 5)
            let a = h.startScheduler(identity: "a", session: session)
            try await h.waitUntilLeading(a)
            try await eventually("a has compacted some", timeout: 30, every: 0.02) {
                try await h.store.list(UsageRecord.self).items.contains(where: \.spec.isMonthly)
            }
            let b = h.startScheduler(identity: "b", session: session)
            a.shutdown()
            try await h.waitUntilLeading(b)
            try await eventually("everything compacted", timeout: 60, every: 0.05) {
                let stored = try await h.store.list(UsageRecord.self).items
                #expect(Self.sums(stored) == expected)
                return stored.allSatisfy(\.spec.isMonthly)
            }
            #expect(Self.sums(try await h.store.list(UsageRecord.self).items) == expected)
            #expect((b.currentSession?.statistics.usageRecordsCompacted ?? 0) < old.count)
        }
    }
}
