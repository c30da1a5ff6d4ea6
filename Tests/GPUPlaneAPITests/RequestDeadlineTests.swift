import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Gpuplane-Timeout-Ms`: a node-agent's write whose client stopped waiting before the
/// api-server got to it is not done (504 `deadline_exceeded`, nothing written), while the same
/// write from a client still waiting is.
@Suite struct RequestDeadlineTests {
    /// etcd frozen (SIGSTOP) while two status reports wait on it: the one whose client said it
    /// waits 300 ms is dropped once etcd answers again, 600 ms later, and writes nothing; the
    /// one whose client waits a minute is written. A malformed header is 400 naming it.
    @Test func aReportWhoseClientStoppedWaitingIsNotWritten() async throws {
        // The counters land in /metrics once the process's registry is bootstrapped (as the
        // daemon does at start; a no-op when another test did).
        MetricsExporter.bootstrap()
        let (h, server) = try await Harness.start()
        defer {
            server.task.cancel()
            h.etcd.shutdown()
        }
        let node = "deadline-node"
        let token = try await h.nodeToken(node)
        let registered = try await h.call(
            "POST", "/v1/nodes", token: token, body: #"{"name": "\#(node)", "gpus": []}"#, headers: ["Gpuplane-Timeout-Ms": "60000"])
        #expect(registered.status == 201, "\(registered.text)")
        let (tenant, user) = try await h.tenant(.enterprise)
        let applied = try await h.call("POST", "/v1/applications", token: user, body: app("a", pods: "  - {name: p, image: x}\n  - {name: q, image: x}\n"))
        #expect(applied.status == 201, "\(applied.text)")
        for pod in ["a.p", "a.q"] {
            var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: pod)
            replica.binding = Binding(node: node, gpuIndices: [])
            _ = try await h.deps.store.update(replica)
        }
        func report(_ pod: String, restarts: Int, waits: String) async throws -> Reply {
            try await h.call(
                "PUT", "/v1/replicas/\(tenant)/\(pod)/status", token: token, body: #"{"phase": "running", "restarts": \#(restarts)}"#,
                headers: ["Gpuplane-Timeout-Ms": waits])
        }
        // Both reported once with time to spare (the token now known to the api-server's copy).
        #expect(try await report("a.p", restarts: 0, waits: "60000").status == 200)
        #expect(try await report("a.q", restarts: 0, waits: "60000").status == 200)
        let before = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p")
        let abandonedBefore = try await abandoned(h)

        // A header that says no wait is refused before anything is read.
        for bad in ["soon", "0", "3600001", "-5"] {
            let refused = try await report("a.p", restarts: 9, waits: bad)
            #expect(refused.status == 400 && refused.errorCode == "bad_request", "\(bad): \(refused.text)")
            #expect(refused.error["field"] as? String == "Gpuplane-Timeout-Ms", "\(refused.text)")
        }

        let pid = try #require(h.etcd.member.pid)
        kill(pid, SIGSTOP)
        var thawed = false
        defer { if !thawed { kill(pid, SIGCONT) } }
        let gaveUp = Task { try await report("a.p", restarts: 7, waits: "300") }
        let waiting = Task { try await report("a.q", restarts: 7, waits: "60000") }
        // Longer than the first client waits: it has given up by now.
        try await Task.sleep(for: .milliseconds(600))
        kill(pid, SIGCONT)
        thawed = true

        let dropped = try await gaveUp.value
        #expect(dropped.status == 504 && dropped.errorCode == "deadline_exceeded", "\(dropped.text)")
        let written = try await waiting.value
        #expect(written.status == 200, "\(written.text)")
        #expect(try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.q").status.restarts == 7)
        let after = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p")
        #expect(after.status.restarts == 0 && after.metadata.resourceVersion == before.metadata.resourceVersion, "the abandoned report was written")
        #expect(try await abandoned(h) >= abandonedBefore + 1)
    }

    /// `gpuplane_api_requests_abandoned_total` as `/metrics` says (the process's, shared by its
    /// tests), 0 before the counter's first use in this process.
    func abandoned(_ h: Harness) async throws -> Double {
        let text = try await h.call("GET", "/metrics").text
        let line = text.split(separator: "\n").first { $0.hasPrefix("gpuplane_api_requests_abandoned_total ") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0
    }
}
