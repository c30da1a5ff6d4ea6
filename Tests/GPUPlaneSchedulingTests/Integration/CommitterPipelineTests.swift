import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Testing

@testable import GPUPlaneScheduling

/// The committer sends several transactions at once against real etcd: everything commits
/// exactly once, and a binding to a model server created in an earlier transaction waits for
/// that one's answer.
@Suite struct CommitterPipelineTests {
    private func fence(_ h: SchedulerHarness) async throws -> LeaderFence {
        let lease = try await h.client.grantLease(ttl: 60).id
        return LeaderFence(try await h.client.campaign("/test/committer-election", lease: lease, value: "x"))
    }

    private func bind(_ replica: Replica, server: String? = nil) -> WriteUnit {
        var bound = replica
        let binding = Binding(node: "n1", gpuIndices: server == nil ? [0] : [], modelServer: server)
        bound.binding = binding
        bound.status.phase = .bound
        return WriteUnit(ops: [.update(bound)], bindings: [binding])
    }

    /// 350 bindings in transactions of 100, four in flight: all four commit, each binding once.
    @Test func manyTransactionsInFlightCommitEverythingOnce() async throws {
        try await SchedulerHarness.with { h in
            // Created 50 to a transaction: the full suite runs this beside everything else.
            for start in stride(from: 0, to: 350, by: 50) {
                _ = try await h.store.transaction { txn in
                    for i in start..<start + 50 { try txn.create(Fixture.replica("p\(i)")) }
                }
            }
            let replicas = try await h.store.list(Replica.self, tenant: "acme").items
            let committer = Committer(
                store: h.store, fence: try await fence(h),
                configuration: .init(maxOperationsPerTransaction: 100, transactionsInFlight: 4), logger: SchedulerHarness.quietLogger)
            #expect(try await committer.commit(replicas.map { bind($0) }))
            #expect(replicas.count == 350)
            #expect(committer.counters.transactions == 4)
            #expect(committer.counters.bindings == 350)
            #expect(committer.counters.conflicts == 0)
            let stored = try await h.store.list(Replica.self, tenant: "acme")
            #expect(stored.items.count == 350)
            #expect(stored.items.allSatisfy { $0.binding?.node == "n1" && $0.status.phase == .bound })
            // The informers are to wait for the last of the four.
            #expect(committer.awaited[.replica] == stored.revision)
        }
    }

    /// A server's create fails (it exists already): the binding to it, in a later transaction,
    /// is never sent, while an independent binding sent beside the create commits.
    @Test func aBindingWaitsForItsServersCreate() async throws {
        try await SchedulerHarness.with { h in
            let server = Fixture.server("ms-1", slug: "llama-3.1-8b", node: "n1", gpu: 0, vramGB: 24)
            _ = try await h.store.create(server)
            let independent = try await h.store.create(Fixture.replica("free"))
            let attaching = try await h.store.create(Fixture.shared("attach"))
            let committer = Committer(
                store: h.store, fence: try await fence(h),
                configuration: .init(maxOperationsPerTransaction: 1, transactionsInFlight: 4), logger: SchedulerHarness.quietLogger)
            let units = [WriteUnit(ops: [.create(server)]), bind(independent), bind(attaching, server: "ms-1")]
            #expect(try await committer.commit(units), "the independent binding committed")
            #expect(try await h.store.get(Replica.self, tenant: "acme", name: "free").binding?.node == "n1")
            let waited = try await h.store.get(Replica.self, tenant: "acme", name: "attach")
            #expect(waited.binding == nil, "bound to a server whose create failed")
            #expect(waited.metadata.resourceVersion == attaching.metadata.resourceVersion)
            #expect(committer.counters.transactions == 1)
            #expect(committer.counters.conflicts == 1)
        }
    }
}
