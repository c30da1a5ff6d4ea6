import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneTestSupport
import Testing

/// ``CurlHTTP/RetryPolicy``: the one retry policy of the engine, api-server, etcd and CLI clients.
@Suite struct RetryPolicyTests {
    @Test func pausesDoubleAtMostFiveTimes() {
        let policy = CurlHTTP.RetryPolicy.doubling(retries: 10, firstDelay: .milliseconds(100))
        #expect(policy.attempts == 11)
        #expect((0..<8).map { policy.delay(after: $0) } == [100, 200, 400, 800, 1600, 3200, 3200, 3200].map { .milliseconds($0) })
    }

    @Test func pausesStopAtTheMaximumWithJitter() {
        let policy = CurlHTTP.RetryPolicy.doubling(
            retries: 4, firstDelay: .milliseconds(50), maxDelay: .seconds(1), jitter: 0.5...1.0)
        for (n, full) in [50, 100, 200, 400, 800, 1000, 1000].enumerated() {
            let pause = policy.delay(after: n)
            #expect(pause >= .milliseconds(full) / 2 && pause <= .milliseconds(full), "pause \(n): \(pause)")
        }
    }

    /// A server's `Retry-After` is waited out, and the policy's own (jittered) pause on top, so
    /// clients told the same second come back spread; an absurd one is capped.
    @Test func retryAfterIsWaitedWithThePolicysPauseOnTop() {
        let policy = CurlHTTP.RetryPolicy.doubling(retries: 4, firstDelay: .milliseconds(200), jitter: 0.5...1.0)
        for n in 0..<4 {
            let own = Duration.milliseconds(200) * (1 << n)
            let pause = policy.delay(after: n, retryAfter: .seconds(2))
            #expect(pause >= .seconds(2) + own / 2 && pause <= .seconds(2) + own, "pause \(n): \(pause)")
        }
        let spread = Set((0..<50).map { _ in policy.delay(after: 0, retryAfter: .seconds(1)) })
        #expect(spread.count > 1, "fifty clients told the same Retry-After came back at one instant")
        #expect(policy.delay(after: 0, retryAfter: .seconds(86_400)) <= CurlHTTP.RetryPolicy.longestRetryAfter + .milliseconds(200))
        #expect(policy.delay(after: 0, retryAfter: nil) <= .milliseconds(200))
        #expect(policy.delay(after: 0, retryAfter: .zero) <= .milliseconds(200))
    }

    @Test func retryAfterIsReadAsSeconds() {
        func answer(_ value: String?) -> CurlHTTP.Response {
            CurlHTTP.Response(status: 503, headers: value.map { [CurlHTTP.Header("Retry-After", $0)] } ?? [])
        }
        #expect(answer("3").retryAfter == .seconds(3))
        #expect(answer("0").retryAfter == .zero)
        #expect(answer(nil).retryAfter == nil)
        #expect(answer("Wed, 21 Oct 2015 07:28:00 GMT").retryAfter == nil)
        #expect(answer("-1").retryAfter == nil)
    }

    /// The node-agent's calls, registrations and watch reconnects pause with jitter: a fleet
    /// that lost its api-server or store at once must not come back in one wave.
    @Test func theAgentsPausesAreJittered() {
        #expect(NodeAPI.Configuration(baseURL: "http://127.0.0.1:1", token: "t").retryPolicy.jitter == 0.5...1.0)
        #expect(NodeLiveness.registrationRetry.jitter == 0.5...1.0)
        let pauses = (0..<50).map { _ in NodeLiveness.registrationRetry.delay(after: 3) }
        #expect(Set(pauses).count > 1 && pauses.allSatisfy { $0 >= .milliseconds(800) && $0 <= .milliseconds(1600) }, "\(pauses)")
        #expect(NodeLiveness.registrationRetry.delay(after: 10) <= .seconds(5))
    }

