import CurlHTTP
import Foundation
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
