import GPUPlaneSystem

/// Slows down token guessing: a source address that presented `limit` unknown tokens within
/// `window` is refused (429, `Retry-After`) until the oldest of them leaves the window, whatever
/// token it sends meanwhile. Only presented-and-wrong tokens count: a request without a token
/// (a browser, a health probe) never does.
///
/// Memory is bounded: at most `maxSources` addresses are tracked; past that, addresses whose
/// failures all left the window are forgotten first, then the ones with the oldest failures.
public final class AuthFailureLimiter: Sendable {
    /// Unknown tokens a source may present within ``window``.
    public let limit: Int
    /// How long a failure counts.
    public let window: Duration
    /// Most addresses tracked at once.
    public let maxSources: Int
    private let failures = Locked<[String: [ContinuousClock.Instant]]>([:])

    /// Makes a limiter; `limit` at least 1.
    public init(limit: Int, window: Duration = .seconds(60), maxSources: Int = 10_000) {
        self.limit = max(1, limit)
        self.window = window
        self.maxSources = max(1, maxSources)
    }

    /// How long `source` must wait before presenting a token again; nil when it may now.
    public func wait(_ source: String, now: ContinuousClock.Instant = .now) -> Duration? {
        failures.withLock { table -> Duration? in
            guard let recent = table[source]?.filter({ now - $0 < window }), recent.count >= limit, let oldest = recent.first else {
                return nil
            }
            return window - (now - oldest)
        }
    }

    /// Counts an unknown token presented by `source`.
    public func recordFailure(_ source: String, now: ContinuousClock.Instant = .now) {
        failures.withLock { table in
            var recent = (table[source] ?? []).filter { now - $0 < window }
            recent.append(now)
            // Only the newest `limit` matter for the decision.
            table[source] = Array(recent.suffix(limit))
            guard table.count > maxSources else { return }
            table = table.filter { $0.value.contains { now - $0 < window } }
            while table.count > maxSources, let stalest = table.min(by: { ($0.value.last ?? now) < ($1.value.last ?? now) })?.key {
                table[stalest] = nil
            }
        }
    }

    /// Addresses tracked now (for tests and metrics).
    public var trackedSources: Int { failures.withLock { $0.count } }
}
