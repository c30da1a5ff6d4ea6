import Metrics
import Prometheus
import GPUPlaneSystem

/// The process's metrics: swift-metrics backed by one Prometheus registry, rendered for
/// `GET /metrics`.
///
/// Call ``bootstrap()`` once at start-up (later calls do nothing); after that every
/// `Counter`, `Gauge`, `Recorder` and `Timer` created through swift-metrics lands in
/// ``registry``. swift-metrics labels such as `gpuplane.placements` are made valid Prometheus
/// names (`gpuplane_placements`) by the registry.
public enum MetricsExporter {
    /// The `Content-Type` of ``render()``'s output: Prometheus text exposition format 0.0.4.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The process-wide registry.
    public static let registry = PrometheusCollectorRegistry()

    private static let bootstrapped = Locked(false)

    /// Called before every render, to set gauges read from the process at scrape time.
    private static let renderHooks = Locked<[@Sendable () -> Void]>([])

    /// Calls `hook` before every ``render()`` and ``renderBytes()`` from now on.
    public static func beforeRender(_ hook: @escaping @Sendable () -> Void) {
        renderHooks.withLock { $0.append(hook) }
    }

    private static func runRenderHooks() {
        for hook in renderHooks.withLock({ $0 }) { hook() }
    }

    /// Bootstraps swift-metrics with ``registry``, once per process.
    ///
    /// - Returns: whether this call performed the bootstrap (swift-metrics itself traps on a
    ///   second bootstrap, so later calls are ignored).
    @discardableResult
    public static func bootstrap() -> Bool {
        let first = bootstrapped.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return false }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return true
    }

    /// Every metric in the registry, in Prometheus text exposition format.
    public static func render() -> String {
        runRenderHooks()
        return registry.emitToString()
    }

    /// ``render()`` as UTF-8 bytes, for writing straight into a response body.
    public static func renderBytes() -> [UInt8] {
        runRenderHooks()
        return registry.emitToBuffer()
    }
}
