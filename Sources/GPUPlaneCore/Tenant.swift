#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// What a token may do.
public enum Role: String, Codable, Sendable, CaseIterable {
    /// A tenant's user: its own objects only.
    case user
    /// The operator: everything.
    case admin
    /// A node-agent: its own Node, and what is bound to it.
    case node
}

/// A token issued to a tenant, a node or an admin; only its hash is stored, in the token index
/// (`/gpuplane/tokens/<sha256>`), never the secret.
public struct TokenRecord: Codable, Sendable, Hashable {
    /// A short public id, shown in audits instead of the secret.
    public var id: String
    /// SHA-256 of the token, hex.
    public var sha256: String
    /// The tenant it acts for (`_cluster` for admin and node tokens).
    public var tenant: String
    /// What it may do.
    public var role: Role
    /// For node tokens: the node it speaks for.
    public var node: String?
    /// When it was issued.
    public var created: Date?

    /// Makes a token record.
    public init(id: String, sha256: String, tenant: String, role: Role, node: String? = nil, created: Date? = nil) {
        self.id = id
        self.sha256 = sha256
        self.tenant = tenant
        self.role = role
        self.node = node
        self.created = created
    }
}

/// A tenant (an owner): plan and limits.
public struct Tenant: Resource, Hashable {
    public static let kind = ResourceKind.tenant
    /// The GPU limit when none is set (`reference/custom-llm-deployments.txt`).
    public static let defaultGPULimit = 4

    /// The tenant's settings.
    public struct Spec: Codable, Sendable, Hashable {
        /// The plan.
        public var plan: Plan
        /// Whole GPUs the tenant may hold at once.
        public var gpuLimit: Int
        /// Monthly spending limit in micro-dollars; nil means none.
        public var spendingLimitMicroDollars: Int64?
        /// Contracted included hours per mode (Enterprise), overriding the plan's.
        public var includedHoursOverride: [String: Int]?

        /// Makes a spec.
        public init(
            plan: Plan, gpuLimit: Int = Tenant.defaultGPULimit, spendingLimitMicroDollars: Int64? = nil,
            includedHoursOverride: [String: Int]? = nil
        ) {
            self.plan = plan
            self.gpuLimit = gpuLimit
            self.spendingLimitMicroDollars = spendingLimitMicroDollars
            self.includedHoursOverride = includedHoursOverride
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec

    /// Makes a tenant; its name is the owner name.
    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    /// Included hours this month for `mode`, the contract's where one is set.
    public func includedHours(_ mode: GPUMode) -> Int {
        spec.includedHoursOverride?[mode.nodeLabel] ?? spec.plan.includedHours(mode)
    }
}

/// One allocation's use over one meter interval, written exactly once; or, once its month is
/// older than the scheduler's `usage-retention`, one tenant's total of such records for a
/// month, mode and tier (``Granularity/month``), which replaced them in the same transaction.
///
/// Either way its numbers add up: summing the records whose `intervalStart` lies in a month
/// gives that month's use and cost whether none, some or all of it was compacted, at every
/// revision (each compaction moves records into a total and deletes them atomically).
public struct UsageRecord: Resource, Hashable {
    public static let kind = ResourceKind.usageRecord

    /// What a record covers.
    public enum Granularity: String, Codable, Sendable, Hashable {
        /// One replica over one meter interval (what the meter writes).
        case interval
        /// One tenant's records of a month, mode and tier, summed.
        case month
    }

    /// What was used and what it cost.
    public struct Spec: Codable, Sendable, Hashable {
        /// The replica (allocation) metered; empty in a monthly total.
        public var replica: String
        /// Its owner, e.g. `deployments/test-model`; empty in a monthly total.
        public var owner: String
        /// The start of the interval; of a monthly total, the first instant of its month (UTC).
        public var intervalStart: Date
        /// Seconds used in the interval.
        public var seconds: Int
        /// The mode billed.
        public var mode: GPUMode
        /// The tier billed.
        public var priority: GPUPriority
        /// GPUs held; 0 in a monthly total (see ``gpuSeconds``).
        public var gpus: Int
        /// Seconds covered by included hours.
        public var includedSeconds: Int
        /// Seconds billed.
        public var billableSeconds: Int
        /// Cost of the billable seconds, micro-dollars.
        public var costMicroDollars: Int64
        /// nil or `interval` for the meter's records; `month` for a monthly total.
        public var granularity: Granularity?
        /// A monthly total's interval records, counted; nil for an interval record.
        public var records: Int?
        /// A monthly total's GPU-seconds (each record's seconds × GPUs); nil for an interval record.
        public var gpuSeconds: Int?

        /// Makes a spec.
        public init(
            replica: String, owner: String, intervalStart: Date, seconds: Int, mode: GPUMode,
            priority: GPUPriority, gpus: Int, includedSeconds: Int, billableSeconds: Int,
            costMicroDollars: Int64, granularity: Granularity? = nil, records: Int? = nil, gpuSeconds: Int? = nil
        ) {
            self.replica = replica
            self.owner = owner
            self.intervalStart = intervalStart
            self.seconds = seconds
            self.mode = mode
            self.priority = priority
            self.gpus = gpus
            self.includedSeconds = includedSeconds
            self.billableSeconds = billableSeconds
            self.costMicroDollars = costMicroDollars
            self.granularity = granularity
            self.records = records
            self.gpuSeconds = gpuSeconds
        }

