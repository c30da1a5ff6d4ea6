#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneStore
import Logging
import GPUPlaneSystem

/// The usage meter: at the end of every interval (5 minutes by default), one `UsageRecord` per
/// running allocation (a bound replica in phase `running`), exactly once.
///
/// Exactly once across failovers comes from three things:
/// - a record's name is fixed by its replica and interval (`UsageRecord.name(replica:intervalStart:)`)
///   and it is written create-if-absent, so metering an interval twice writes nothing new;
/// - every write carries the leader's fence, so a deposed leader writes nothing at all;
/// - a cursor (``MeterCursor``, the start of the last interval fully metered)
///   moves forward, compare-and-swapped, only once all of an interval's records are in. A new
///   leader starts from the cursor and backfills the intervals the old one missed, at most
///   ``Configuration/backfillLimit`` of them.
///
/// Records are priced with the tenant plan's included hours first (month to date, per mode),
/// then ``Pricing``. A tenant whose month-to-date spend reaches its spending limit gets its
/// deployments scaled to `min_instances` (status `instances_wanted` = min, extra replicas
/// deleted) and an Event.
///
/// Step 3 of the leader's pass. It reads the cursor and the month's records from the store and
/// writes records and cursor through the ``Committer`` (create-if-absent, compare-and-swap);
/// what it decides on is the pass's lists, and what it returns, the spending-limit writes, the
/// pass commits like any step's. The cursor, the month-to-date tally and its counters are its
/// state across passes.
public final class UsageMeter: Sendable {
    /// Meter settings.
    public struct Configuration: Sendable {
        /// The interval; whole seconds, at least one.
        public var interval: Duration
        /// Missed intervals a new leader meters at most; older ones are skipped and logged.
        public var backfillLimit: Int
        /// Prices.
        public var pricing: Pricing
        /// The cursor's key (``KeySpace/meterCursor``; tests choose another).
        public var cursorKey: String

        /// Makes a configuration.
        public init(
            interval: Duration = .seconds(Pricing.defaultIntervalSeconds), backfillLimit: Int = 12,
            pricing: Pricing = .standard, cursorKey: String = KeySpace.meterCursor
        ) {
            self.interval = interval
            self.backfillLimit = backfillLimit
            self.pricing = pricing
            self.cursorKey = cursorKey
        }
    }

    let configuration: Configuration
    /// Where the cursor is kept.
    let cursor: MeterCursor
    let logger: Logger
    private let state = Locked(State())

    private struct State {
        /// The start of the last interval fully metered (epoch seconds) and the key's mod revision.
        var cursor: Int64?
        var cursorRevision: Int64 = 0
        /// Month-to-date totals, loaded once per term: "tenant/mode" → seconds; tenant → micro-dollars.
        var tallyMonth: String?
        var seconds: [String: Int] = [:]
        var spend: [String: Int64] = [:]
        /// Intervals metered and records written, this term.
        var intervals = 0
        var records = 0
    }

    init(configuration: Configuration, cursor: MeterCursor, logger: Logger) {
        self.configuration = configuration
        self.cursor = cursor
        self.logger = logger
    }

    /// Intervals metered and usage records written so far.
    var counters: (intervals: Int, records: Int) { state.withLock { ($0.intervals, $0.records) } }

    /// The interval in whole seconds.
    var intervalSeconds: Int64 { max(1, configuration.interval.components.seconds) }

    private func start(of date: Date) -> Int64 {
        let t = Int64(date.timeIntervalSince1970.rounded(.down))
        return t - (t % intervalSeconds)
    }

    /// Whether an interval is complete and not yet metered (true before the cursor is read).
    func isDue(now: Date) -> Bool {
        guard let cursor = state.withLock({ $0.cursor }) else { return true }
        return cursor + intervalSeconds < start(of: now)
    }

