extension CurlHTTP {
    /// Whether a request may be sent again after a failure, by what sending it twice could do.
    public enum Idempotence: Sendable, Hashable {
        /// Safe to repeat (reads, and writes whose repetition changes nothing): sent again after
        /// any failure without an answer and after a retryable status.
        case idempotent
        /// Sent again only when it provably never reached the server (no connection could be
        /// made); never after an answer.
        case onlyIfNotSent
        /// Never sent twice.
        case never
    }

    /// How often and how soon a failed request is sent again, and which failures allow it: the
    /// one retry policy of every client over ``CurlHTTP`` (etcd, the container engine, the
    /// node-agent's api-server client, the CLI).
    ///
    /// A request is sent again only when its ``Idempotence`` allows it: after no answer (never
    /// after cancellation or shut-down) when it is idempotent or provably never left, after
    /// one of ``retryableStatuses`` when it is idempotent. The pause after the `n`th failure
    /// (0 for the first) is `firstDelay × multiplierⁿ`, at most ``maxDelay``, times a random
    /// factor drawn from ``jitter`` when there is one. Cancelling the task ends the pause at
    /// once, and no further attempt is made.
    ///
    /// ```swift
    /// let policy = CurlHTTP.RetryPolicy(attempts: 4, firstDelay: .milliseconds(100))
    /// let result = await http.performResult(request, retrying: policy, idempotence: .idempotent)
    /// ```
    public struct RetryPolicy: Sendable, Hashable {
        /// How many times a request is sent at the most, the first time included (1: never again).
        public var attempts: Int
        /// The pause after the first failure.
        public var firstDelay: Duration
        /// What each further pause is multiplied by.
        public var multiplier: Int
        /// The longest pause.
        public var maxDelay: Duration
        /// The range a random factor of each pause is drawn from (e.g. `0.5...1.0`); nil for none.
        public var jitter: ClosedRange<Double>?
        /// The statuses after which an idempotent request is sent again (a caller may recognise
        /// more from the body, as the etcd client does gRPC's codes).
        public var retryableStatuses: Set<Int>

        /// Makes a policy.
        public init(
            attempts: Int, firstDelay: Duration = .milliseconds(100), multiplier: Int = 2,
            maxDelay: Duration = .seconds(30), jitter: ClosedRange<Double>? = nil,
            retryableStatuses: Set<Int> = [502, 503, 504]
        ) {
            self.attempts = max(1, attempts)
            self.firstDelay = firstDelay
            self.multiplier = max(1, multiplier)
            self.maxDelay = maxDelay
            self.jitter = jitter
            self.retryableStatuses = retryableStatuses
        }

        /// Sends every request once.
        public static let never = RetryPolicy(attempts: 1)

        /// `retries` more attempts after the first, the pause doubling from `firstDelay` at
        /// most five times (to 32 × `firstDelay`) and never longer than `maxDelay`; 502, 503 and
        /// 504 are retryable.
        public static func doubling(
            retries: Int, firstDelay: Duration, maxDelay: Duration? = nil, jitter: ClosedRange<Double>? = nil
        ) -> RetryPolicy {
            let fiveDoublings = firstDelay * 32
            return RetryPolicy(
                attempts: retries + 1, firstDelay: firstDelay, multiplier: 2,
                maxDelay: min(fiveDoublings, maxDelay ?? fiveDoublings), jitter: jitter)
        }

        /// Whether a request of `idempotence` may be sent again after `error` (no answer).
        public func mayRetry(_ error: CurlHTTPError, _ idempotence: Idempotence) -> Bool {
            if error.code == .cancelled || error.code == .shutDown { return false }
            switch idempotence {
            case .idempotent: return true
            case .onlyIfNotSent: return !error.reachedServer
            case .never: return false
            }
        }

        /// Whether a request of `idempotence` may be sent again after an answer with `status`.
        public func mayRetry(status: Int, _ idempotence: Idempotence) -> Bool {
            idempotence == .idempotent && retryableStatuses.contains(status)
        }

        /// The pause after failure `failures` (0 for the first).
        public func delay(after failures: Int) -> Duration {
            var delay = firstDelay
            var n = 0
            while n < failures, delay < maxDelay {
                delay = delay * multiplier
                n += 1
            }
            delay = min(delay, maxDelay)
            if let jitter { delay = delay * Double.random(in: jitter) }
            return delay
        }

