import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct GPUFitTests {
    let fit = GPUFit()

    @Test func wholeGPUsChooseTheSmallestThatFit() {
        var node = Fixture.state(Fixture.node("n", gpus: 4))
        node.gpus = [
            GPUState(index: 0, uuid: "a", vramTotalGB: 141, vramAllocatedGB: 0, owner: nil, sharedServers: [], healthy: true),
            GPUState(index: 1, uuid: "b", vramTotalGB: 80, vramAllocatedGB: 0, owner: nil, sharedServers: [], healthy: true),
            GPUState(index: 2, uuid: "c", vramTotalGB: 24, vramAllocatedGB: 0, owner: nil, sharedServers: [], healthy: true),
            GPUState(index: 3, uuid: "d", vramTotalGB: 80, vramAllocatedGB: 0, owner: nil, sharedServers: [], healthy: true),
        ]
        #expect(fit.fit(Fixture.dedicated(gpus: 1, vramGB: 40), node: node).assignment?.gpuIndices == [1])
        #expect(fit.fit(Fixture.dedicated(gpus: 2, vramGB: 40), node: node).assignment?.gpuIndices == [1, 3])
        #expect(fit.fit(Fixture.dedicated(gpus: 3, vramGB: 40), node: node).assignment?.gpuIndices == [1, 3, 0])
        #expect(fit.fit(Fixture.dedicated(gpus: 4, vramGB: 40), node: node) == .refused(GPUFit.insufficientVRAM))
    }

    @Test func countAndVRAMAreToldApart() {
        let snapshot = Fixture.snapshot(
            [Fixture.node("n", gpus: 2)],
            replicas: [Fixture.replica("x", binding: Binding(node: "n", gpuIndices: [0]), phase: .running)])
        let node = snapshot.nodes[0]
        #expect(fit.fit(Fixture.dedicated(gpus: 2, vramGB: 80), node: node) == .refused(GPUFit.insufficientGPUs))
        #expect(fit.fit(Fixture.dedicated(gpus: 1, vramGB: 96), node: node) == .refused(GPUFit.insufficientVRAM))
        #expect(fit.fit(Fixture.dedicated(gpus: 1, vramGB: 80), node: node).assignment?.gpuIndices == [1])
    }

    @Test func largeSlotNeedsA96GBGPU() {
        let large = PlacementRequest(name: "r", tenant: "t", demand: .largeSlot(slug: "llama-3.3-70b", vramGB: 96))
        #expect(fit.fit(large, node: Fixture.state(Fixture.node("n", mode: "large", type: "GPU-H100"))) == .refused(GPUFit.insufficientVRAM))
        let slot = fit.fit(large, node: Fixture.state(Fixture.node("n", mode: "large", type: "GPU-RTXPRO6000")))
        #expect(slot.assignment?.kind == .largeSlot)
    }

    @Test func sharedPacksTheFullestGPUThatFits() {
        let snapshot = Fixture.snapshot(
            [Fixture.node("n", mode: "shared", type: "GPU-L40", gpus: 3)],
            servers: [
                Fixture.server("a", slug: "qwen-2.5-14b", node: "n", gpu: 0, vramGB: 36),
                Fixture.server("b", slug: "qwen-2.5-coder-7b", node: "n", gpu: 1, vramGB: 18),
            ])
        let node = snapshot.nodes[0]
        let need20 = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "llama-3.1-8b", vramGB: 20))
        // GPU 0 has 9 GB free, GPU 1 has 27, GPU 2 has 45: GPU 1 is the fullest that fits.
        #expect(fit.fit(need20, node: node).assignment?.gpuIndices == [1])
        #expect(fit.fit(need20, node: node).assignment?.sharedAllocatedAfterGB == 38)
        let need2 = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "nomic-embed", vramGB: 2))
        #expect(fit.fit(need2, node: node).assignment?.gpuIndices == [0])
        let need46 = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "x", vramGB: 46))
        #expect(fit.fit(need46, node: node) == .refused(GPUFit.insufficientVRAM))
    }

    @Test func attachNeedsRoomAndTheSameSlug() {
        let snapshot = Fixture.snapshot(
            [Fixture.node("n", mode: "shared", type: "GPU-L40", gpus: 1)],
            servers: [Fixture.server("s", slug: "llama-3.1-8b", node: "n", gpu: 0, vramGB: 20, attached: ["a", "b"])])
        let request = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "llama-3.1-8b", vramGB: 20))
        let other = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "phi-3.5-mini", vramGB: 10))
        let server = snapshot.modelServers[0]
        #expect(fit.attach(request, server: server, serverID: 0, node: snapshot.nodes[0], maxAttachments: 3)?.kind == .attach)
        #expect(fit.attach(request, server: server, serverID: 0, node: snapshot.nodes[0], maxAttachments: 2) == nil)
        #expect(fit.attach(other, server: server, serverID: 0, node: snapshot.nodes[0], maxAttachments: 3) == nil)
    }
}

extension GPUFit.Outcome {
    var assignment: Assignment? {
        if case .fits(let assignment) = self { return assignment }
        return nil
    }
}
