import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneTestSupport
import Testing

/// The shared libcurl transport over the engine's unix socket: status and headers, deadlines,
/// cancellation, streams and connection reuse.
@Suite(.enabled(if: podmanAvailable, "needs root, podman, runc and busybox-static"))
struct EngineTransportTests {
    func request(_ podman: PodmanFixture, _ path: String, method: CurlHTTP.Method = .get, timeout: Duration? = .seconds(10))
        -> CurlHTTP.Request
    {
        CurlHTTP.Request(method: method, url: "http://localhost" + path, timeout: timeout, unixSocketPath: podman.socketPath)
    }

    @Test func answersWithStatusHeadersAndBody() async throws {
        let (podman, _) = try await SharedPodman.engine()
        let http = CurlHTTP.Client(name: "test-curl")
        let ping = try await http.perform(request(podman, "/_ping"))
        #expect(ping.status == 200)
        #expect(String(decoding: ping.body, as: UTF8.self) == "OK")
        #expect(ping.header("libpod-api-version") != nil)
        let missing = try await http.perform(request(podman, "/v1.41/containers/no-such-container-\(UUID())/json"))
        #expect(missing.status == 404)
        #expect(!missing.isSuccess)
        for _ in 0..<5 { _ = try await http.perform(request(podman, "/_ping")) }
        #expect(http.statistics.transfers == 7)
        #expect(http.statistics.connectionsOpened < 7)
    }

    @Test func deadlinesAndCancellation() async throws {
        try await withContainers { scope in
            let id = try await scope.run(scope.spec("blocker", command: ["sleep", "1000"]))
            let http = CurlHTTP.Client(name: "test-curl")
            // `wait` answers only when the container exits.
            let wait = request(scope.podman, "/v1.41/containers/\(id)/wait", method: .post, timeout: .milliseconds(300))
            await #expect {
                try await http.perform(wait)
            } throws: { ($0 as? CurlHTTPError)?.code == .timeout }

            var endless = wait
            endless.timeout = nil
            let task = Task { try await http.perform(endless) }
            try await Task.sleep(for: .milliseconds(200))
            task.cancel()
            await #expect {
                try await withTimeout(seconds: 10) { try await task.value }
            } throws: { ($0 as? CurlHTTPError)?.code == .cancelled }

            // The loop serves on after both.
            #expect(try await http.perform(request(scope.podman, "/_ping")).status == 200)
        }
    }

    @Test func streamsEndWithTheStatusOfAFailedAnswer() async throws {
        let (podman, _) = try await SharedPodman.engine()
        let http = CurlHTTP.Client(name: "test-curl")
        let stream = http.stream(request(podman, "/v1.41/containers/no-such-\(UUID())/logs?follow=true&stdout=true", timeout: nil))
        await #expect {
            for try await _ in stream.chunks {}
        } throws: { error in
            guard let error = error as? CurlHTTPError else { return false }
            return error.code == .httpStatus && error.response?.status == 404
        }
    }

    @Test func anAbsentSocketNeverReachedTheServer() async throws {
        let http = CurlHTTP.Client(name: "test-curl")
        let result = await http.performResult(
            CurlHTTP.Request(url: "http://localhost/_ping", unixSocketPath: "/nonexistent/\(UUID()).sock"))
        guard case .failure(let error) = result else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.code == .couldNotConnect)
        #expect(error.reachedServer == false)
        http.shutdown()
        await #expect {
            try await http.perform(CurlHTTP.Request(url: "http://localhost/_ping", unixSocketPath: "/x"))
        } throws: { ($0 as? CurlHTTPError)?.code == .shutDown }
    }
}