        /// Sleeps ``delay(after:)``.
        /// - Throws: `CancellationError` as soon as the task is cancelled.
        public func sleep(after failures: Int) async throws {
            try await Task.sleep(for: delay(after: failures))
        }

        /// The longest `Retry-After` honoured: a server asking for more is waited on this long.
        public static let longestRetryAfter = Duration.seconds(60)

        /// The pause after failure `failures` when the server named a `Retry-After`: that long
        /// (at most ``longestRetryAfter``), plus ``delay(after:)`` on top, so clients told the
        /// same second still come back spread by the policy's jitter; ``delay(after:)`` alone
        /// without one.
        public func delay(after failures: Int, retryAfter: Duration?) -> Duration {
            guard let retryAfter, retryAfter > .zero else { return delay(after: failures) }
            return min(retryAfter, Self.longestRetryAfter) + delay(after: failures)
        }

        /// What one attempt came to.
        public enum Outcome<Value, Failure: Error> {
            /// The answer: returned or thrown as it is, whatever attempts are left.
            case final(Result<Value, Failure>)
            /// Worth another attempt, not before `after` when the server said so (its
            /// `Retry-After`); the answer when none is left.
            case retryable(Result<Value, Failure>, after: Duration? = nil)
        }

        /// Runs `attempt` (given its number, from 0) until it comes to a final outcome or the
        /// attempts are spent, pausing as the policy says between attempts; returns or throws
        /// what the last attempt came to. `onRetry` is told of each retryable outcome that will
        /// be tried again, before the pause.
        /// - Throws: what the last attempt threw or failed with, or `cancelled()` when the task
        ///   is cancelled during a pause.
        public func run<Value, Failure: Error>(
            cancelled: () -> Failure,
            onRetry: (_ attempt: Int, _ outcome: Result<Value, Failure>) -> Void = { _, _ in },
            _ attempt: (_ attempt: Int) async throws(Failure) -> Outcome<Value, Failure>
        ) async throws(Failure) -> Value {
            var n = 0
            while true {
                let result: Result<Value, Failure>
                let retryAfter: Duration?
                switch try await attempt(n) {
                case .final(let final):
                    return try final.get()
                case .retryable(let retryable, let after):
                    result = retryable
                    retryAfter = after
                }
                guard n + 1 < attempts else { return try result.get() }
                onRetry(n, result)
                do {
                    try await Task.sleep(for: delay(after: n, retryAfter: retryAfter))
                } catch {
                    throw cancelled()
                }
                n += 1
            }
        }
    }
}

extension CurlHTTP.Client {
    /// Performs `request`, and again as `policy` allows for a request of `idempotence`, after
    /// at least the `Retry-After` (in seconds) of an answer that has one; returns the last
    /// answer, whatever its status, or the last failure. `onRetry` is told of each outcome that
    /// will be retried (the attempt's number, from 0). Cancelling the calling
    /// task aborts the transfer or ends the pause: ``CurlHTTPError/Code/cancelled``.
    public func performResult(
        _ request: CurlHTTP.Request, retrying policy: CurlHTTP.RetryPolicy, idempotence: CurlHTTP.Idempotence,
        onRetry: (_ attempt: Int, _ outcome: Result<CurlHTTP.Response, CurlHTTPError>) -> Void = { _, _ in }
    ) async -> Result<CurlHTTP.Response, CurlHTTPError> {
        do {
            return .success(
                try await policy.run(cancelled: { CurlHTTPError.cancelled }, onRetry: onRetry) {
                    (_: Int) async throws(CurlHTTPError) -> CurlHTTP.RetryPolicy.Outcome<CurlHTTP.Response, CurlHTTPError> in
                    let result = await performResult(request)
                    switch result {
                    case .success(let response):
                        guard policy.mayRetry(status: response.status, idempotence) else { return .final(result) }
                        return .retryable(result, after: response.retryAfter)
                    case .failure(let error):
                        return policy.mayRetry(error, idempotence) ? .retryable(result) : .final(result)
                    }
                })
        } catch {
            return .failure(error)
        }
    }
}
