import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct MachineTypeOrderScoreTests {
    @Test func earlierTypesScoreHigher() {
        let snapshot = Fixture.snapshot([
            Fixture.node("a", type: "GPU-H100"), Fixture.node("b", type: "GPU-H200"), Fixture.node("c", type: "GPU-L40"),
        ])
        let c = scoringContext(Fixture.dedicated(vramGB: 40, types: ["GPU-H200", "GPU-H100", "GPU-L40"]), snapshot)
        let scores = snapshot.nodes.enumerated().map {
            MachineTypeOrderScore().score(scoredAssignment(.wholeGPUs, vram: 80), node: $1, nodePosition: $0, context: c)
        }
        #expect(scores == [66, 100, 33])
    }

    @Test func neutralWithoutAList() {
        let snapshot = Fixture.snapshot([Fixture.node("a")])
        let c = scoringContext(Fixture.dedicated(), snapshot)
        #expect(MachineTypeOrderScore().score(scoredAssignment(.wholeGPUs, vram: 80), node: snapshot.nodes[0], nodePosition: 0, context: c) == 100)
    }
}
