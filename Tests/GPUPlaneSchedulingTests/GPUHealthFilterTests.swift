import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct GPUHealthFilterTests {
    let filter = GPUHealthFilter()

    @Test func passesHealthyNodes() {
        #expect(filter.filter(Fixture.dedicated(gpus: 8), node: Fixture.state(Fixture.node("n"))) == nil)
    }

    @Test func refusesWhenTooFewGPUsAreHealthy() {
        let node = Fixture.state(Fixture.node("n", gpus: 2, unhealthy: [1]))
        #expect(filter.filter(Fixture.dedicated(gpus: 1), node: node) == nil)
        #expect(filter.filter(Fixture.dedicated(gpus: 2), node: node) == GPUHealthFilter.unhealthy)
    }

    @Test func refusesNodesWithNoHealthyGPU() {
        let node = Fixture.state(Fixture.node("n", mode: "shared", gpus: 1, unhealthy: [0]))
        let shared = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "x", vramGB: 2))
        #expect(filter.filter(shared, node: node) == GPUHealthFilter.unhealthy)
    }

    @Test func unhealthyGPUsAreNeverChosen() {
        let node = Fixture.state(Fixture.node("n", gpus: 2, unhealthy: [0]))
        guard case .fits(let assignment) = GPUFit().fit(Fixture.dedicated(), node: node) else {
            Issue.record("one healthy GPU should fit")
            return
        }
        #expect(assignment.gpuIndices == [1])
    }
}
