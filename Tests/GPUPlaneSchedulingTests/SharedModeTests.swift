import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct SharedModeTests {
    let pipeline = Fixture.pipeline

    @Test func attachesToARunningServerOfTheSlug() throws {
        var snapshot = Fixture.snapshot(
            [Fixture.node("s1", mode: "shared", type: "GPU-L40", gpus: 2), Fixture.node("s2", mode: "shared", type: "GPU-RTX4090", gpus: 1)],
            replicas: [Fixture.shared("first", tenant: "beta", binding: Binding(node: "s1", gpuIndices: [1], modelServer: "llama"))],
            servers: [Fixture.server("llama", slug: "llama-3.1-8b", node: "s1", gpu: 1, vramGB: 20)])
        let placement = try #require(pipeline.place(Fixture.request(Fixture.shared("second")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .attach)
        #expect(placement.binding == Binding(node: "s1", gpuIndices: [1], modelServer: "llama"))
        #expect(placement.newModelServer == nil)
        #expect(snapshot.modelServer(named: "llama")?.attachments == 2)
        #expect(snapshot.wholeGPUsHeld(by: "acme") == 0)
    }

    @Test func aFullServerMeansANewOnePackedByVRAM() throws {
        var snapshot = Fixture.snapshot(
            [Fixture.node("s1", mode: "shared", type: "GPU-L40", gpus: 2)],
            servers: [Fixture.server("llama", slug: "llama-3.1-8b", node: "s1", gpu: 1, vramGB: 20, attached: ["a", "b"])],
            maxAttachments: 2)
        let placement = try #require(pipeline.place(Fixture.request(Fixture.shared("third")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .newSharedServer)
        // GPU 1 has 28 GB free and is fuller than the empty GPU 0: the new server packs there.
        #expect(placement.binding.gpuIndices == [1])
        let server = try #require(placement.newModelServer)
        #expect(server.slug == "llama-3.1-8b" && server.vramGB == 20 && server.mode == .sharedPinned)
        #expect(server.name == "llama-3.1-8b-s1-gpu1")
        #expect(snapshot.nodes[0].gpus[1].vramAllocatedGB == 40)
        // The new server takes the next tenant.
        let next = try #require(pipeline.place(Fixture.request(Fixture.shared("fourth")), in: &snapshot).placement)
        #expect(next.assignment.kind == .attach && next.binding.modelServer == server.name)
    }

    @Test func autoResolvesAndPacks() throws {
        var snapshot = Fixture.snapshot([Fixture.node("s", mode: "shared", type: "GPU-RTX4090", gpus: 1)])
        let auto = try #require(Fixture.catalog.autoModel)
        let placement = try #require(pipeline.place(Fixture.request(Fixture.shared("free", slug: "auto")), in: &snapshot).placement)
        #expect(placement.newModelServer?.slug == auto.slug)
    }

    @Test func sharedGPUsNeverOverflow() {
        var snapshot = Fixture.snapshot([Fixture.node("s", mode: "shared", type: "GPU-RTX4090", gpus: 1)], maxAttachments: 1)
        var bound = 0
        for i in 0..<5 {
            if pipeline.place(Fixture.request(Fixture.shared("r\(i)", slug: "qwen-2.5-coder-7b")), in: &snapshot).placement != nil {
                bound += 1
            }
        }
        // 18 GB servers, one tenant each, on a 24 GB GPU: one fits.
        #expect(bound == 1)
        #expect(snapshot.nodes[0].gpus[0].vramAllocatedGB == 18)
        let refusal = pipeline.evaluate(Fixture.request(Fixture.shared("x", slug: "qwen-2.5-coder-7b")), in: snapshot).refusal
        #expect(refusal?.summary == "0/1 nodes: 1 insufficient VRAM")
    }
}
