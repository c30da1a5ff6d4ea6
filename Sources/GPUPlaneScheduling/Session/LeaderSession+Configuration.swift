#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

extension LeaderSession {
    /// Knobs of a term.
    public struct Configuration: Sendable {
        /// Pending replicas are looked at again this often even when nothing changed.
        public var resyncInterval: Duration
        /// Changes arriving within this window are handled in one pass.
        public var batchWindow: Duration
        /// Writes in one transaction at most (etcd's `--max-txn-ops` is 128 by default; the fence
        /// and the per-operation reads of the failure branch count too).
        public var maxOperationsPerTransaction: Int
        /// Whether a replica that doesn't fit may preempt lower tiers.
        public var preemption: Bool
        /// Repeats of an event are written at most this often.
        public var eventFlushInterval: Duration
        /// How long etcd keeps an event after its last write (see `RotatingLease`).
        public var eventTTL: Duration
        /// Whether each bind is recorded as an `Event` (`Scheduled`).
        public var recordBindEvents: Bool
        /// The usage meter.
        public var meter: UsageMeter.Configuration
        /// Model servers kept running with no tenant attached, per catalog slug.
        public var warmPool: [String: Int]
        /// A model server no bound replica uses is stopped once it is this old (and not needed
        /// for the warm pool).
        public var idleServerGrace: Duration
        /// How long to wait for the informers to see the session's own writes.
        public var catchUpTimeout: Duration
        /// How often deployments are sized for the gateways' load reports.
        public var autoscaleInterval: Duration
        /// How long fewer instances must be wanted than run before a deployment scales down.
        public var scaleDownDelay: Duration
        /// How long a Ready node may show no heartbeat key, without its key having been seen
        /// to expire, before it is NotReady.
        public var heartbeatGrace: Duration
        /// Usage records whose month ended longer ago than this become monthly totals
        /// (`usage-retention`, 400 days by default; see `UsageRetention`).
        public var usageRetention: Duration {
            get { usageRetentionSettings.retention }
            set { usageRetentionSettings.retention = newValue }
        }
        /// The retention step's settings (scan interval and page size too).
        var usageRetentionSettings = UsageRetention.Configuration()

        /// Makes a configuration.
        public init(
            resyncInterval: Duration = .seconds(1), batchWindow: Duration = .milliseconds(5),
            maxOperationsPerTransaction: Int = 100, preemption: Bool = true,
            eventFlushInterval: Duration = .seconds(10), recordBindEvents: Bool = true,
            meter: UsageMeter.Configuration = .init(), warmPool: [String: Int] = [:],
            idleServerGrace: Duration = .seconds(60), catchUpTimeout: Duration = .seconds(10),
            eventTTL: Duration = .seconds(3600), autoscaleInterval: Duration = .seconds(2),
            scaleDownDelay: Duration = .seconds(300), heartbeatGrace: Duration = .seconds(5)
        ) {
            self.heartbeatGrace = heartbeatGrace
            self.eventTTL = eventTTL
            self.autoscaleInterval = autoscaleInterval
            self.scaleDownDelay = scaleDownDelay
            self.resyncInterval = resyncInterval
            self.batchWindow = batchWindow
            self.maxOperationsPerTransaction = maxOperationsPerTransaction
            self.preemption = preemption
            self.eventFlushInterval = eventFlushInterval
            self.recordBindEvents = recordBindEvents
            self.meter = meter
            self.warmPool = warmPool
            self.idleServerGrace = idleServerGrace
            self.catchUpTimeout = catchUpTimeout
        }
    }

    /// Counters of the term, for tests, metrics and the benchmark (each kept by the step or
    /// the committer that counts it, read together by ``LeaderSession/statistics``).
    public struct Statistics: Sendable, Hashable {
        /// Passes run.
        public var passes = 0
        /// Replicas bound.
        public var bindings = 0
        /// Transactions committed.
        public var transactions = 0
        /// Transactions refused on a resourceVersion (retried on a later pass).
        public var conflicts = 0
        /// Preemptions carried out.
        public var preemptions = 0
        /// Replicas sent back to pending by node lifecycle or GPU health.
        public var evictions = 0
        /// Usage records written.
        public var usageRecords = 0
        /// Usage records compacted into monthly totals.
        public var usageRecordsCompacted = 0
        /// Meter intervals completed.
        public var meterIntervals = 0
        /// Autoscaler rounds run (load reports read, deployments sized).
        public var autoscaleRounds = 0
        /// From the election won until the term's caches were readied and synced, when its
        /// first pass can begin; nil until then.
        public var startup: Duration?
    }

}
