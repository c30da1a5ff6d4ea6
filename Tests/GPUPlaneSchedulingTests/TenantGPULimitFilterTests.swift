import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct TenantGPULimitFilterTests {
    let filter = TenantGPULimitFilter()

    func held(_ gpus: Int, tenant: String = "acme") -> Replica {
        Fixture.replica(
            "held", tenant: tenant, gpus: gpus,
            binding: Binding(node: "n", gpuIndices: Array(0..<gpus)), phase: .running)
    }

    @Test func defaultLimitIsFourWholeGPUs() {
        let snapshot = Fixture.snapshot([Fixture.node("n")], replicas: [held(3)])
        #expect(snapshot.gpuLimit(of: "acme") == 4)
        #expect(filter.filter(Fixture.dedicated(gpus: 1), in: snapshot) == nil)
        let refusal = filter.filter(Fixture.dedicated(gpus: 2), in: snapshot)
        #expect(refusal?.reason == TenantGPULimitFilter.limitReached)
        #expect(refusal?.detail == "acme holds 3 of 4 whole GPUs, 2 more wanted")
    }

    @Test func tenantsOwnLimit() {
        let snapshot = Fixture.snapshot([Fixture.node("n")], replicas: [held(3)], tenants: [Fixture.tenant("acme", limit: 8)])
        #expect(filter.filter(Fixture.dedicated(gpus: 5), in: snapshot) == nil)
        #expect(filter.filter(Fixture.dedicated(gpus: 6), in: snapshot) != nil)
    }

    @Test func modeThreeHoldsNoWholeGPU() {
        let snapshot = Fixture.snapshot([Fixture.node("n")], replicas: [held(4)])
        let shared = PlacementRequest(name: "r", tenant: "acme", demand: .shared(slug: "x", vramGB: 2))
        #expect(filter.filter(shared, in: snapshot) == nil)
        let large = PlacementRequest(name: "r", tenant: "acme", demand: .largeSlot(slug: "x", vramGB: 96))
        #expect(filter.filter(large, in: snapshot)?.reason == TenantGPULimitFilter.limitReached)
    }

    @Test func otherTenantsDontCount() {
        let snapshot = Fixture.snapshot([Fixture.node("n")], replicas: [held(4, tenant: "other")])
        #expect(filter.filter(Fixture.dedicated(gpus: 4), in: snapshot) == nil)
    }
}
