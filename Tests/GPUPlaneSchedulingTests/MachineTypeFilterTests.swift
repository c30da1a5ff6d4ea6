import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct MachineTypeFilterTests {
    let filter = MachineTypeFilter()

    @Test func anyTypeWhenNoneIsGiven() {
        #expect(filter.filter(Fixture.dedicated(), node: Fixture.state(Fixture.node("n", type: "GPU-L40"))) == nil)
    }

    @Test func onlyListedTypes() {
        let request = Fixture.dedicated(types: ["GPU-H100", "GPU-H200"])
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", type: "GPU-H200"))) == nil)
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", type: "GPU-L40"))) == MachineTypeFilter.notAllowed)
    }

    @Test func aliasesResolveToCanonicalNames() {
        let replica = Fixture.replica("d", ownerKind: .deployment, mode: nil, machineTypes: ["H100-80GB"])
        let request = Fixture.request(replica)
        #expect(request.machineTypes == ["GPU-H100"])
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", type: "GPU-H100"))) == nil)
    }
}
