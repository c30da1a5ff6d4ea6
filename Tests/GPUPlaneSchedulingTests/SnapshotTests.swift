import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct SnapshotTests {
    @Test func boundReplicasAndServersHoldCapacity() throws {
        let snapshot = Fixture.snapshot(
            [Fixture.node("d"), Fixture.node("s", mode: "shared", type: "GPU-L40", gpus: 1)],
            replicas: [
                Fixture.replica("m1", gpus: 2, binding: Binding(node: "d", gpuIndices: [3, 5]), phase: .running),
                Fixture.replica("gone", gpus: 1, binding: Binding(node: "d", gpuIndices: [0]), phase: .preempted),
                Fixture.shared("m3", binding: Binding(node: "s", gpuIndices: [0], modelServer: "llama")),
            ],
            servers: [Fixture.server("llama", slug: "llama-3.1-8b", node: "s", gpu: 0, vramGB: 20)])
        let d = try #require(snapshot.node(named: "d"))
        #expect(d.gpus[3].owner == "acme/m1" && d.gpus[5].owner == "acme/m1")
        #expect(d.gpus[0].owner == nil)
        #expect(d.freeWholeGPUs == 6)
        let s = try #require(snapshot.node(named: "s"))
        #expect(s.gpus[0].vramAllocatedGB == 20 && s.gpus[0].sharedServers == ["llama"])
        #expect(snapshot.modelServer(named: "llama")?.attached == ["acme/m3"])
        #expect(snapshot.wholeGPUsHeld(by: "acme") == 2)
    }

    /// Issue 12, item 4: a crashed pod waiting out its restart backoff is `failed`, and its
    /// node-agent starts it again on the same GPU, so the GPU is not free.
    @Test func failedReplicaInRestartBackoffHoldsItsGPU() throws {
        let crashed = Fixture.replica(
            "crashy", tenant: "tenant-a", gpus: 1, binding: Binding(node: "d", gpuIndices: [0]), phase: .failed)
        var snapshot = Fixture.snapshot([Fixture.node("d", gpus: 2)], replicas: [crashed])
        #expect(snapshot.holds(replica: "tenant-a/crashy"))
        #expect(snapshot.nodes[0].gpus[0].owner == "tenant-a/crashy")
        #expect(snapshot.wholeGPUsHeld(by: "tenant-a") == 1)
        let first = try #require(
            Fixture.pipeline.place(Fixture.request(Fixture.replica("b1", tenant: "tenant-b")), in: &snapshot).placement)
        #expect(first.binding.gpuIndices == [1])
        #expect(Fixture.pipeline.place(Fixture.request(Fixture.replica("b2", tenant: "tenant-b")), in: &snapshot).placement == nil)
    }

    /// Which phases hold the GPUs of a binding: decided in one place.
    @Test func phasesThatHoldCapacity() {
        let holding = ReplicaStatus.Phase.allCases.filter(\.holdsCapacity)
        #expect(holding == [.bound, .starting, .running, .failed])
        for phase in ReplicaStatus.Phase.allCases {
            let bound = Fixture.replica("r", binding: Binding(node: "d", gpuIndices: [0]), phase: phase)
            #expect(bound.holdsCapacity == phase.holdsCapacity)
            #expect(!Fixture.replica("r", phase: phase).holdsCapacity)
        }
        var evicted = Fixture.replica("r", binding: Binding(node: "d", gpuIndices: [0]), phase: .failed)
        evicted.status.observedBinding = evicted.binding
        evicted.unbind(message: "node d is not ready; rescheduling")
        #expect(evicted.binding == nil && evicted.status.phase == .pending && evicted.status.observedBinding == nil)
        #expect(!evicted.holdsCapacity)
    }

    @Test func releaseGivesCapacityBack() throws {
        var snapshot = Fixture.snapshot([Fixture.node("d", gpus: 2)])
        let placement = try #require(Fixture.pipeline.place(Fixture.dedicated("x", gpus: 2), in: &snapshot).placement)
        #expect(snapshot.nodes[0].freeWholeGPUs == 0)
        snapshot.release(replica: placement.request.key)
        #expect(snapshot.nodes[0].freeWholeGPUs == 2)
        #expect(snapshot.wholeGPUsHeld(by: "acme") == 0)
    }

    @Test func modeTwoServerWithoutItsReplicaStillHoldsTheGPU() {
        let server = ModelServer(
            metadata: .init(name: "big"), spec: .init(slug: "llama-3.3-70b", mode: .largePinned, vramGB: 96),
            binding: Binding(node: "l", gpuIndices: [0]))
        let snapshot = Fixture.snapshot([Fixture.node("l", mode: "large", type: "GPU-RTXPRO6000", gpus: 1)], servers: [server])
        #expect(snapshot.nodes[0].gpus[0].owner == "modelserver/big")
        #expect(snapshot.nodes[0].freeWholeGPUs == 0)
    }
}

