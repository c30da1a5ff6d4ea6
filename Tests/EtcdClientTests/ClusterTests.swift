import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

@Suite("A 3-member cluster")
struct ClusterTests {
    @Test func clientKeepsWorkingWhenAMemberDies() async throws {
        let cluster = try await EtcdClusterFixture.start(size: 3)
        defer { cluster.shutdown() }
        let client = try Etcd.Client(
            Etcd.Configuration(
                endpoints: cluster.endpoints, requestTimeout: .seconds(5), dialTimeout: .seconds(1),
                retryBackoff: .milliseconds(20)))
        let members = try await client.memberList()
        #expect(members.count == 3)
        #expect(Set(members.flatMap(\.clientURLs)) == Set(cluster.endpoints))
        let status = try await client.status()
        #expect(status.version == "3.4.23")
        #expect(status.leader != 0)

        let p = "/cluster/"
        let start = try await client.put(p + "before", "1").header.revision
        let (events, task) = collect(client.watch(.prefix(p), startRevision: start))
        defer { task.cancel() }
        try await eventually("first event") { events.values.count == 1 }

        // Kill exactly the member the client is talking to.
        let victim = try #require(cluster.endpoints.firstIndex(of: client.currentEndpoint))
        cluster.kill(victim)

        for i in 0..<10 {
            try await retrying("put \(i)") { try await createOnce(client, p + "after-\(i)", "\(i)") }
        }
        #expect(client.currentEndpoint != cluster.endpoints[victim])
        let listed = try await client.range(.prefix(p))
        #expect(listed.count == 11)
        try await eventually("all events after the kill") { events.values.count >= 11 }
        let keys = events.values.map(\.kv.keyString)
        #expect(keys == [p + "before"] + (0..<10).map { p + "after-\($0)" })

        try await cluster.restart(victim)
        let back = try await client.status(endpoint: cluster.endpoints[victim])
        #expect(back.version == "3.4.23")
    }
}
