import GPUPlaneCore
import Metrics

/// What the scheduler exports on its `/metrics` (``SchedulerMain``'s listener), through
/// swift-metrics into the process's Prometheus registry (``MetricsExporter``). Without that
/// registry bootstrapped (tests, benchmarks) they cost a no-op call.
enum SchedulerMetrics {
    /// Replicas and model servers bound to a node (committed).
    static let bindings = Counter(label: "gpuplane_scheduler_bindings_total")
    /// Replicas that preempted others to be placed.
    static let preemptions = Counter(label: "gpuplane_scheduler_preemptions_total")
    /// Fenced transactions committed.
    static let transactions = Counter(label: "gpuplane_scheduler_transactions_total")
    /// Transactions refused because what they read had changed (retried on the next pass).
    static let conflicts = Counter(label: "gpuplane_scheduler_conflicts_total")
    /// Leader passes run.
    static let passes = Counter(label: "gpuplane_scheduler_passes_total")
    /// How long one leader pass took.
    static let passDuration = Timer(label: "gpuplane_scheduler_pass_duration_seconds", preferredDisplayUnit: .seconds)
    /// A part of the leader pass, timed on its own (``stepDuration``).
    enum Step: String, CaseIterable, Sendable {
        /// Reading the informers' caches into the pass's lists.
        case read
        /// Step 1, deciding and committing.
        case nodeLifecycle = "node_lifecycle"
        /// Step 2, deciding and committing.
        case evictions
        /// Step 3, when due.
        case meter
        /// Step 4's snapshot of the cluster.
        case snapshot
        /// Step 4's decisions (the placement pipeline over every pending replica).
        case placement
        /// Step 4's commit of its bindings.
        case placementCommit = "placement_commit"
        /// Step 5, when due.
        case autoscaling
        /// Step 6.
        case statusUpkeep = "status_upkeep"
        /// Step 7.
        case warmPool = "warm_pool"
        /// Step 8, when due.
        case usageRetention = "usage_retention"
        /// Before a pass, not in it: waiting until the informers have seen the session's own
        /// last writes.
        case catchUp = "catch_up"
    }
    /// How long each part of a leader pass took, by `step` (``Step``).
    static let stepDuration: [Step: Timer] = Dictionary(uniqueKeysWithValues: Step.allCases.map { step in
        (step, Timer(label: "gpuplane_scheduler_step_duration_seconds", dimensions: [("step", step.rawValue)], preferredDisplayUnit: .seconds))
    })
    /// Replicas waiting for a node at the start of the last pass.
    static let pendingReplicas = Gauge(label: "gpuplane_scheduler_pending_replicas")
    /// 1 while this replica leads, else 0.
    static let leader = Gauge(label: "gpuplane_scheduler_leader")
    /// Terms this replica has won.
    static let terms = Counter(label: "gpuplane_scheduler_terms_total")
    /// From an election won until that term's caches were readied (kept, confirmed or listed
    /// again) and synced, when its first pass can begin.
    static let termStartup = Timer(label: "gpuplane_scheduler_term_startup_seconds", preferredDisplayUnit: .seconds)
    /// Lists of the leader's caches at the start of a term, by `kind` (nodes, replicas,
    /// modelservers, tenants, deployments): every kind at the first term, then only those a
    /// term won again could not keep (``ClusterCache/ready(for:within:)``).
    static let cacheLists: [ResourceKind: Counter] = Dictionary(uniqueKeysWithValues: ClusterCache.Informers.kinds.map { kind in
        (kind, Counter(label: "gpuplane_scheduler_cache_lists_total", dimensions: [("kind", kind.rawValue)]))
    })
    /// Deployments the autoscaler resized (committed), up or down.
    static let autoscaleDecisions = Counter(label: "gpuplane_scheduler_autoscale_decisions_total")

    /// Creates every metric now, so `/metrics` shows each from the start (counters at 0) and
    /// Prometheus's `rate()` and `increase()` see the first event; call after
    /// ``MetricsExporter/bootstrap()``.
    static func register() {
        _ = (bindings, preemptions, transactions, conflicts, passes, passDuration, pendingReplicas, leader, terms, autoscaleDecisions)
        _ = stepDuration
        _ = (cacheLists, termStartup)
    }
}
