import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct GPUModeFilterTests {
    let filter = GPUModeFilter()

    @Test(arguments: [
        (GPUMode.dedicated, "dedicated"), (.largePinned, "large"), (.sharedPinned, "shared"),
    ])
    func labelOfEachMode(mode: GPUMode, label: String) {
        let request: PlacementRequest
        switch mode {
        case .dedicated: request = Fixture.dedicated()
        case .largePinned:
            request = PlacementRequest(name: "r", tenant: "t", demand: .largeSlot(slug: "llama-3.3-70b", vramGB: 96))
        case .sharedPinned:
            request = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "llama-3.1-8b", vramGB: 20))
        }
        #expect(request.mode == mode)
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", mode: label))) == nil)
    }

    @Test func namesWhatTheNodeServesInstead() {
        let request = Fixture.dedicated()
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", mode: "shared"))) == GPUModeFilter.modeIsShared)
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", mode: "large"))) == GPUModeFilter.modeIsLarge)
        let shared = PlacementRequest(name: "r", tenant: "t", demand: .shared(slug: "x", vramGB: 2))
        #expect(filter.filter(shared, node: Fixture.state(Fixture.node("n", mode: "dedicated"))) == GPUModeFilter.modeIsDedicated)
    }

    @Test func missingAndUnknownLabels() {
        #expect(filter.filter(Fixture.dedicated(), node: Fixture.state(Fixture.node("n", mode: nil))) == GPUModeFilter.noModeLabel)
        #expect(filter.filter(Fixture.dedicated(), node: Fixture.state(Fixture.node("n", mode: "turbo"))) == GPUModeFilter.unknownMode)
    }

    @Test func deploymentsNeedDedicatedNodes() {
        let replica = Fixture.replica("d-0", ownerKind: .deployment, mode: nil, gpus: 2, vramGB: 80)
        let request = Fixture.request(replica)
        #expect(request.mode == .dedicated)
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", mode: "dedicated"))) == nil)
        #expect(filter.filter(request, node: Fixture.state(Fixture.node("n", mode: "large"))) == GPUModeFilter.modeIsLarge)
    }
}