    /// How long until the next interval is complete.
    func timeUntilDue(now: Date) -> Duration {
        let next = Double(start(of: now) + intervalSeconds) - now.timeIntervalSince1970
        return .milliseconds(Int64(max(0, next) * 1000) + 20)
    }

    /// Meters every complete interval after the cursor (reads from `store`, writes through
    /// `committer`) and returns the writes that scale the deployments of tenants over their
    /// spending limit to `min_instances`.
    func run(_ input: PassInput, store: ResourceStore, committer: Committer) async throws -> [WriteUnit] {
        let now = input.now
        let current = start(of: now)
        if state.withLock({ $0.cursor }) == nil {
            if let position = try await cursor.read() {
                state.withLock {
                    $0.cursor = position.intervalStart
                    $0.cursorRevision = position.revision
                }
            } else {
                // A new cluster: the interval under way is the first one metered.
                try await advanceCursor(to: current - intervalSeconds, committer: committer)
                return []
            }
        }
        guard var cursor = state.withLock({ $0.cursor }) else { return [] }
        let oldest = current - Int64(max(1, configuration.backfillLimit)) * intervalSeconds
        if cursor + intervalSeconds < oldest {
            logger.warning("meter backfill limit reached; skipping intervals", metadata: [
                "from": "\(cursor + intervalSeconds)", "to": "\(oldest - intervalSeconds)",
            ])
            cursor = oldest - intervalSeconds
        }
        try await loadTally(store: store, now: now)
        let running = input.replicas.filter { $0.binding != nil && $0.status.phase == .running }
        var intervalStart = cursor + intervalSeconds
        while intervalStart + intervalSeconds <= current {
            let records = self.records(for: running, tenants: input.tenants, intervalStart: intervalStart)
            let written = try await committer.createIfAbsent(records)
            state.withLock { s in
                for record in written {
                    s.seconds["\(record.metadata.tenant)/\(record.spec.mode.rawValue)", default: 0] += record.spec.seconds
                    s.spend[record.metadata.tenant, default: 0] += record.spec.costMicroDollars
                }
            }
            try await advanceCursor(to: intervalStart, committer: committer)
            state.withLock { s in
                s.intervals += 1
                s.records += written.count
            }
            intervalStart += intervalSeconds
        }
        return spendingLimitWrites(input)
    }

    // MARK: Records

    private func monthKey(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC") ?? calendar.timeZone
        let parts = calendar.dateComponents([.year, .month], from: date)
        return "\(parts.year ?? 0)-\(parts.month ?? 0)"
    }

    /// Month-to-date seconds per tenant and mode, and spend per tenant, from the stored records.
    private func loadTally(store: ResourceStore, now: Date) async throws {
        let month = monthKey(now)
        guard state.withLock({ $0.tallyMonth }) != month else { return }
        let listed = try await store.list(UsageRecord.self)
        var seconds: [String: Int] = [:]
        var spend: [String: Int64] = [:]
        for record in listed.items where monthKey(record.spec.intervalStart) == month {
            seconds["\(record.metadata.tenant)/\(record.spec.mode.rawValue)", default: 0] += record.spec.seconds
            spend[record.metadata.tenant, default: 0] += record.spec.costMicroDollars
        }
        state.withLock {
            $0.tallyMonth = month
            $0.seconds = seconds
            $0.spend = spend
        }
    }

