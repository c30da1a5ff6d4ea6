import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct BinPackingScoreTests {
    @Test func fullerSharedGPUsScoreHigher() {
        let snapshot = Fixture.snapshot([Fixture.node("n", mode: "shared", type: "GPU-L40")])
        let c = scoringContext(PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "x", vramGB: 10)), snapshot)
        let node = snapshot.nodes[0]
        let full = scoredAssignment(.newSharedServer, vram: 48, allocatedAfter: 46)
        let empty = scoredAssignment(.newSharedServer, vram: 48, allocatedAfter: 10)
        #expect(BinPackingScore().score(full, node: node, nodePosition: 0, context: c) == 95)
        #expect(BinPackingScore().score(empty, node: node, nodePosition: 0, context: c) == 20)
    }

    @Test func fullerNodesScoreHigherForWholeGPUs() {
        let snapshot = Fixture.snapshot([Fixture.node("n", gpus: 8)])
        let c = scoringContext(Fixture.dedicated(), snapshot)
        let node = snapshot.nodes[0]
        #expect(BinPackingScore().score(scoredAssignment(.wholeGPUs, vram: 80, freeAfter: 0), node: node, nodePosition: 0, context: c) == 100)
        #expect(BinPackingScore().score(scoredAssignment(.wholeGPUs, vram: 80, freeAfter: 7), node: node, nodePosition: 0, context: c) == 12)
    }
}
