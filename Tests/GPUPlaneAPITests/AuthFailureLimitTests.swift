import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

/// Token guessing is slowed per source address: after `limit` unknown tokens within a minute
/// the address gets 429 with `Retry-After` (even with a good token) until the oldest failure
/// is a minute old; requests without a token never count; other addresses are untouched.
@Suite(.timeLimit(.minutes(5))) struct AuthFailureLimitTests {
    @Test func theLimiterCountsPerSourceWithinTheWindow() {
        let limiter = AuthFailureLimiter(limit: 3, window: .seconds(60), maxSources: 2)
        let t0 = ContinuousClock.now
        for i in 0..<2 { limiter.recordFailure("10.0.0.1", now: t0 + .seconds(i)) }
        #expect(limiter.wait("10.0.0.1", now: t0 + .seconds(2)) == nil, "two of three")
        limiter.recordFailure("10.0.0.1", now: t0 + .seconds(2))
        #expect(limiter.wait("10.0.0.1", now: t0 + .seconds(3)) == .seconds(57), "until the oldest is a minute old")
        #expect(limiter.wait("10.0.0.2", now: t0 + .seconds(3)) == nil, "another address is untouched")
        #expect(limiter.wait("10.0.0.1", now: t0 + .seconds(60)) == nil, "the oldest left the window")
        // Bounded: a third address pushes out the one whose failures are oldest.
        limiter.recordFailure("10.0.0.2", now: t0 + .seconds(4))
        limiter.recordFailure("10.0.0.3", now: t0 + .seconds(5))
        #expect(limiter.trackedSources == 2)
        #expect(limiter.wait("10.0.0.1", now: t0 + .seconds(6)) == nil)
    }

    @Test func anAddressThatGuessesIsRefusedAndOthersAreNot() async throws {
        let h = try await SharedServer.shared.get()
        var logger = Logger(label: "gpuplane.api.auth-limit")
        logger.logLevel = .critical
        var deps = APIDependencies(
            store: try ResourceStore.connect(endpoints: h.etcd.endpoints), catalog: try Catalog.standard(), adminTokens: [h.admin],
            logger: logger)
        deps.authFailureLimiter = AuthFailureLimiter(limit: 3)
        let running = try await startAPIServer(deps)
        defer { running.task.cancel() }
        let server = Harness(base: running.base, admin: h.admin, etcd: h.etcd, client: h.client, deps: deps, auditIdentifier: h.auditIdentifier)
        try await eventually("api-server answers") { try await server.call("GET", "/healthz").status == 200 }

        // No token: refused, and never counted.
        for _ in 0..<5 { #expect(try await server.call("GET", "/v1/tenants").status == 401) }
        #expect(try await server.call("GET", "/v1/tenants", token: h.admin).status == 200)
        // Three guesses are answered 401; then even the right token gets 429.
        for i in 0..<3 { #expect(try await server.call("GET", "/v1/tenants", token: "gp_guess_\(i)").status == 401) }
        let refused = try await server.call("GET", "/v1/tenants", token: h.admin)
        #expect(refused.status == 429)
        #expect(refused.errorCode == "rate_limited", "\(refused.text)")
        #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 > 0, "\(refused.headers)")
        // Another address is served.
        let socket = try RawSocket(from: "127.0.0.2", to: running.port)
        defer { socket.close() }
        try socket.send("GET /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(h.admin)\r\nConnection: close\r\n\r\n")
        #expect(await socket.readAll(seconds: 60).hasPrefix("HTTP/1.1 200"))
    }
}
