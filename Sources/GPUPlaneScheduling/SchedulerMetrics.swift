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
    /// Replicas waiting for a node at the start of the last pass.
    static let pendingReplicas = Gauge(label: "gpuplane_scheduler_pending_replicas")
    /// 1 while this replica leads, else 0.
    static let leader = Gauge(label: "gpuplane_scheduler_leader")
    /// Terms this replica has won.
    static let terms = Counter(label: "gpuplane_scheduler_terms_total")
    /// Deployments the autoscaler resized (committed), up or down.
    static let autoscaleDecisions = Counter(label: "gpuplane_scheduler_autoscale_decisions_total")

    /// Creates every metric now, so `/metrics` shows each from the start (counters at 0) and
    /// Prometheus's `rate()` and `increase()` see the first event; call after
    /// ``MetricsExporter/bootstrap()``.
    static func register() {
        _ = (bindings, preemptions, transactions, conflicts, passes, passDuration, pendingReplicas, leader, terms, autoscaleDecisions)
    }
}