    /// One record per running allocation, priced in order (included hours first).
    func records(for running: [Replica], tenants: [Tenant], intervalStart: Int64) -> [UsageRecord] {
        let tenants = Dictionary(tenants.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        let start = Date(timeIntervalSince1970: Double(intervalStart))
        let end = intervalStart + intervalSeconds
        var seconds = state.withLock { $0.seconds }
        var result: [UsageRecord] = []
        for replica in running {
            guard let binding = replica.binding else { continue }
            // Allocations created during the interval pay from their creation only.
            let from = max(intervalStart, Int64(replica.metadata.created?.timeIntervalSince1970 ?? 0))
            let used = Int(end - from)
            guard used > 0 else { continue }
            let mode = replica.spec.mode ?? .dedicated
            let tenant = replica.metadata.tenant
            let gpus = mode == .sharedPinned ? 0 : binding.gpuIndices.count
            let included = tenants[tenant]?.includedHours(mode) ?? Plan.free.includedHours(mode)
            let tallyKey = "\(tenant)/\(mode.rawValue)"
            let split = Pricing.split(seconds: used, usedThisMonth: seconds[tallyKey] ?? 0, includedHours: included)
            seconds[tallyKey, default: 0] += used
            let cost = configuration.pricing.cost(
                mode: mode, priority: replica.spec.priority, seconds: split.billable, gpus: max(gpus, 1))
            let name = UsageRecord.name(replica: replica.metadata.name, intervalStart: start)
            result.append(UsageRecord(
                metadata: ObjectMeta(
                    name: name, tenant: tenant,
                    labels: ["gpuplane.io/interval": "\(intervalStart)", "gpuplane.io/replica": replica.metadata.name]),
                spec: .init(
                    replica: replica.metadata.name, owner: "\(replica.spec.owner.kind.rawValue)/\(replica.spec.owner.name)",
                    intervalStart: start, seconds: used, mode: mode, priority: replica.spec.priority, gpus: gpus,
                    includedSeconds: split.included, billableSeconds: split.billable, costMicroDollars: cost)))
        }
        return result
    }

    /// Moves the cursor to `intervalStart`, compared on its revision and fenced; either
    /// moved under us means another leader (``SchedulerError/Code/leadershipLost``).
    private func advanceCursor(to intervalStart: Int64, committer: Committer) async throws {
        let revision = state.withLock { $0.cursorRevision }
        let moved = try await committer.move(cursor, to: intervalStart, ifAt: revision)
        state.withLock {
            $0.cursor = intervalStart
            $0.cursorRevision = moved
        }
    }

    // MARK: Spending limits

    /// Whether `tenant`'s metered spend this month has reached its spending limit.
    func isOverSpendingLimit(_ tenant: Tenant) -> Bool {
        guard let limit = tenant.spec.spendingLimitMicroDollars else { return false }
        return (state.withLock { $0.spend[tenant.metadata.name] } ?? 0) >= limit
    }

    /// Scales the deployments of tenants at or over their spending limit to `min_instances`.
    func spendingLimitWrites(_ input: PassInput) -> [WriteUnit] {
        let spend = state.withLock { $0.spend }
        let (deployments, replicas) = (input.deployments, input.replicas)
        var units: [WriteUnit] = []
        for tenant in input.tenants {
            guard let limit = tenant.spec.spendingLimitMicroDollars, let spent = spend[tenant.metadata.name], spent >= limit
            else { continue }
            for deployment in deployments where deployment.metadata.tenant == tenant.metadata.name {
                let minimum = deployment.spec.settings.minInstances
                let extra = replicas.filter {
                    $0.metadata.tenant == tenant.metadata.name && $0.spec.owner.kind == .deployment
                        && $0.spec.owner.name == deployment.metadata.name && (Int($0.spec.role) ?? 0) >= minimum
                }
                guard deployment.status.instancesWanted > minimum || !extra.isEmpty else { continue }
                var updated = deployment
                updated.status.instancesWanted = minimum
                let message = "spending limit reached (\(Pricing.credits(microDollars: spent)) of \(Pricing.credits(microDollars: limit)) credits this month): scaled to min_instances \(minimum)"
                updated.status.message = message
                var unit = WriteUnit(ops: [.update(updated)] + extra.map { .delete($0) })
                unit.events.append(.init(
                    involved: EventRecorder.reference(deployment), tenant: tenant.metadata.name, severity: .warning,
                    reason: EventRecorder.Reason.spendingLimitReached, message: message, aggregate: false))
                units.append(unit)
            }
        }
        return units
    }
}
