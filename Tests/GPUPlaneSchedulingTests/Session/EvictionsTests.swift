import Foundation
import GPUPlaneCore
@testable import GPUPlaneScheduling
import Testing

/// Step 2 on plain lists: what may no longer run where it is bound goes back to pending.
@Suite struct EvictionsTests {
    static func unbound(_ units: [WriteUnit]) -> [Replica] {
        units.flatMap(\.ops).compactMap { op -> Replica? in
            guard case .update(let object) = op, let replica = object as? Replica, replica.binding == nil else { return nil }
            return replica
        }
    }

    @Test func replicasOnANodeNotReadyGoBackToPending() {
        let bound = Fixture.replica("r1", binding: Binding(node: "n1", gpuIndices: [0]), phase: .running)
        let elsewhere = Fixture.replica("r2", binding: Binding(node: "n2", gpuIndices: [0]), phase: .running)
        let step = Evictions()
        let units = step.writes(PassInput(
            nodes: [Fixture.node("n1", ready: false), Fixture.node("n2")], replicas: [bound, elsewhere]))
        let evicted = Self.unbound(units)
        #expect(evicted.map(\.metadata.name) == ["r1"])
        #expect(evicted.first?.status.phase == .pending)
        #expect(evicted.first?.status.message?.contains("node n1 not ready") == true)
        #expect(units.flatMap(\.events).map(\.reason) == [EventRecorder.Reason.rescheduled])
        #expect(step.evicted == 1)
    }

    @Test func anUnhealthyGPUIsReportedOnceAndClearsItsServerAndReplicas() {
        let node = Fixture.node("n1", unhealthy: [1])
        let server = Fixture.server("ms-1", slug: "llama-3.1-8b", node: "n1", gpu: 1, vramGB: 20)
        let onServer = Fixture.shared("s1", binding: Binding(node: "n1", gpuIndices: [1], modelServer: "ms-1"))
        let healthy = Fixture.replica("r0", binding: Binding(node: "n1", gpuIndices: [0]), phase: .running)
        let input = PassInput(nodes: [node], replicas: [onServer, healthy], servers: [server])
        let step = Evictions()

        let units = step.writes(input)
        #expect(units.filter(\.isNotesOnly).flatMap(\.notes).map(\.reason) == [EventRecorder.Reason.gpuUnhealthy])
        #expect(units.flatMap(\.ops).contains { if case .delete(let o) = $0 { o.metadata.name == "ms-1" } else { false } })
        #expect(Self.unbound(units).map(\.metadata.name) == ["s1"])

        // Reported once while it stays unhealthy, again once it was healthy in between.
        #expect(step.writes(input).flatMap(\.notes).isEmpty)
        _ = step.writes(PassInput(nodes: [Fixture.node("n1")]))
        #expect(step.writes(input).flatMap(\.notes).count == 1)
    }

    /// A status stored with two reports of one GPU (the api-server now refuses that, but older
    /// ones may be in etcd): in either order, evictions and the placement snapshot read the GPU
    /// alike, unhealthy, through `NodeStatus.unhealthyGPUs`.
    @Test(arguments: [true, false]) func twoReportsOfOneGPUReadAlikeByEvictionsAndPlacement(unhealthyFirst: Bool) {
        var node = Fixture.node("n1", gpus: 2)
        let healthy = GPUHealth(uuid: "GPU-n1-1", healthy: true)
        let unhealthy = GPUHealth(uuid: "GPU-n1-1", healthy: false, reason: "Xid79")
        node.status.gpuHealth = [GPUHealth(uuid: "GPU-n1-0", healthy: true)] + (unhealthyFirst ? [unhealthy, healthy] : [healthy, unhealthy])
        let replica = Fixture.replica("r1", binding: Binding(node: "n1", gpuIndices: [1]), phase: .running)

        let evicted = Self.unbound(Evictions().writes(PassInput(nodes: [node], replicas: [replica])))
        #expect(evicted.map(\.metadata.name) == ["r1"])
        #expect(evicted.first?.status.message?.contains("GPU 1 on node n1 is unhealthy (Xid79)") == true)
        #expect(Fixture.state(node).gpus.map(\.healthy) == [true, false])
    }
}
