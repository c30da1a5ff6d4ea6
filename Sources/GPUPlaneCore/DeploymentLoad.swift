/// What one api-server saw of a deployment's load over its last report interval: the signal
/// the scheduler's autoscaler sizes deployments by, between `min_instances` and
/// `max_instances`.
///
/// Each api-server writes its own report under
/// `/gpuplane/load/deployments/<tenant>/<deployment>/<reporter>`, under a lease, so the reports
/// of an api-server that stops vanish with it.
public struct DeploymentLoad: Codable, Sendable, Hashable {
    /// The prefix every report is under: ``KeySpace/deploymentLoads`` (kept for tests).
    public static var prefix: String { KeySpace.deploymentLoads }

    /// The most requests in flight or waiting for a slot at once during the interval.
    public var peak: Int
    /// Whether requests found no ready instance (a deployment at zero instances, or one still
    /// starting) during the interval, or are held waiting for one when the report is made:
    /// demand for at least one.
    public var cold: Bool
    /// Requests in flight on the deployment's instances when the report was made.
    public var inFlight: Int? = nil
    /// Requests waiting for a slot, or held for a first ready instance, when the report was made.
    public var queued: Int? = nil
    /// Requests that finished during the interval.
    public var requests: Int? = nil
    /// Completion tokens the answers of those requests reported (`usage.completion_tokens`).
    public var completionTokens: Int? = nil
    /// The interval's length, seconds: rates are `requests` and `completionTokens` over it.
    public var seconds: Double? = nil

    /// Makes a report.
    public init(peak: Int, cold: Bool = false) {
        self.peak = peak
        self.cold = cold
    }

    /// Several api-servers' latest reports on one deployment, taken together: what the API
    /// shows of its load (a deployment's `load`, `GET /v1/load/deployments`).
    public struct Total: Sendable, Hashable {
        /// The reports' peaks, summed (negative ones count as 0).
        public var peak = 0
        /// Whether any report says a call found no ready instance.
        public var cold = false
        /// Requests in flight, summed.
        public var inFlight = 0
        /// Requests waiting for a slot or an instance, summed.
        public var queued = 0
        /// Finished requests per second, summed over the reporters' intervals.
        public var requestsPerSecond = 0.0
        /// Completion tokens per second, summed likewise.
        public var tokensPerSecond = 0.0
        /// The reports taken together.
        public var reporters = 0

        /// The sum of `reports`.
        public init<Reports: Sequence<DeploymentLoad>>(_ reports: Reports) {
            for load in reports {
                let seconds = max(load.seconds ?? 0, 0.001)
                peak += max(load.peak, 0)
                cold = cold || load.cold
                inFlight += load.inFlight ?? 0
                queued += load.queued ?? 0
                requestsPerSecond += Double(load.requests ?? 0) / seconds
                tokensPerSecond += Double(load.completionTokens ?? 0) / seconds
                reporters += 1
            }
        }
    }

    /// What this report asks for in requests at once: `peak`, or 1 for a cold start.
    public var demand: Int { max(peak, cold ? 1 : 0) }

    /// The key of `reporter`'s report on `tenant`'s `deployment`:
    /// ``KeySpace/deploymentLoad(tenant:deployment:reporter:)`` (kept for tests).
    public static func key(tenant: String, deployment: String, reporter: String) -> String {
        KeySpace.deploymentLoad(tenant: tenant, deployment: deployment, reporter: reporter)
    }

    /// Instances wanted for `demand` requests at once, `maxBatchSize` each, within
    /// `minInstances...maxInstances`.
    public static func instances(forDemand demand: Int, maxBatchSize: Int, minInstances: Int, maxInstances: Int) -> Int {
        let batch = max(1, maxBatchSize)
        let wanted = (max(0, demand) + batch - 1) / batch
        return min(max(wanted, minInstances), max(minInstances, maxInstances))
    }
}
