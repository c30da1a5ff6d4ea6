import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct PreemptionTests {
    let pipeline = Fixture.pipeline

    func running(_ name: String, tenant: String? = nil, _ priority: GPUPriority, node: String, gpus: [Int]) -> Replica {
        Fixture.replica(
            name, tenant: tenant ?? name, gpus: gpus.count, priority: priority,
            binding: Binding(node: node, gpuIndices: gpus), phase: .running)
    }

    @Test func evictsTheFewestOfALowerTier() throws {
        let snapshot = Fixture.snapshot(
            [Fixture.node("a", gpus: 2), Fixture.node("b", gpus: 2)],
            replicas: [
                running("a0", .batch, node: "a", gpus: [0]), running("a1", .batch, node: "a", gpus: [1]),
                running("b01", .training, node: "b", gpus: [0, 1]),
            ])
        let request = Fixture.request(Fixture.replica("urgent", gpus: 2, priority: .interactive))
        #expect(pipeline.evaluate(request, in: snapshot).refusal != nil)
        let plan = try #require(pipeline.preemption(for: request, in: snapshot))
        // One training replica beats two batch ones: fewest victims first.
        #expect(plan.node == "b")
        #expect(plan.victims.map(\.name) == ["b01"])
        #expect(plan.victims.first?.gpuIndices == [0, 1])
    }

    @Test func neverEvictsAnEqualOrHigherTier() {
        let snapshot = Fixture.snapshot(
            [Fixture.node("a", gpus: 2)],
            replicas: [running("x", .inference, node: "a", gpus: [0]), running("y", .interactive, node: "a", gpus: [1])])
        let request = Fixture.request(Fixture.replica("new", priority: .inference))
        #expect(pipeline.preemption(for: request, in: snapshot) == nil)
        let batch = Fixture.request(Fixture.replica("low", priority: .batch))
        #expect(pipeline.preemption(for: batch, in: snapshot) == nil)
    }

    @Test func tieBrokenByLowestTierThenLeastVRAM() throws {
        let snapshot = Fixture.snapshot(
            [Fixture.node("a", gpus: 1), Fixture.node("b", gpus: 1), Fixture.node("c", type: "GPU-H200", gpus: 1)],
            replicas: [
                running("training", .training, node: "a", gpus: [0]),
                running("batch-h100", .batch, node: "b", gpus: [0]),
                running("batch-h200", .batch, node: "c", gpus: [0]),
            ])
        let request = Fixture.request(Fixture.replica("new", priority: .interactive))
        let plan = try #require(pipeline.preemption(for: request, in: snapshot))
        // One victim everywhere; batch beats training; 80 GB evicted beats 141 GB.
        #expect(plan.victims.map(\.name) == ["batch-h100"])
        #expect(plan.node == "b")
    }

    @Test func onlyAsManyAsNeeded() throws {
        let snapshot = Fixture.snapshot(
            [Fixture.node("a", gpus: 4)],
            replicas: (0..<4).map { running("b\($0)", .batch, node: "a", gpus: [$0]) })
        let request = Fixture.request(Fixture.replica("new", gpus: 2, priority: .training))
        let plan = try #require(pipeline.preemption(for: request, in: snapshot))
        #expect(plan.victims.count == 2)
        #expect(plan.victims.allSatisfy { $0.priority == .batch })
        #expect(plan.preemptorMessage.hasPrefix("preempting 2 on a: "))
        #expect(PreemptionPlan.preemptedReason == "Preempted")
    }

    @Test func sharedServersWhoseTenantsAreAllLower() throws {
        let binding = Binding(node: "s", gpuIndices: [0], modelServer: "coder")
        let snapshot = Fixture.snapshot(
            [Fixture.node("s", mode: "shared", type: "GPU-RTX4090", gpus: 1)],
            replicas: [Fixture.shared("t1", slug: "qwen-2.5-coder-7b", priority: .batch, binding: binding),
                       Fixture.shared("t2", slug: "qwen-2.5-coder-7b", tenant: "beta", priority: .training, binding: binding)],
            servers: [Fixture.server("coder", slug: "qwen-2.5-coder-7b", node: "s", gpu: 0, vramGB: 18)])
        let request = Fixture.request(Fixture.shared("chat", slug: "llama-3.1-8b", priority: .interactive))
        let plan = try #require(pipeline.preemption(for: request, in: snapshot))
        #expect(plan.modelServersToStop == ["coder"])
        #expect(Set(plan.victims.map(\.key)) == ["acme/t1", "beta/t2"])
        #expect(plan.victims.first?.priority == .batch)
        // A tenant of equal tier keeps the server.
        let equal = Fixture.request(Fixture.shared("chat", slug: "llama-3.1-8b", priority: .training))
        #expect(pipeline.preemption(for: equal, in: snapshot) == nil)
    }

    @Test func batchCarriesPreemptionOut() throws {
        var snapshot = Fixture.snapshot(
            [Fixture.node("a", gpus: 1)], replicas: [running("old", .batch, node: "a", gpus: [0])])
        let result = pipeline.placeBatch([Fixture.replica("new", priority: .interactive)], in: &snapshot, preempt: true)
        let plan = try #require(result.preemptions.first)
        #expect(plan.victims.map(\.name) == ["old"])
        #expect(result.bindings.isEmpty)
        #expect(snapshot.node(named: "a")?.gpus[0].owner == "acme/new")
        #expect(!snapshot.holds(replica: "old/old"))
    }
}
