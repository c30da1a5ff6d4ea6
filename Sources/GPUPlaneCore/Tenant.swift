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

/// One allocation's use over one meter interval, written exactly once.
public struct UsageRecord: Resource, Hashable {
    public static let kind = ResourceKind.usageRecord

    /// What was used and what it cost.
    public struct Spec: Codable, Sendable, Hashable {
        /// The replica (allocation) metered.
        public var replica: String
        /// Its owner, e.g. `deployments/test-model`.
        public var owner: String
        /// The start of the interval.
        public var intervalStart: Date
        /// Seconds used in the interval.
        public var seconds: Int
        /// The mode billed.
        public var mode: GPUMode
        /// The tier billed.
        public var priority: GPUPriority
        /// GPUs held.
        public var gpus: Int
        /// Seconds covered by included hours.
        public var includedSeconds: Int
        /// Seconds billed.
        public var billableSeconds: Int
        /// Cost of the billable seconds, micro-dollars.
        public var costMicroDollars: Int64

        /// Makes a spec.
        public init(
            replica: String, owner: String, intervalStart: Date, seconds: Int, mode: GPUMode,
            priority: GPUPriority, gpus: Int, includedSeconds: Int, billableSeconds: Int,
            costMicroDollars: Int64
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
        }
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
