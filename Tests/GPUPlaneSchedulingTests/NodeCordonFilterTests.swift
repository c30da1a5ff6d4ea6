import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct NodeCordonFilterTests {
    @Test func passesSchedulableNodes() {
        #expect(NodeCordonFilter().filter(Fixture.dedicated(), node: Fixture.state(Fixture.node("n"))) == nil)
    }

    @Test func refusesCordonedNodes() {
        let node = Fixture.state(Fixture.node("n", cordoned: true))
        #expect(NodeCordonFilter().filter(Fixture.dedicated(), node: node) == NodeCordonFilter.cordoned)
    }
}
