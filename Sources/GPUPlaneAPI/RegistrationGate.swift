import Synchronization

/// Bounds the node registrations one api-server runs at once; the rest are answered 503 with a
/// `Retry-After` before they touch the store.
///
/// A registration costs several etcd round trips (the heartbeat key, the Node read and write).
/// When etcd stalls, a fleet's registrations pile up in the api-server, time out, and come back
/// all together, each one again at full cost: at 5,000 simulated nodes that storm kept the
/// store stalled for minutes. With the gate, etcd sees at most `limit` of them while the rest
/// wait at the agents, and the `Retry-After` (1 to 3 s, drawn at random) spreads their return.
public final class RegistrationGate: Sendable {
    /// Registrations in flight at the most; 0 for no limit.
    public let limit: Int
    /// `max-registrations-in-flight`'s default: at a few ms per etcd round trip, some thousands
    /// of registrations a second get through, and etcd is never asked for more at once.
    public static let defaultLimit = 64
    private let inFlight = Mutex(0)
    private let refused = Mutex(0)

    /// A gate letting `limit` registrations through at once (0: every one).
    public init(limit: Int) { self.limit = max(0, limit) }

    /// Registrations in flight now.
    public var current: Int { inFlight.withLock { $0 } }

    /// Registrations turned away so far (`gpuplane_api_registrations_turned_away_total`).
    public var turnedAway: Int { refused.withLock { $0 } }

    /// Runs `body` when a place is free, and frees the place after it.
    /// - Throws: ``APIError`` 503 `unavailable` with a `Retry-After` when `limit` registrations
    ///   are in flight already; what `body` throws.
    public func pass<T>(_ body: () async throws -> T) async throws -> T {
        let entered = inFlight.withLock { count -> Bool in
            guard limit == 0 || count < limit else { return false }
            count += 1
            return true
        }
        guard entered else {
            refused.withLock { $0 += 1 }
            APIServerMetrics.registrationsTurnedAway.increment()
            var error = APIError(
                .serviceUnavailable, .unavailable,
                "\(limit) node registrations are in flight on this api-server already; register again after Retry-After seconds")
            error.retryAfter = Int.random(in: 1...3)
            throw error
        }
        defer { inFlight.withLock { $0 -= 1 } }
        return try await body()
    }
}
