import Foundation
import GPUPlaneTestSupport
import Testing

/// The `path` ingress with the real daemons (in ``LocalClusterTests``, which runs its tests one
/// at a time, so two local clusters never share the host ports 20000-20999): the seed's `api`
/// pod (`path: /api`, `servicePorts: [8000]`, a GPU pod) and its `db` (a CPU pod) are applied,
/// placed by the scheduler, started by the node-agent with only port 8000 published; the api pod
/// reaches `db.pod:5432`, and a request to the application's URL at `/api` reaches it; another
/// tenant's URL does not.
extension LocalClusterTests {
    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable))
    func theAPIPodIsReachableAtTheApplicationsURL() async throws {
        let cluster = try await LocalCluster.start(binaries: Self.binaries)
        do {
            let token = try await cluster.tenant("e2e", plan: "enterprise")
            let manifest = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/local-app-url.yaml"), encoding: .utf8)
            // Applied, placed, started and probed ready; then a GET of the application's URL at
            // /api/hello, through the api-server, reaches the api pod.
            let answer = try await cluster.showApplicationURL(manifest: manifest, token: token, request: "/hello")
            #expect(answer.url == cluster.apiURL + "/apps/e2e/chat-backend")
            #expect(answer.requested == answer.url + "/api/hello")
            #expect(answer.body == "hello from the api pod\n")
            // The api pod (a GPU pod) reached the db pod (a CPU pod) as db.pod:5432, the name in
            // its DATABASE_URL, over local-gpu-0's pod network; it serves the db's answer.
            var db = (status: 0, body: Data())
            try await eventually("the api pod reached db.pod:5432", timeout: 60, every: 0.25) {
                db = try await cluster.call("GET", "/apps/e2e/chat-backend/api/db")
                return db.status == 200
            }
            #expect(String(decoding: db.body, as: UTF8.self) == "db.pod:5432 answered: ping from api\n")
            let status = try await cluster.json("GET", "/v1/applications/chat-backend", token: token)["status"] as? [String: Any] ?? [:]
            let route = try #require((status["routes"] as? [[String: Any]])?.first)
            #expect(route["port"] as? Int == 8000)
            #expect(route["ready"] as? Bool == true)
            // Placed by the scheduler; only the path's port is published.
            let replica = try #require(
                (try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]])?.first {
                    ($0["metadata"] as? [String: Any])?["name"] as? String == "chat-backend.api"
                })
            #expect((replica["binding"] as? [String: Any])?["node"] as? String == "local-gpu-0")
            #expect((replica["status"] as? [String: Any])?["podIP"] as? String != nil, "\(replica)")
            let ports = try await cluster.podman.podman(["port", "gpuplane_e2e_chat-backend.api"])
            #expect(ports.split(separator: "\n").count == 1 && ports.hasPrefix("8000/tcp -> 127.0.0.1:"), "\(ports)")

            // Another tenant's URL for the same name reaches nothing.
            _ = try await cluster.tenant("e2e-other", plan: "enterprise")
            let other = try await cluster.call("GET", "/apps/e2e-other/chat-backend/api/hello")
            #expect(other.status == 404, "\(String(decoding: other.body, as: UTF8.self))")

            #expect(try await cluster.call("DELETE", "/v1/applications/chat-backend", token: token).status == 204)
            try await eventually("the URL stops answering", timeout: 60) {
                try await cluster.call("GET", "/apps/e2e/chat-backend/api/hello").status == 404
            }
        } catch {
            Issue.record("\(error)\n\(cluster.logTails())\n(all logs in \(cluster.directory.path))")
            await TestEnvironment.offPool { cluster.shutdown() }
            return
        }
        await TestEnvironment.offPool { cluster.shutdown() }
        try? FileManager.default.removeItem(at: cluster.directory)
    }
}
