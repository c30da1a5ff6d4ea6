import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct PlacementRequestTests {
    @Test func modeOneIsWholeGPUs() throws {
        let request = try Fixture.pipeline.request(for: Fixture.replica("r", gpus: 2, vramGB: 96, priority: .training))
        #expect(request.demand == .wholeGPUs(count: 2, vramGB: 96))
        #expect(request.wholeGPUs == 2)
        #expect(request.priority == .training)
    }

    @Test func modeComesFromTheCatalog() throws {
        // The replica says shared, the catalog says llama-3.3-70b is Mode 2: the catalog wins.
        let replica = Fixture.replica("r", mode: .sharedPinned, slug: "llama-3.3-70b", gpus: 0)
        let request = try Fixture.pipeline.request(for: replica)
        #expect(request.demand == .largeSlot(slug: "llama-3.3-70b", vramGB: 96))
        #expect(request.mode == .largePinned)
        #expect(request.wholeGPUs == 1)
    }

    @Test func autoResolvesToTheCatalogsAutoModel() throws {
        let request = try Fixture.pipeline.request(for: Fixture.shared("r", slug: "auto"))
        let auto = try #require(Fixture.catalog.autoModel)
        #expect(request.demand == .shared(slug: auto.slug, vramGB: auto.vramGB))
        #expect(request.wholeGPUs == 0)
        // A small chat model, never the (smaller) embedding model.
        #expect(request.slug == "phi-3.5-mini")
    }

    @Test func deploymentsAreDedicated() throws {
        let replica = Fixture.replica("d-0", ownerKind: .deployment, mode: nil, gpus: 2, vramGB: 80, machineTypes: ["A100-80GB"])
        let request = try Fixture.pipeline.request(for: replica)
        #expect(request.mode == .dedicated)
        #expect(request.machineTypes == ["GPU-A100-80GB"])
        #expect(request.ownerKey == "acme/deployments/d-0")
    }

    @Test func unresolvableRequestsThrowTypedErrors() throws {
        #expect(throws: PlacementError.self) { try Fixture.pipeline.request(for: Fixture.shared("r", slug: "gpt-9")) }
        do {
            _ = try Fixture.pipeline.request(for: Fixture.shared("r", slug: "gpt-9"))
        } catch {
            #expect(error.code == .unknownModel)
        }
        // A replica without a GPU mode is a CPU pod (XS when its spec carries no size).
        let cpu = try Fixture.pipeline.request(for: Fixture.replica("cpu", mode: nil, gpus: 0))
        #expect(cpu.demand == .cpu(cpuMilli: 500, memoryMB: 512))
        #expect(cpu.mode == nil)
        do {
            _ = try Fixture.pipeline.request(for: Fixture.replica("zero", gpus: 0))
        } catch {
            #expect(error.code == .invalidRequest)
        }
    }
}
