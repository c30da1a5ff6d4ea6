import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// The command line a new model server gets depends on where the pipeline put it: a Mode 3
/// server's vLLM may use only its model's share of the GPU it is packed on.
@Suite struct ServingPlacementTests {
    let pipeline = Fixture.pipeline

    @Test func aNewMode3ServerGetsItsShareOfTheGPUItLandsOn() throws {
        // GPU-H100: 81,559 MiB, 80 GB; phi-3.5-mini needs 10 GB of it.
        var snapshot = Fixture.snapshot([Fixture.node("s1", mode: "shared", type: "GPU-H100", gpus: 1)])
        let placement = try #require(
            pipeline.place(Fixture.request(Fixture.shared("chat", slug: "phi-3.5-mini")), in: &snapshot).placement)
        let plan = try #require(placement.newModelServer)
        #expect(plan.gpuVRAMGB == 80)
        let serving = try #require(plan.modelServer(catalog: Fixture.catalog).spec.serving)
        #expect(serving.image == VLLM.image)
        let args = serving.args
        let share = try #require(args.firstIndex(of: "--gpu-memory-utilization"))
        #expect(args[share + 1] == "0.12")
        let served = try #require(args.firstIndex(of: "--served-model-name"))
        #expect(args[served + 1] == "phi-3.5-mini")
        #expect(serving.shmMiB == VLLM.shmMiBPerGPU)
    }

    @Test func aNewMode2SlotHasItsGPUWhole() throws {
        var snapshot = Fixture.snapshot([Fixture.node("l1", mode: "large", type: "GPU-RTXPRO6000", gpus: 1)])
        let replica = Fixture.replica("big", mode: .largePinned, slug: "llama-3.3-70b", gpus: 1, vramGB: 96)
        let placement = try #require(pipeline.place(Fixture.request(replica), in: &snapshot).placement)
        let serving = try #require(placement.newModelServer?.modelServer(catalog: Fixture.catalog).spec.serving)
        #expect(!serving.args.contains("--gpu-memory-utilization"))
        #expect(serving.args.contains("--tensor-parallel-size") && serving.args.suffix(2) == ["--quantization", "fp8"])
    }
}
