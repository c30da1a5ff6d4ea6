#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Logging

/// Step 8 of the leader's pass: usage records older than the retention (`usage-retention`,
/// 400 days by default) are compacted into monthly totals, so etcd does not grow forever.
///
/// - A record is compacted once its whole month ended longer ago than the retention: months,
///   never parts of one, become totals, and the month under way never does. The meter's
///   month-to-date tally, admission's spending check and `GET /v1/usage` read the current
///   month's interval records only, so they are untouched.
/// - One total per tenant, month, mode and tier (``UsageRecord/monthlyTotal(tenant:monthStart:mode:priority:)``,
///   a `UsageRecord` of granularity `month` named `_month.<yyyy-mm>.mode<m>.<tier>`): seconds,
///   included, billable and GPU-seconds, cost, and how many records it holds.
/// - **Bounded**: a pass reads one page of at most ``Configuration/batchSize`` records (a scan
///   in key order, resumed on the next pass) and writes units of at most the committer's
///   transaction size.
/// - **Exactly once**: one unit, so one fenced transaction, holds a month's totals (created,
///   or updated on their `resourceVersion`) *and* the deletion of every record added to them
///   (each on its `resourceVersion`). Either both happen or neither: a record is counted in a
///   total exactly when it is gone, at every revision, so the records of a month always sum
///   to the same use and cost. A deposed leader's unit fails on the fence; a unit decided on
///   a stale read (a total or a record moved meanwhile) fails on its compare and is decided
///   again from a fresh read on the next pass.
///
/// Its state across passes: where the scan stands, when the next one starts, its counters. A
/// new leader starts a scan at once.
final class UsageRetention: Sendable {
    /// Knobs.
    struct Configuration: Sendable {
        /// Records whose month ended longer ago than this are compacted.
        var retention: Duration = UsageRetention.defaultRetention
        /// A new scan of every record starts at most this often (one runs at the start of a term).
        var interval: Duration = .seconds(6 * 3600)
        /// Records read, and compacted at most, per pass.
        var batchSize = 1000
    }

    /// 400 days.
    static let defaultRetention: Duration = .seconds(400 * 86_400)

    let configuration: Configuration
    let logger: Logger
    private let state = Locked(State())

    private struct State {
        /// The storage key the scan goes on after; nil at the start of a scan.
        var position: String?
        /// When the next scan starts; nil: now.
        var nextScan: ContinuousClock.Instant?
        /// Records compacted and totals written this term.
        var compacted = 0
        var totalsWritten = 0
        /// This scan's counts, logged when it ends.
        var scanCompacted = 0
    }

    init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Records compacted into totals so far this term.
    var compacted: Int { state.withLock { $0.compacted } }

    /// Whether a scan is under way or due.
    func isDue(now: ContinuousClock.Instant) -> Bool {
        state.withLock { s in s.position != nil || s.nextScan.map { now >= $0 } ?? true }
    }

    /// The end of the newest month that is compacted at `now`: records of months that ended
    /// by this instant are.
    func cutoff(now: Date) -> Date { now.addingTimeInterval(-configuration.retention.seconds) }

    /// Compacts the next page of the scan: reads it from `store`, commits through `committer`
    /// one unit per tenant and month. True when it wrote.
    /// - Throws: ``SchedulerError/Code/leadershipLost`` when the fence no longer holds; other
    ///   failures are logged and the scan starts again at the next interval.
    func run(_ input: PassInput, store: ResourceStore, committer: Committer) async throws -> Bool {
        let position = state.withLock { $0.position }
        let limit = committer.configuration.maxOperationsPerTransaction
        do {
            let page = try await store.page(UsageRecord.self, after: position, limit: max(1, configuration.batchSize))
            let due = Self.compactable(page.items, cutoff: cutoff(now: input.now))
            var units: [(unit: WriteUnit, records: Int, totals: Int)] = []
            var complete = true
            for group in Self.groups(due) {
                let month = UsageRecord.month(of: group.monthStart)
                let stored = try await store.list(
                    UsageRecord.self, tenant: group.tenant, namePrefix: UsageRecord.monthlyPrefix + month + ".")
                let planned = Self.unit(for: group.records, tenant: group.tenant, monthStart: group.monthStart, totals: stored.items, limit: limit)
                if planned.records < group.records.count { complete = false }
                units.append(planned)
            }
            var wrote = false
            for planned in units {
                if try await committer.commit([planned.unit]) {
                    wrote = true
                    state.withLock { s in
                        s.compacted += planned.records
                        s.scanCompacted += planned.records
                        s.totalsWritten += planned.totals
                    }
                } else {
                    complete = false
                }
            }
            // Everything of this page is done: go on after it (or end the scan). Otherwise read
            // it again next pass: what was compacted is gone from it.
            if complete { advance(to: page.next, now: input.clock) }
            return wrote
        } catch let error as SchedulerError where error.code == .leadershipLost {
            throw error
        } catch {
            logger.warning("usage retention failed; the scan starts again later", metadata: ["error": "\(error)"])
            state.withLock { s in
                s.position = nil
                s.nextScan = input.clock + configuration.interval
            }
            return false
        }
    }