/// The nodes' part of a snapshot kept from one pass to the next (``SnapshotNodeBase``).
@Suite struct SnapshotNodeBaseTests {
    /// Nodes as an informer lists them: with resourceVersions.
    static func fleet(_ count: Int) -> [Node] {
        (0..<count).map { i in
            var node = Fixture.node(
                String(format: "n%03d", i), mode: i % 5 == 0 ? "shared" : "dedicated",
                type: i % 3 == 0 ? "GPU-A100" : "GPU-H100", gpus: 8)
            node.metadata.resourceVersion = String(100 + i)
            return node
        }
    }

    @Test func aReusedBasePlacesExactlyAsAFreshOne() throws {
        let nodes = Self.fleet(40)
        let held = (0..<30).map { i in
            Fixture.replica("held\(i)", gpus: 1, binding: Binding(node: String(format: "n%03d", i + 1), gpuIndices: [i % 8]), phase: .running)
        }
        // The previous pass: other replicas held elsewhere, and placements committed to it.
        var previous = Fixture.snapshot(nodes, replicas: [Fixture.replica("old", gpus: 4, binding: Binding(node: "n002", gpuIndices: [0, 1, 2, 3]), phase: .running)])
        _ = Fixture.pipeline.place(Fixture.dedicated("placed-last-pass", gpus: 2), in: &previous)

        var fresh = Fixture.snapshot(nodes, replicas: held)
        var reused = ClusterSnapshot(nodes: nodes, replicas: held, modelServers: [], tenants: [], seed: 1, reusing: previous.nodeBase)
        // Nothing held in the previous pass's snapshot shows through the reused base.
        #expect(reused.node(named: "n002")?.gpus.map(\.owner) == fresh.node(named: "n002")?.gpus.map(\.owner))
        #expect(reused.nodes.map(\.allocated) == fresh.nodes.map(\.allocated))
        for i in 0..<20 {
            let request = Fixture.dedicated("new\(i)", gpus: 1 + i % 3)
            let a = Fixture.pipeline.place(request, in: &fresh).placement?.binding
            let b = Fixture.pipeline.place(request, in: &reused).placement?.binding
            #expect(a == b, "placement \(i) differs")
        }
    }

    @Test func orderIsByKeyThenGivenPosition() {
        #expect(ClusterSnapshot.order(["b", "a", "b", "a"], by: { $0 }) == [1, 3, 0, 2])
        #expect(ClusterSnapshot.order(["a", "a", "c"], by: { $0 }) == [0, 1, 2])
        #expect(ClusterSnapshot.order([String](), by: { $0 }).isEmpty)
    }

    @Test func aChangedNodeIsNotReused() {
        let nodes = Self.fleet(6)
        let base = Fixture.snapshot(nodes).nodeBase
        #expect(base.matches(nodes, seed: 1))
        #expect(!base.matches(nodes, seed: 2))
        var changed = nodes
        changed[3].spec.unschedulable = true
        changed[3].metadata.resourceVersion = "999"
        #expect(!base.matches(changed, seed: 1))
        let snapshot = ClusterSnapshot(nodes: changed, replicas: [], modelServers: [], tenants: [], seed: 1, reusing: base)
        #expect(snapshot.node(named: "n003")?.cordoned == true)
        #expect(!base.matches(Array(nodes.dropLast()), seed: 1))
        // Nodes made by hand (no resourceVersion) are never taken for unchanged.
        let unversioned = nodes.map { node -> Node in
            var node = node
            node.metadata.resourceVersion = ""
            return node
        }
        #expect(!Fixture.snapshot(unversioned).nodeBase.matches(unversioned, seed: 1))
    }
}
