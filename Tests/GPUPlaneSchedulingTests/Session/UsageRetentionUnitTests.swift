import Foundation
import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// The retention step's decisions on plain lists: what is old enough, how it is grouped, and
/// the units that move records into totals within the transaction size.
@Suite struct UsageRetentionUnitTests {
    static func date(_ year: Int, _ month: Int, _ day: Int = 1, hour: Int = 0) -> Date {
        var parts = DateComponents()
        (parts.year, parts.month, parts.day, parts.hour) = (year, month, day, hour)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: parts)!
    }

    static func record(
        _ replica: String, _ start: Date, tenant: String = "acme", mode: GPUMode = .dedicated,
        priority: GPUPriority = .inference, cost: Int64 = 10, version: String = "5"
    ) -> UsageRecord {
        var record = UsageRecord(
            metadata: ObjectMeta(name: UsageRecord.name(replica: replica, intervalStart: start), tenant: tenant),
            spec: .init(
                replica: replica, owner: "applications/x", intervalStart: start, seconds: 300, mode: mode, priority: priority,
                gpus: 1, includedSeconds: 0, billableSeconds: 300, costMicroDollars: cost))
        record.metadata.resourceVersion = version
        return record
    }

    @Test func aRecordIsCompactedOnlyOnceItsWholeMonthIsPastTheCutoff() {
        let cutoff = Self.date(2024, 3, 1)
        let lastOfFebruary = Self.record("a.b", Self.date(2024, 2, 29, hour: 23))
        let firstOfMarch = Self.record("a.b", Self.date(2024, 3, 1))
        let january = Self.record("a.b", Self.date(2024, 1, 10))
        var total = UsageRecord.monthlyTotal(tenant: "acme", monthStart: Self.date(2023, 1), mode: .dedicated, priority: .inference)
        total.metadata.resourceVersion = "3"
        let due = UsageRetention.compactable([january, lastOfFebruary, firstOfMarch, total], cutoff: cutoff)
        #expect(due.map(\.metadata.name) == [january.metadata.name, lastOfFebruary.metadata.name])
        // A second earlier, February is not over yet by the cutoff: nothing of it goes.
        #expect(UsageRetention.compactable([lastOfFebruary], cutoff: cutoff.addingTimeInterval(-1)).isEmpty)
    }

    @Test func theCurrentMonthIsNeverCompactedWhateverTheRetention() {
        let step = UsageRetention(configuration: .init(retention: .seconds(1)), logger: .init(label: "t"))
        let now = Date()
        let thisMonth = Self.record("a.b", UsageRecord.monthStart(of: now))
        #expect(UsageRetention.compactable([thisMonth], cutoff: step.cutoff(now: now)).isEmpty)
        #expect(step.cutoff(now: now) == now.addingTimeInterval(-1))
    }

    @Test func recordsAreGroupedByTenantAndMonth() {
        let records = [
            Self.record("a.b", Self.date(2023, 1, 2), tenant: "beta"), Self.record("a.b", Self.date(2023, 2, 2)),
            Self.record("c.d", Self.date(2023, 1, 3)), Self.record("a.b", Self.date(2023, 1, 2)),
        ]
        let groups = UsageRetention.groups(records)
        #expect(groups.map { "\($0.tenant)/\(UsageRecord.month(of: $0.monthStart))" } == ["acme/2023-01", "acme/2023-02", "beta/2023-01"])
        #expect(groups[0].records.count == 2)
        #expect(groups[0].monthStart == Self.date(2023, 1))
    }

    @Test func aUnitMovesRecordsIntoTotalsWithinTheTransactionSize() throws {
        let month = Self.date(2023, 1)
        var records: [UsageRecord] = []
        for k in 0..<10 {
            let priority: GPUPriority = k % 2 == 0 ? .inference : .batch
            let start = month.addingTimeInterval(Double(k * 300))
            records.append(Self.record("r\(k % 2).x", start, priority: priority, cost: Int64(k)))
        }
        var stored = UsageRecord.monthlyTotal(tenant: "acme", monthStart: month, mode: .dedicated, priority: .batch)
        stored.spec.seconds = 1000
        stored.spec.records = 4
        stored.spec.costMicroDollars = 100
        stored.metadata.resourceVersion = "77"
        // Six writes at most: two totals and four deletions.
        let planned = UsageRetention.unit(for: records, tenant: "acme", monthStart: month, totals: [stored], limit: 6)
        #expect(planned.records == 4 && planned.totals == 2)
        #expect(planned.unit.ops.count == 6)
        var created: [UsageRecord] = [], updated: [UsageRecord] = [], deleted: [String] = []
        for op in planned.unit.ops {
            switch op {
            case .create(let o): created.append(try #require(o as? UsageRecord))
            case .update(let o): updated.append(try #require(o as? UsageRecord))
            case .delete(let o): deleted.append(o.metadata.name)
            }
        }
        #expect(deleted == records.prefix(4).map { $0.metadata.name })
        // The batch total existed: updated on its version, the new records added to it.
        let batch = try #require(updated.first)
        #expect(batch.metadata.name == "_month.2023-01.mode1.batch" && batch.metadata.resourceVersion == "77")
        #expect(batch.spec.records == 6 && batch.spec.seconds == 1600 && batch.spec.costMicroDollars == 100 + 1 + 3)
        // The inference one did not: created.
        let inference = try #require(created.first)
        #expect(inference.metadata.name == "_month.2023-01.mode1.inference")
        #expect(inference.spec.records == 2 && inference.spec.costMicroDollars == 0 + 2)
        // A tiny transaction still moves one record with its total.
        let tiny = UsageRetention.unit(for: records, tenant: "acme", monthStart: month, totals: [], limit: 1)
        #expect(tiny.records == 1 && tiny.unit.ops.count == 2)
    }
}
