import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneLocal
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// An api-server's graceful shutdown (SIGTERM in the daemon, `RunningAPIServer.stop()` here)
/// with watches open: every node-agent holds one for days, and Hummingbird's shutdown waits for
/// the responses in flight, so a watch that never ended kept the api-server up until SIGKILL
/// (systemd's and the chart's 30 s), its nodes' watches attached to a server that no longer
/// listened.
@Suite(.timeLimit(.minutes(5))) struct GracefulShutdownTests {

    /// The ERROR line that ends `kind`'s stream (nil for a watch of one kind) if the api-server
    /// shut down, and the version it says to resume from.
    private func shutdownVersion(_ lines: [[String: Any]], kind: String?) -> Int64? {
        guard let last = lines.last(where: { $0["kind"] as? String == kind }), last["type"] as? String == "ERROR",
            let error = last["error"] as? [String: Any], error["code"] as? Int == 503,
            let message = error["message"] as? String, message.hasPrefix("this api-server is shutting down; reconnect with resourceVersion ")
        else { return nil }
        return message.split(separator: " ").last.flatMap { Int64($0) }
    }

    /// The highest resourceVersion of `kind`'s lines before its end.
    private func lastVersion(_ lines: [[String: Any]], kind: String?) -> Int64? {
        lines.filter { $0["kind"] as? String == kind && $0["type"] as? String != "ERROR" }
            .compactMap { ($0["resourceVersion"] as? String).flatMap { Int64($0) } }.max()
    }

    @Test func stoppingEndsEveryWatchWithALineToResumeElsewhereAndStops() async throws {
        let (h, server) = try await Harness.start()
        defer { h.etcd.shutdown() }
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let token = try await h.nodeToken(node)
        let (tenant, user) = try await h.tenant(.enterprise)
        #expect(try await h.call("POST", "/v1/applications", token: user, body: app("a", pods: "  - {name: p, image: x}\n")).status == 201)
        var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p")
        replica.binding = Binding(node: node, gpuIndices: [])
        _ = try await h.deps.store.update(replica)

        let (nodeCurl, nodeOut) = try h.curlStream("/v1/nodes/\(node)/watch", token: token, "node.ndjson")
        defer { nodeCurl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        let (adminCurl, adminOut) = try h.curlStream("/v1/replicas?watch=true", token: h.admin, "replicas.ndjson")
        defer { adminCurl.kill9() }
        try await eventually("both watches opened") {
            let kinds = Set(ndjsonLines(nodeOut).filter { $0["type"] as? String == "BOOKMARK" }.compactMap { $0["kind"] as? String })
            return kinds == ["replicas", "modelservers"] && ndjsonLines(adminOut).contains { $0["type"] as? String == "BOOKMARK" }
        }

        try await stopsOnItsOwn(server)
        try await eventually("both streams over") { !nodeCurl.isRunning && !adminCurl.isRunning }
        // Ended, not cut: curl saw the chunked body's last chunk.
        #expect(nodeCurl.exitStatus == 0 && adminCurl.exitStatus == 0)

        let nodeLines = ndjsonLines(nodeOut), adminLines = ndjsonLines(adminOut)
        for kind in ["replicas", "modelservers"] {
            let resume = shutdownVersion(nodeLines, kind: kind)
            #expect(resume != nil, "the node's \(kind) did not end with the shutdown line: \(nodeLines.suffix(3))")
            #expect(resume == lastVersion(nodeLines, kind: kind), "resume from the last version sent")
        }
        #expect(nodeLines.contains { $0["type"] as? String == "ADDED" && $0["kind"] as? String == "replicas" })
        let resume = shutdownVersion(adminLines, kind: nil)
        #expect(resume != nil, "the replicas' watch did not end with the shutdown line: \(adminLines.suffix(3))")
        #expect(resume == lastVersion(adminLines, kind: nil))
        #expect((try? await h.call("GET", "/healthz", timeout: .seconds(5))) == nil, "the server still answers")
    }
}
