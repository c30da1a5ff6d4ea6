import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct OwnerSpreadScoreTests {
    @Test func nodesWithFewerOfTheOwnersReplicasScoreHigher() {
        let bound = (0..<2).map {
            Fixture.replica("web-\($0)", owner: "web", binding: Binding(node: "a", gpuIndices: [$0]), phase: .running)
        }
        let snapshot = Fixture.snapshot([Fixture.node("a"), Fixture.node("b")], replicas: bound)
        let c = scoringContext(Fixture.request(Fixture.replica("web-2", owner: "web")), snapshot)
        let a = OwnerSpreadScore().score(scoredAssignment(.wholeGPUs, vram: 80), node: snapshot.nodes[0], nodePosition: 0, context: c)
        let b = OwnerSpreadScore().score(scoredAssignment(.wholeGPUs, vram: 80), node: snapshot.nodes[1], nodePosition: 1, context: c)
        #expect(a == 33)
        #expect(b == 100)
    }
}
