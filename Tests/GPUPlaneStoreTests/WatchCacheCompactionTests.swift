import EtcdClient
import Foundation
import GPUPlaneCore
@testable import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// ``WatchCache/isCompacted(after:)`` on an etcd of the test's own (it compacts it): the
/// nodes that resume their watches at once share reads, and a compacted revision is still
/// told apart.
@Suite(.enabled(if: EtcdFixture.isAvailable, "needs etcd"))
struct WatchCacheCompactionTests {
    /// 200 resumed watches asking at once, each after a revision of its own (all readable,
    /// etcd frozen while they ask so that none can finish before the rest arrive): all hear
    /// "not compacted", from far fewer reads than callers. After a compaction, a revision below
    /// it is compacted and one above is not, asked together.
    @Test func callsAtOnceShareReadsAndCompactionIsStillSeen() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let store = try ResourceStore.connect(endpoints: etcd.endpoints)
        let t = uniqueTenant("compact")
        var written: [Int64] = []
        for i in 0..<20 {
            let created = try await store.create(Gadget(tenant: t, name: "g\(i)", size: i))
            written.append(try #require(Int64(created.metadata.resourceVersion)))
        }
        let revisions = written
        let cache = WatchCache<Gadget>(store: store)
        let pid = try #require(etcd.member.pid)
        kill(pid, SIGSTOP)
        var continued = false
        defer { if !continued { kill(pid, SIGCONT) } }
        let asked = Task {
            await withTaskGroup(of: Bool.self) { group in
                for i in 0..<200 { group.addTask { await cache.isCompacted(after: revisions[(i * 7) % revisions.count]) } }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
        }
        // Every caller has sent a read or joined one (etcd frozen: none answered yet).
        try await eventually("every caller asking", timeout: 60) { cache.compactionQuestionCount == 200 }
        kill(pid, SIGCONT)
        continued = true
        let answers = await asked.value
        #expect(answers.count == 200 && answers.allSatisfy { !$0 })
        #expect(cache.compactionReadCount < 100, "200 callers sent \(cache.compactionReadCount) reads")

        let compactedAt = revisions[10]
        _ = try await store.client.compact(revision: compactedAt, physical: true)
        async let below = cache.isCompacted(after: revisions[2])
        async let above = cache.isCompacted(after: revisions[15])
        let (b, a) = await (below, above)
        #expect(b, "revision \(revisions[2] + 1) is compacted (etcd compacted at \(compactedAt))")
        #expect(!a, "revision \(revisions[15] + 1) is not compacted")
    }
}
