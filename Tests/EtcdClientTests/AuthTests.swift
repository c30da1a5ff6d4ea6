import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

@Suite("Auth against real etcd")
struct AuthTests {
    /// Runs etcdctl against `endpoint`; its exit status.
    func etcdctl(_ endpoint: String, _ args: [String]) throws -> Int32 {
        try Command.run("/usr/bin/etcdctl", ["--endpoints", endpoint] + args, environment: ["ETCDCTL_API": "3"]).status
    }

    @Test(.enabled(if: TestEnvironment.hasExecutable("/usr/bin/etcdctl")))
    func passwordLoginSendsTheToken() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let endpoint = etcd.endpoints[0]
        #expect(try etcdctl(endpoint, ["user", "add", "root:secret"]) == 0)
        #expect(try etcdctl(endpoint, ["auth", "enable"]) == 0)

        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, credentials: ("root", "secret")))
        try await client.put("/auth/k", "v")
        #expect(try await client.get("/auth/k")?.valueString == "v")
        let (events, task) = collect(client.watch(.key("/auth/k")))
        defer { task.cancel() }
        try await eventually("authenticated watch delivers") {
            try await client.put("/auth/k", "w")
            return !events.values.isEmpty
        }

        let wrong = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, credentials: ("root", "nope")))
        do {
            _ = try await wrong.get("/auth/k")
            Issue.record("wrong password accepted")
        } catch let e as EtcdError {
            #expect(e.code == .unauthenticated)
        }
        let anonymous = try Etcd.Client(endpoints: etcd.endpoints)
        await #expect(throws: EtcdError.self) { _ = try await anonymous.get("/auth/k") }
    }
}
