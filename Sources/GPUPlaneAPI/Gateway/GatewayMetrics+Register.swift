import GPUPlaneStore
import Metrics

/// The api-server's own metrics, created at start-up so `/metrics` shows every series from the
/// first scrape (counters at 0, gauges at 0) rather than after its first event: Prometheus's
/// `rate()` and `increase()` then count that first event, and dashboards and alerts find the
/// series before anything happened.
enum APIServerMetrics {
    /// GPU admissions (applies, deployment creates) decided again because another admission of
    /// the tenant committed first: another api-server's, or the autoscaler's.
    static let admissionRaces = Counter(label: "gpuplane_api_admission_races_total")
    /// Node registrations answered 503 because `max-registrations-in-flight` were in flight.
    static let registrationsTurnedAway = Counter(label: "gpuplane_api_registrations_turned_away_total")
    /// Requests given up on because their client's deadline passed first (``RequestDeadline``):
    /// answered 504 `deadline_exceeded` before their next etcd read or write.
    static let abandoned = Counter(label: "gpuplane_api_requests_abandoned_total")
    /// How long a node beating to this api-server may be quiet now before it is marked silent:
    /// `silent-after` plus how late beats have lately been read (``HeartbeatTracker``).
    static let silenceAllowed = Meter(label: "gpuplane_api_heartbeat_silence_allowed_seconds")

    /// Creates the gateway's and the ingress's counters (every outcome) and gauges, and the
    /// admission's; call after `MetricsExporter.bootstrap()`.
    static func register() {
        for outcome in GatewayMetrics.Outcome.allCases { _ = GatewayMetrics.requests(outcome) }
        _ = (GatewayMetrics.inFlight, GatewayMetrics.queued)
        for outcome in IngressMetrics.Outcome.allCases { _ = IngressMetrics.requests(outcome) }
        _ = GPUPlaneIngressUpgrades.spliced
        _ = admissionRaces
        _ = registrationsTurnedAway
        _ = abandoned
        _ = silenceAllowed
        ModifyMetrics.register()
    }
}