    private func advance(to next: String?, now: ContinuousClock.Instant) {
        let ended: Int? = state.withLock { s in
            s.position = next
            guard next == nil else { return nil }
            s.nextScan = now + configuration.interval
            defer { s.scanCompacted = 0 }
            return s.scanCompacted
        }
        if let ended, ended > 0 {
            logger.info("usage records compacted into monthly totals", metadata: ["records": "\(ended)"])
        }
    }

    // MARK: Deciding

    /// The interval records of `records` whose month ended by `cutoff`.
    static func compactable(_ records: [UsageRecord], cutoff: Date) -> [UsageRecord] {
        records.filter { !$0.spec.isMonthly && UsageRecord.nextMonthStart(after: $0.spec.intervalStart) <= cutoff }
    }

    /// One tenant's compactable records of one month.
    struct Group {
        var tenant: String
        var monthStart: Date
        var records: [UsageRecord]
    }

    /// `records` by tenant and month, in that order; each group's records in key order.
    static func groups(_ records: [UsageRecord]) -> [Group] {
        var byKey: [String: Group] = [:]
        for record in records {
            let start = UsageRecord.monthStart(of: record.spec.intervalStart)
            let key = "\(record.metadata.tenant)/\(UsageRecord.month(of: start))"
            byKey[key, default: Group(tenant: record.metadata.tenant, monthStart: start, records: [])].records.append(record)
        }
        return byKey.sorted { $0.key < $1.key }.map(\.value)
    }

    /// The unit that adds as many of `records` (one tenant's, of the month starting at
    /// `monthStart`) to that month's `totals` (as stored now) as fit in `limit` writes, and
    /// deletes them: each total updated on its version or created, each record deleted on its
    /// version. Returns the unit and how many records and totals it holds.
    static func unit(
        for records: [UsageRecord], tenant: String, monthStart: Date, totals: [UsageRecord], limit: Int
    ) -> (unit: WriteUnit, records: Int, totals: Int) {
        let stored = Dictionary(totals.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let month = UsageRecord.month(of: monthStart)
        var changed: [String: UsageRecord] = [:]
        var order: [String] = []
        var taken: [UsageRecord] = []
        for record in records {
            let name = UsageRecord.monthlyName(month: month, mode: record.spec.mode, priority: record.spec.priority)
            let newTotal = changed[name] == nil
            // Every write counts: the totals touched and the deletions.
            guard taken.count + order.count + (newTotal ? 1 : 0) + 1 <= max(2, limit) else { break }
            if newTotal {
                order.append(name)
                changed[name] = stored[name]
                    ?? UsageRecord.monthlyTotal(tenant: tenant, monthStart: monthStart, mode: record.spec.mode, priority: record.spec.priority)
            }
            changed[name] = changed[name]?.adding(record)
            taken.append(record)
        }
        var ops: [WriteOp] = order.compactMap { name in
            guard let total = changed[name] else { return nil }
            return stored[name] == nil ? .create(total) : .update(total)
        }
        ops += taken.map { .delete($0) }
        return (WriteUnit(ops: ops), taken.count, order.count)
    }
}
