import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

@Suite("Watch against real etcd")
struct WatchTests {
    @Test func deliversPutsAndDeletesInOrder() async throws {
        let client = try await SharedEtcd.client()
        let p = uniquePrefix("watch")
        let start = try await client.put(p + "a", "1").header.revision
        let (events, task) = collect(client.watch(.prefix(p), startRevision: start, prevKV: true))
        defer { task.cancel() }
        try await client.put(p + "b", "2")
        try await client.put(p + "a", "3")
        try await client.delete(.key(p + "b"))
        // Two keys in one transaction share a revision: both must arrive.
        _ = try await client.txn(compare: [], success: [.put(.init(p + "c", "4")), .put(.init(p + "d", "5"))])
        try await eventually("6 events") { events.values.count >= 6 }
        let got = events.values
        #expect(got.map(\.kv.keyString) == [p + "a", p + "b", p + "a", p + "b", p + "c", p + "d"])
        #expect(got.map(\.type) == [.put, .put, .put, .delete, .put, .put])
        #expect(got[2].prevKV?.valueString == "1")
        #expect(got[4].revision == got[5].revision)
        #expect(zip(got, got.dropFirst()).allSatisfy { $0.revision <= $1.revision })
    }

    @Test func watchFromNowSeesOnlyLaterChanges() async throws {
        let client = try await SharedEtcd.client()
        let p = uniquePrefix("watchnow")
        try await client.put(p + "old", "x")
        let (events, task) = collect(client.watch(.prefix(p)))
        defer { task.cancel() }
        // The watch is live once a marker write shows up.
        try await eventually("watch live") {
            try await client.put(p + "marker", "m")
            return !events.values.isEmpty
        }
        #expect(!events.values.contains { $0.kv.keyString == p + "old" })
    }

    @Test func aStreamThatStaysOpenButStopsCarryingChangesIsReconnected() async throws {
        let etcd = try await SharedEtcd.fixture.value
        let endpoint = try #require(etcd.endpoints.first)
        let upstream = try #require(URL(string: endpoint)?.port)
        let proxy = try StreamFreezingProxy(upstreamPort: upstream)
        defer { proxy.stop() }
        let client = try Etcd.Client(Etcd.Configuration(
            endpoints: ["http://127.0.0.1:\(proxy.port)"], requestTimeout: .seconds(10), streamIdleTimeout: .seconds(1)))
        let direct = try await SharedEtcd.client()
        let p = uniquePrefix("frozenstream")
        let start = try await direct.range(.prefix(p), countOnly: true).header.revision + 1
        let (events, task) = collect(client.watch(.prefix(p), startRevision: start))
        defer { task.cancel() }
        try await direct.put(p + "a", "1")
        try await eventually("a delivered") { events.values.count == 1 }
        // The member's messages on the stream stop arriving; the member itself still answers.
        proxy.freezeWatchStreams()
        try await direct.put(p + "b", "2")
        try await eventually("b delivered over a new stream", timeout: 60) { events.values.count >= 2 }
        #expect(events.values.map(\.kv.keyString) == [p + "a", p + "b"])
        #expect(proxy.watchRequests == 2, "one reconnection")
        // A quiet stream that owes nothing is kept: quiet for three checks (the gap is the
        // scenario, not a wait for a result), then a change comes over the same stream.
        try await Task.sleep(for: .seconds(3))
        try await direct.put(p + "c", "3")
        try await eventually("c delivered") { events.values.count >= 3 }
        #expect(events.values.map(\.kv.keyString) == [p + "a", p + "b", p + "c"])
        #expect(proxy.watchRequests == 2, "a stream that owed nothing was not reconnected")
        #expect(events.error == nil)
    }

    @Test func survivesKill9AndRestartWithoutLossOrDuplicates() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let client = try Etcd.Client(
            Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(5), retryBackoff: .milliseconds(20)))
        let p = "/watch/restart/"
        let first = try await client.put(p + "1", "a").header.revision
        try await client.put(p + "2", "b")
        let (events, task) = collect(client.watch(.prefix(p), startRevision: first))
        defer { task.cancel() }
        try await eventually("events before the kill") { events.values.count == 2 }

        etcd.kill9()
        try await etcd.restart()
        try await retrying("put after restart") { try await createOnce(client, p + "3", "c") }
        try await client.delete(.key(p + "1"))
        try await client.put(p + "4", "d")

        try await eventually("events after the restart") { events.values.count >= 5 }
        let got = events.values
        #expect(got.map { "\($0.type == .put ? "put" : "del") \($0.kv.keyString)" } == [
            "put \(p)1", "put \(p)2", "put \(p)3", "del \(p)1", "put \(p)4",
        ])
        #expect(zip(got, got.dropFirst()).allSatisfy { $0.revision < $1.revision })
        #expect(events.error == nil)
    }

    @Test func reportsCompactionOfTheStartRevision() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let client = try Etcd.Client(endpoints: etcd.endpoints)
        let r1 = try await client.put("/compact/k", "1").header.revision
        try await client.put("/compact/k", "2")
        let r3 = try await client.put("/compact/k", "3").header.revision
        try await client.compact(revision: r3, physical: true)
        let (events, task) = collect(client.watch(.prefix("/compact/"), startRevision: r1))
        defer { task.cancel() }
        try await eventually("watch ended") { events.isFinished }
        let error = try #require(events.error as? EtcdError)
        #expect(error.code == .compacted)
        #expect(error.compactRevision == r3)
        #expect(events.values.isEmpty)
    }

    @Test func progressNotificationsAdvanceTheRevision() async throws {
        let etcd = try await EtcdFixture.start(extraArguments: ["--experimental-watch-progress-notify-interval=500ms"])
        defer { etcd.shutdown() }
        let client = try Etcd.Client(endpoints: etcd.endpoints)
        try await client.put("/other/x", "1")
        let rev = try await client.put("/other/y", "2").header.revision
        let progress = Collected<Int64>()
        let task = Task {
            do {
                for try await r in client.watch(.prefix("/quiet/"), progressNotify: true) where r.isProgressNotify {
                    progress.append([r.header.revision])
                }
            } catch { progress.finish(error) }
        }
        defer { task.cancel() }
        try await eventually("a progress notification at the store's revision") {
            progress.values.contains { $0 >= rev }
        }
    }
}
