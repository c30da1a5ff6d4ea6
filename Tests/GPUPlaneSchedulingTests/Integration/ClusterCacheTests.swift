import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The leader's caches (`ClusterCache`) across terms, against a real etcd.
@Suite("The leader's caches across terms", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct ClusterCacheTests {
    @Test("a term won again keeps every cache: nothing is listed again, and what changes next is placed", .timeLimit(.minutes(2)))
    func termWonAgainKeepsItsCaches() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 2))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("r1"))
            try await h.waitBound("acme", "r1")
            let first = try #require(scheduler.currentSession)
            let terms = scheduler.termsWon

            // The lease revoked from outside: the term ends; the scheduler campaigns and wins again.
            let key = try #require(try await h.client.leader(Scheduler.defaultElectionName))
            try await h.client.revokeLease(key.lease)
            try await eventually("a term won again") {
                scheduler.termsWon > terms && scheduler.isLeader && scheduler.currentSession !== first
            }
            let second = try #require(scheduler.currentSession)
            #expect(second.fence.revision > first.fence.revision)
            #expect(second.nodes === first.nodes)
            #expect(second.replicas === first.replicas)
            #expect(second.servers === first.servers)
            #expect(second.tenants === first.tenants)
            #expect(second.deployments === first.deployments)
            #expect(second.heartbeats === first.heartbeats)
            #expect(second.nodes.relistCount == 0 && second.replicas.relistCount == 0)

            try await h.addReplica(pendingReplica("r2"))
            let bound = try await h.waitBound("acme", "r2")
            #expect((bound.binding?.leaderRevision ?? 0) > first.fence.revision)
            #expect(bound.binding?.node == "n1")
            // Its startup is recorded once its caches are synced (a loaded run may have won a
            // third term by now: whichever leads).
            try await eventually("the term's startup recorded") { scheduler.currentSession?.statistics.startup != nil }
        }
    }

    @Test("a cache that has not seen the term's revision, and that etcd cannot confirm, is listed again", .timeLimit(.minutes(2)))
    func cacheBehindIsListedAgain() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 1))
            let cache = ClusterCache(store: h.store, logger: SchedulerHarness.quietLogger)
            defer { cache.stop() }
            func synced(_ informers: ClusterCache.Informers) async throws {
                try await informers.nodes.waitUntilSynced()
                try await informers.replicas.waitUntilSynced()
                try await informers.servers.waitUntilSynced()
                try await informers.tenants.waitUntilSynced()
                try await informers.deployments.waitUntilSynced()
            }
            let first = await cache.ready(for: 1, within: .milliseconds(100))
            #expect(first.listed == ClusterCache.Informers.kinds)
            try await synced(first.informers)

            // A revision beyond etcd's: no cache reaches it, no read confirms it.
            let now = try await h.client.range(.prefix("/"), countOnly: true).header.revision
            let later = await cache.ready(for: now + 1_000, within: .milliseconds(200))
            #expect(later.listed == ClusterCache.Informers.kinds)
            #expect(later.informers.nodes !== first.informers.nodes)
            #expect(later.informers.deployments !== first.informers.deployments)
            // The replaced informers were stopped (this returns only once one no longer runs).
            await first.informers.nodes.waitUntilSeen(.max)
            try await synced(later.informers)
            #expect(later.informers.nodes.list().map(\.metadata.name) == ["n1"])

            // At etcd's revision every cache is kept: reached, or confirmed with a read.
            let current = try await h.client.range(.prefix("/"), countOnly: true).header.revision
            let again = await cache.ready(for: current, within: .milliseconds(200))
            #expect(again.listed.isEmpty)
            #expect(again.informers.nodes === later.informers.nodes)
            #expect(again.informers.replicas === later.informers.replicas)
        }
    }
}
