import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct SnapshotTests {
    @Test func boundReplicasAndServersHoldCapacity() throws {
        let snapshot = Fixture.snapshot(
            [Fixture.node("d"), Fixture.node("s", mode: "shared", type: "GPU-L40", gpus: 1)],
            replicas: [
                Fixture.replica("m1", gpus: 2, binding: Binding(node: "d", gpuIndices: [3, 5]), phase: .running),
                Fixture.replica("gone", gpus: 1, binding: Binding(node: "d", gpuIndices: [0]), phase: .failed),
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
