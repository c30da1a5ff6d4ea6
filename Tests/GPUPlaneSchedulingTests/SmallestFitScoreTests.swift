import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct SmallestFitScoreTests {
    @Test func smallerGPUsScoreHigher() {
        let snapshot = Fixture.snapshot([Fixture.node("n")])
        let c = scoringContext(Fixture.dedicated(vramGB: 20), snapshot)
        let node = snapshot.nodes[0]
        #expect(SmallestFitScore().score(scoredAssignment(.wholeGPUs, vram: 24), node: node, nodePosition: 0, context: c) == 83)
        #expect(SmallestFitScore().score(scoredAssignment(.wholeGPUs, vram: 80), node: node, nodePosition: 0, context: c) == 25)
    }

    @Test func attachingCostsNoNewVRAM() {
        let snapshot = Fixture.snapshot([Fixture.node("n")])
        let c = scoringContext(Fixture.dedicated(vramGB: 20), snapshot)
        #expect(SmallestFitScore().score(scoredAssignment(.attach, vram: 80), node: snapshot.nodes[0], nodePosition: 0, context: c) == 100)
    }
}
