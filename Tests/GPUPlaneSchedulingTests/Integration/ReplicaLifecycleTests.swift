import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The replica lifecycle as the scheduler applies it against a real etcd: which phases hold
/// their GPUs (issue 12, item 4: a crashed replica waiting out its restart backoff is
/// `failed` and still holds its GPU).
@Suite("Replica lifecycle against etcd", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct ReplicaLifecycleTests {
    @Test("a failed replica in restart backoff keeps its GPU: another tenant's replica lands on the other one, a third waits")
    func failedReplicaInBackoffHoldsItsGPU() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 2))
            // Tenant A's pod crashed on GPU 0; its node-agent restarts it after the backoff.
            var crashed = pendingReplica("crashy", tenant: "tenant-a")
            crashed.binding = Binding(node: "n1", gpuIndices: [0])
            crashed.status = ReplicaStatus(
                phase: .failed, message: "container exited with code 1; restart 1 after a 1s backoff",
                reason: .crashLoopBackOff, exitCode: 1, observedBinding: crashed.binding)
            try await h.addReplica(crashed)
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)

            // Tenant B applies two 1-GPU pods: one fits on GPU 1, the other has no free GPU.
            try await h.addReplica(pendingReplica("b1", tenant: "tenant-b"))
            try await h.addReplica(pendingReplica("b2", tenant: "tenant-b"))
            try await eventually("one of tenant B's replicas bound, the other refused") {
                let b = [try await h.replica("tenant-b", "b1"), try await h.replica("tenant-b", "b2")]
                return b.filter { $0.binding != nil }.count == 1
                    && b.contains { $0.binding == nil && $0.status.message?.contains("0/1 nodes") == true }
            }
            // A few more passes change nothing: no GPU is ever given to two replicas.
            try await Task.sleep(for: .milliseconds(600))
            let all = try await h.store.list(Replica.self).items
            let held = all.filter(\.holdsCapacity).flatMap { replica in
                (replica.binding?.gpuIndices ?? []).map { "\(replica.binding?.node ?? "")/\($0)" }
            }
            #expect(held.sorted() == ["n1/0", "n1/1"], "\(all.map { ($0.metadata.name, $0.binding, $0.status.phase) })")
            let placed = try #require(all.first { $0.metadata.tenant == "tenant-b" && $0.binding != nil })
            #expect(placed.binding?.gpuIndices == [1])
            let a = try await h.replica("tenant-a", "crashy")
            #expect(a.binding?.gpuIndices == [0])
            #expect(a.status.phase == .failed)

            // Once A is gone, its GPU goes to the waiting replica.
            try await h.store.delete(Replica.self, tenant: "tenant-a", name: "crashy")
            try await eventually("tenant B's second replica bound to GPU 0") {
                let b = [try await h.replica("tenant-b", "b1"), try await h.replica("tenant-b", "b2")]
                return Set(b.compactMap { $0.binding?.gpuIndices.first }) == [0, 1]
            }
        }
    }
}
