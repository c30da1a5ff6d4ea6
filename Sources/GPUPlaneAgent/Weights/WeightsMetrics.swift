import Metrics

/// The weights cache's and model loading's metrics on the agent's `/metrics` (listed in
/// docs/operations.md).
enum WeightsMetrics {
    /// How long each weights fetch took (transfer and verification), seconds.
    static let fetchSeconds = Timer(label: "gpuplane_agent_weights_fetch_seconds", preferredDisplayUnit: .seconds)
    /// From a serving container's start to its engine's first answer on `/v1/models`, seconds.
    static let loadSeconds = Timer(label: "gpuplane_agent_model_load_seconds", preferredDisplayUnit: .seconds)
    /// Weights fetches that ended with the weights in the cache.
    static let fetched = Counter(label: "gpuplane_agent_weights_fetches_total", dimensions: [("result", "fetched")])
    /// Weights fetches that failed.
    static let failed = Counter(label: "gpuplane_agent_weights_fetches_total", dimensions: [("result", "failed")])
    /// Bytes of weights transferred.
    static let fetchedBytes = Counter(label: "gpuplane_agent_weights_fetched_bytes_total")
    /// Weights evicted from the cache.
    static let evictions = Counter(label: "gpuplane_agent_weights_evictions_total")
    /// Bytes the cache holds.
    static let cacheBytes = Gauge(label: "gpuplane_agent_weights_cache_bytes")
    /// The cache's limit (`weights-cache-size`), bytes.
    static let cacheLimitBytes = Gauge(label: "gpuplane_agent_weights_cache_limit_bytes")

    /// Creates them now, so `/metrics` shows them from the start.
    static func register() {
        _ = (fetchSeconds, loadSeconds, fetched, failed, fetchedBytes, evictions, cacheBytes, cacheLimitBytes)
    }
}
