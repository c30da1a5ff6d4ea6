import Foundation
import GPUPlaneCore
import Testing

/// Monthly totals of usage records: UTC months by arithmetic, names, and sums.
@Suite struct UsageRecordTests {
    static func utc(_ text: String) -> Date {
        let formatter = ISO8601DateFormatter()
        return formatter.date(from: text)!
    }

    @Test(arguments: [
        ("2024-02-29T23:59:59Z", "2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
        ("2024-12-31T23:59:59Z", "2024-12", "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"),
        ("2025-01-01T00:00:00Z", "2025-01", "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01", "1970-01-01T00:00:00Z", "1970-02-01T00:00:00Z"),
        ("1969-12-31T23:59:59Z", "1969-12", "1969-12-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("2100-03-01T12:00:00Z", "2100-03", "2100-03-01T00:00:00Z", "2100-04-01T00:00:00Z"),
    ])
    func monthsAreUTC(_ date: String, _ month: String, _ start: String, _ next: String) {
        let d = Self.utc(date)
        #expect(UsageRecord.month(of: d) == month)
        #expect(UsageRecord.monthStart(of: d) == Self.utc(start))
        #expect(UsageRecord.nextMonthStart(after: d) == Self.utc(next))
    }

    @Test func everyDayOfFourYearsFallsInItsMonth() {
        let calendar: Calendar = {
            var c = Calendar(identifier: .gregorian)
            c.timeZone = TimeZone(identifier: "UTC")!
            return c
        }()
        var day = Self.utc("2023-01-01T06:00:00Z")
        for _ in 0..<(4 * 366) {
            let parts = calendar.dateComponents([.year, .month], from: day)
            #expect(UsageRecord.monthStart(of: day) == calendar.date(from: parts)!)
            day = day.addingTimeInterval(86_400)
        }
    }

    @Test func aMonthlyTotalAddsRecordsAndOtherTotals() {
        let start = Self.utc("2024-05-01T00:00:00Z")
        func record(_ k: Int, gpus: Int, cost: Int64) -> UsageRecord {
            UsageRecord(
                metadata: ObjectMeta(name: "a.b.\(k)", tenant: "acme"),
                spec: .init(
                    replica: "a.b", owner: "applications/a", intervalStart: start.addingTimeInterval(Double(k * 300)), seconds: 300,
                    mode: .largePinned, priority: .batch, gpus: gpus, includedSeconds: 100, billableSeconds: 200, costMicroDollars: cost))
        }
        let empty = UsageRecord.monthlyTotal(tenant: "acme", monthStart: start, mode: .largePinned, priority: .batch)
        #expect(empty.metadata.name == "_month.2024-05.mode2.batch")
        #expect(empty.metadata.tenant == "acme")
        #expect(empty.spec.isMonthly && empty.spec.intervalStart == start)
        let total = empty.adding(record(0, gpus: 1, cost: 5)).adding(record(1, gpus: 2, cost: 7))
        #expect(total.spec.seconds == 600 && total.spec.includedSeconds == 200 && total.spec.billableSeconds == 400)
        #expect(total.spec.costMicroDollars == 12 && total.spec.records == 2 && total.spec.gpuSeconds == 900)
        let merged = empty.adding(total).adding(record(2, gpus: 1, cost: 1))
        #expect(merged.spec.records == 3 && merged.spec.gpuSeconds == 1200 && merged.spec.costMicroDollars == 13)
        // Interval records stay as they were stored: no granularity written.
        let json = String(decoding: try! GPUPlaneJSON.encode(record(0, gpus: 1, cost: 5)), as: UTF8.self)
        #expect(!json.contains("granularity") && !json.contains("gpuSeconds"))
        #expect(String(decoding: try! GPUPlaneJSON.encode(total), as: UTF8.self).contains(#""granularity":"month""#))
    }
}