        /// Whether this is a monthly total.
        public var isMonthly: Bool { granularity == .month }
    }

    public var metadata: ObjectMeta
    public var spec: Spec

    /// Makes a usage record.
    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }

    /// The record's name for one replica and interval: writing it with create-if-absent makes
    /// metering exactly-once across scheduler failovers.
    public static func name(replica: String, intervalStart: Date) -> String {
        "\(replica).\(Int64(intervalStart.timeIntervalSince1970))"
    }

    /// The prefix of every monthly total's name (`_` never starts a replica's name, which is
    /// a DNS label).
    public static let monthlyPrefix = "_month."

    /// The name of `tenant`'s total of `month` (`2024-05`) for `mode` and `priority`:
    /// `_month.2024-05.mode2.inference`.
    public static func monthlyName(month: String, mode: GPUMode, priority: GPUPriority) -> String {
        "\(monthlyPrefix)\(month).mode\(mode.rawValue).\(priority.rawValue)"
    }

    /// `2024-05`: the UTC month of `date`.
    public static func month(of date: Date) -> String {
        let (year, month) = UTCMonth.of(date)
        return "\(year)-\(month < 10 ? "0" : "")\(month)"
    }

    /// The first instant of `date`'s month, UTC.
    public static func monthStart(of date: Date) -> Date {
        let (year, month) = UTCMonth.of(date)
        return UTCMonth.start(year: year, month: month)
    }

    /// The first instant of the month after `date`'s, UTC.
    public static func nextMonthStart(after date: Date) -> Date {
        let (year, month) = UTCMonth.of(date)
        return month == 12 ? UTCMonth.start(year: year + 1, month: 1) : UTCMonth.start(year: year, month: month + 1)
    }

    /// An empty monthly total of `tenant` for `month` (starting at `monthStart`), `mode` and
    /// `priority`, to add interval records to with ``adding(_:)``.
    public static func monthlyTotal(
        tenant: String, monthStart: Date, mode: GPUMode, priority: GPUPriority
    ) -> UsageRecord {
        let month = Self.month(of: monthStart)
        return UsageRecord(
            metadata: ObjectMeta(
                name: monthlyName(month: month, mode: mode, priority: priority), tenant: tenant,
                labels: ["gpuplane.io/month": month, "gpuplane.io/granularity": Granularity.month.rawValue]),
            spec: .init(
                replica: "", owner: "", intervalStart: monthStart, seconds: 0, mode: mode, priority: priority, gpus: 0,
                includedSeconds: 0, billableSeconds: 0, costMicroDollars: 0, granularity: .month, records: 0,
                gpuSeconds: 0))
    }

    /// This monthly total with `record` (an interval record of its tenant, month, mode and
    /// tier) added in.
    public func adding(_ record: UsageRecord) -> UsageRecord {
        var total = self
        total.spec.seconds += record.spec.seconds
        total.spec.includedSeconds += record.spec.includedSeconds
        total.spec.billableSeconds += record.spec.billableSeconds
        total.spec.costMicroDollars += record.spec.costMicroDollars
        if record.spec.isMonthly {
            total.spec.records = (total.spec.records ?? 0) + (record.spec.records ?? 0)
            total.spec.gpuSeconds = (total.spec.gpuSeconds ?? 0) + (record.spec.gpuSeconds ?? 0)
        } else {
            total.spec.records = (total.spec.records ?? 0) + 1
            total.spec.gpuSeconds = (total.spec.gpuSeconds ?? 0) + record.spec.seconds * record.spec.gpus
        }
        return total
    }
}

/// Something that happened to an object, and why.
public struct Event: Resource, Hashable {
    public static let kind = ResourceKind.event

    /// Normal or Warning.
    public enum Severity: String, Codable, Sendable { case normal = "Normal", warning = "Warning" }

    /// The event's content.
    public struct Spec: Codable, Sendable, Hashable {
        /// The object concerned: kind, name, uid.
        public var involved: OwnerReference
        /// Normal or Warning.
        public var severity: Severity
        /// A CamelCase reason (`FailedScheduling`, `Preempted`, `GPUUnhealthy`).
        public var reason: String
        /// Words for a person.
        public var message: String
        /// Which component said it.
        public var source: String
        /// How often it repeated.
        public var count: Int
        /// When it was first and last seen.
        public var firstSeen: Date
        /// When it was last seen.
        public var lastSeen: Date

        /// Makes an event spec.
        public init(
            involved: OwnerReference, severity: Severity, reason: String, message: String,
            source: String, count: Int = 1, firstSeen: Date, lastSeen: Date
        ) {
            self.involved = involved
            self.severity = severity
            self.reason = reason
            self.message = message
            self.source = source
            self.count = count
            self.firstSeen = firstSeen
            self.lastSeen = lastSeen
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec

    /// Makes an event.
    public init(metadata: ObjectMeta, spec: Spec) {
        self.metadata = metadata
        self.spec = spec
    }
}

/// UTC months by plain arithmetic on days (H. Hinnant's civil calendar algorithms), so the
/// core needs no `Calendar` or time-zone data.
enum UTCMonth {
    /// The year and month (1…12) of `date` in UTC.
    static func of(_ date: Date) -> (year: Int, month: Int) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : -((-seconds + 86_399) / 86_400)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month))
    }

    /// 00:00:00 UTC on the first day of `month` of `year`.
    static func start(year: Int, month: Int) -> Date {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return Date(timeIntervalSince1970: Double(days * 86_400))
    }
}
