import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct NodeReadyFilterTests {
    @Test func passesReadyNodes() {
        #expect(NodeReadyFilter().filter(Fixture.dedicated(), node: Fixture.state(Fixture.node("n"))) == nil)
    }

    @Test func refusesNotReadyNodes() {
        let node = Fixture.state(Fixture.node("n", ready: false))
        #expect(NodeReadyFilter().filter(Fixture.dedicated(), node: node) == NodeReadyFilter.notReady)
    }

    @Test func refusesNodesWithoutAReadyCondition() {
        var raw = Fixture.node("n")
        raw.status.conditions = []
        #expect(NodeReadyFilter().filter(Fixture.dedicated(), node: Fixture.state(raw)) == NodeReadyFilter.notReady)
    }
}