    @Test func whichFailuresAreRetried() {
        let policy = CurlHTTP.RetryPolicy.doubling(retries: 2, firstDelay: .milliseconds(1))
        let notSent = CurlHTTPError(code: .couldNotConnect, message: "refused", reachedServer: false)
        let lost = CurlHTTPError(code: .transfer, message: "reset", reachedServer: true)
        #expect(policy.mayRetry(notSent, .idempotent) && policy.mayRetry(lost, .idempotent))
        #expect(policy.mayRetry(notSent, .onlyIfNotSent) && !policy.mayRetry(lost, .onlyIfNotSent))
        #expect(!policy.mayRetry(notSent, .never) && !policy.mayRetry(lost, .never))
        #expect(!policy.mayRetry(.cancelled, .idempotent) && !policy.mayRetry(.shutDown, .idempotent))
        #expect(policy.mayRetry(status: 503, .idempotent) && !policy.mayRetry(status: 500, .idempotent))
        #expect(!policy.mayRetry(status: 503, .onlyIfNotSent) && !policy.mayRetry(status: 503, .never))
    }

    @Test func runsUntilFinalOrSpent() async throws {
        let policy = CurlHTTP.RetryPolicy.doubling(retries: 2, firstDelay: .milliseconds(1))
        var tries: [Int] = []
        var told: [Int] = []
        let spent = try await policy.run(cancelled: { CancellationError() }, onRetry: { n, _ in told.append(n) }) {
            (n: Int) async throws -> CurlHTTP.RetryPolicy.Outcome<Int, any Error> in
            tries.append(n)
            return .retryable(.success(n))
        }
        #expect(spent == 2 && tries == [0, 1, 2] && told == [0, 1])

        tries = []
        let final = try await policy.run(cancelled: { CancellationError() }) {
            (n: Int) async throws -> CurlHTTP.RetryPolicy.Outcome<String, any Error> in
            tries.append(n)
            return n == 1 ? .final(.success("done")) : .retryable(.success("again"))
        }
        #expect(final == "done" && tries == [0, 1])
    }

    @Test func cancellationEndsThePause() async throws {
        // An hour's pause: only cancellation can end it within the generous bound below, which
        // no loaded machine comes near.
        let policy = CurlHTTP.RetryPolicy(attempts: 3, firstDelay: .seconds(3600), maxDelay: .seconds(3600))
        let started = ContinuousClock.now
        let task = Task {
            try await policy.run(cancelled: { CurlHTTPError.cancelled }) {
                (_: Int) async throws(CurlHTTPError) -> CurlHTTP.RetryPolicy.Outcome<Int, CurlHTTPError> in
                .retryable(.failure(CurlHTTPError(code: .couldNotConnect, message: "refused", reachedServer: false)))
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        task.cancel()
        let result = await task.result
        #expect(ContinuousClock.now - started < .seconds(600))
        #expect(throws: CurlHTTPError.self) { try result.get() }
        if case .failure(let error as CurlHTTPError) = result { #expect(error.code == .cancelled) }
    }

    @Test func requestsAreSentAgainOnlyAsTheirIdempotenceAllows() async throws {
        let http = CurlHTTP.Client(name: "retry-test")
        defer { http.shutdown() }
        // Nothing listens there: the request provably never left.
        let request = CurlHTTP.Request(url: "http://127.0.0.1:\(TestEnvironment.freePort())/", connectTimeout: .seconds(2))
        let policy = CurlHTTP.RetryPolicy.doubling(retries: 2, firstDelay: .milliseconds(1))
        for (idempotence, retries) in [(CurlHTTP.Idempotence.idempotent, 2), (.onlyIfNotSent, 2), (.never, 0)] {
            var told = 0
            let result = await http.performResult(request, retrying: policy, idempotence: idempotence) { _, _ in told += 1 }
            guard case .failure(let error) = result else {
                Issue.record("an answer from a closed port")
                continue
            }
            #expect(error.code == .couldNotConnect && !error.reachedServer)
            #expect(told == retries, "\(idempotence)")
        }
    }
}
