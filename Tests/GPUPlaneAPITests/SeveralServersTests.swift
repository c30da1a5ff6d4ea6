import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

@Suite(.timeLimit(.minutes(5))) struct SeveralServersTests {
    /// Two api-servers over one etcd give the same answers: nothing is kept outside etcd but
    /// watch-backed caches.
    @Test func twoServersShareOneEtcd() async throws {
        let h = try await SharedServer.shared.get()
        var logger = Logger(label: "gpuplane.api.second")
        logger.logLevel = .warning
        let deps = APIDependencies(
            store: try ResourceStore.connect(endpoints: h.etcd.endpoints), catalog: try Catalog.standard(),
            adminTokens: [h.admin], logger: logger)
        let server = try await startAPIServer(deps)
        defer { server.task.cancel() }
        let second = Harness(base: server.base, admin: h.admin, etcd: h.etcd, client: h.client, deps: deps, auditIdentifier: h.auditIdentifier)
        try await eventually("second api-server answers") { try await second.call("GET", "/healthz").status == 200 }

        // A tenant and token made through the first server work on the second.
        let (_, token) = try await h.tenant(.scale)
        let created = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(created.status == 201)
        let read = try await second.call("GET", "/v1/applications/my-chat-backend", token: token)
        #expect(read.status == 200)
        #expect(read.resourceVersion == created.resourceVersion)
        // A write through the second is a conflict for a stale version from the first.
        let stale = try #require(created.resourceVersion)
        #expect(try await second.call("POST", "/v1/applications", token: token, body: chatBackend.replacingOccurrences(of: "v1", with: "v2"), headers: ["If-Match": stale]).status == 200)
        #expect(try await h.call("POST", "/v1/applications", token: token, body: chatBackend, headers: ["If-Match": stale]).status == 409)
        let first = try await h.call("GET", "/v1/applications", token: token)
        let other = try await second.call("GET", "/v1/applications", token: token)
        #expect(first.items.count == 1 && other.items.count == 1)
        #expect((first.items.first?["metadata"] as? [String: Any])?["resourceVersion"] as? String
            == (other.items.first?["metadata"] as? [String: Any])?["resourceVersion"] as? String)
    }
}
