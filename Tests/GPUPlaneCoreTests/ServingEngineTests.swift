import Foundation
import Testing
@testable import GPUPlaneCore

/// The engines the catalog names and the command lines written for them
/// (VLLMArgumentTests, in GPUPlaneSchedulingTests, checks every vLLM line against vLLM itself).
@Suite struct ServingEngineTests {
    let catalog: Catalog
    init() throws { catalog = try Catalog.standard() }

    /// No placeholder image: every catalog model names a real serving image, vLLM's pinned one.
    @Test func everyCatalogModelIsServedByThePinnedVLLMImage() {
        for model in catalog.models {
            #expect(model.engine == .vllm, "\(model.slug)")
            #expect(model.image == "docker.io/vllm/vllm-openai:v\(VLLM.version)", "\(model.slug)")
            #expect(!model.weights.isEmpty && !model.args.contains("--model"), "\(model.slug)")
            #expect(model.maxBatchSize != nil, "\(model.slug)")
        }
    }

    @Test func aMode3ServerGetsItsShareOfTheGPUsMemory() throws {
        let phi = try #require(catalog.model("phi-3.5-mini"))
        let args = phi.servingArguments(ServingShape(gpus: 1, gpuVRAMGB: 48, sharesGPU: true))
        #expect(args == [
            "--model", "microsoft/Phi-3.5-mini-instruct", "--served-model-name", "phi-3.5-mini", "--host", "0.0.0.0",
            "--port", "8000", "--max-num-seqs", "32", "--max-model-len", "8192", "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.20",
        ])
        // 20 GB of an 80 GB GPU: a quarter.
        let llama = try #require(catalog.model("llama-3.1-8b"))
        let share = llama.servingArguments(ServingShape(gpus: 1, gpuVRAMGB: 80, sharesGPU: true))
        #expect(share.suffix(2) == ["--gpu-memory-utilization", "0.25"])
    }

    @Test func aMode2ServerHasItsGPUWholeAndKeepsItsOwnArguments() throws {
        let llama = try #require(catalog.model("llama-3.3-70b"))
        let args = llama.servingArguments(ServingShape(gpus: 1, gpuVRAMGB: 96))
        #expect(!args.contains("--gpu-memory-utilization"))
        #expect(args.suffix(2) == ["--quantization", "fp8"])
        #expect(args.starts(with: ["--model", "meta-llama/Llama-3.3-70B-Instruct", "--served-model-name", "llama-3.3-70b"]))
        #expect(ServingCommand.shmMiB(engine: .vllm, gpus: 1) == VLLM.shmMiBPerGPU)
    }

    @Test func tensorParallelismAndShmFollowTheGPUs() throws {
        let deployment = DeploymentSpec(
            modelName: "m", gpu: "GPU-H100", numGPUs: 4, maxBatchSize: 12,
            hf: HuggingFaceWeights(repo: "acme/m", revision: "v2"), settings: DeploymentSettings(minInstances: 0, maxInstances: 1))
        let args = ServingCommand.deploymentArguments(deployment, servedName: "acme/m", port: 8000)
        #expect(args == [
            "--model", "acme/m", "--served-model-name", "acme/m", "--host", "0.0.0.0", "--port", "8000",
            "--max-num-seqs", "12", "--tensor-parallel-size", "4", "--revision", "v2",
        ])
        #expect(ServingCommand.shmMiB(engine: .vllm, gpus: 4) == 4 * VLLM.shmMiBPerGPU)
        let replica = ReplicaPlanner(catalog: catalog).replica(
            for: Deployment(metadata: ObjectMeta(name: "m", tenant: "acme", uid: "u"), spec: deployment), index: 0)
        #expect(replica.spec.image == VLLM.image)
        #expect(replica.spec.command == ServingCommand.deploymentArguments(deployment, servedName: "acme/m", port: 8000))
        #expect(replica.spec.shmMiB == 4 * VLLM.shmMiBPerGPU)
    }

    @Test func memoryShareRoundsDownAndStaysWithinOne() {
        #expect(ServingCommand.memoryShare(vramGB: 10, gpuVRAMGB: 48) == "0.20")
        #expect(ServingCommand.memoryShare(vramGB: 2, gpuVRAMGB: 80) == "0.02")
        #expect(ServingCommand.memoryShare(vramGB: 48, gpuVRAMGB: 48) == "1.0")
        #expect(ServingCommand.memoryShare(vramGB: 60, gpuVRAMGB: 48) == "1.0")
        #expect(ServingCommand.memoryShare(vramGB: 10, gpuVRAMGB: nil) == nil)
        #expect(ServingCommand.memoryShare(vramGB: 1, gpuVRAMGB: 143) == nil)
    }

    /// The CPU engine: llama-cpp-python's server over a GGUF file, its options spelled as that
    /// server takes them (pydantic settings' field names).
    @Test func aLlamaCppModelGetsTheServersOwnOptions() throws {
        let json = #"{"models": [{"slug": "tiny-chat", "mode": 3, "size": "small", "vramGB": 1, "engine": "llama-cpp", "image": "registry.local/llama-cpp-server:1", "weights": "/weights/tiny.gguf", "maxModelLen": 512, "args": ["--n_threads", "2"]}]}"#
        let merged = try catalog.overridden(by: try Catalog(json: Data(json.utf8)))
        let tiny = try #require(merged.model("tiny-chat"))
        #expect(tiny.engine == .llamaCpp)
        #expect(tiny.servingArguments(ServingShape(gpus: 0)) == [
            "--model", "/weights/tiny.gguf", "--model_alias", "tiny-chat", "--host", "0.0.0.0", "--port", "8000",
            "--n_ctx", "512", "--n_gpu_layers", "0", "--n_threads", "2",
        ])
        #expect(ServingCommand.shmMiB(engine: .llamaCpp, gpus: 0) == nil)
        // The weights the node-agent mounted replace the catalog's.
        #expect(tiny.servingArguments(ServingShape(gpus: 0), weightsPath: "/mnt/w/tiny.gguf").prefix(2) == ["--model", "/mnt/w/tiny.gguf"])
        // A llama.cpp entry must name its image (there is no default one).
        let noImage = #"{"models": [{"slug": "x", "mode": 3, "size": "small", "vramGB": 1, "engine": "llama-cpp", "weights": "/w.gguf"}]}"#
        #expect(throws: CatalogError.self) { try Catalog(json: Data(noImage.utf8)) }
    }

    /// Catalog files written before `weights`: `--model` in `args` becomes the weights, and an
    /// entry without an image gets vLLM's.
    @Test func olderCatalogFilesStillRead() throws {
        let json = #"{"models": [{"slug": "old", "mode": 3, "size": "small", "vramGB": 4, "image": "ops/vllm:1", "args": ["--model", "org/old", "--dtype", "half"]}, {"slug": "bare", "mode": 3, "size": "small", "vramGB": 4, "weights": "org/bare"}]}"#
        let file = try Catalog(json: Data(json.utf8))
        let old = try #require(file.model("old"))
        #expect(old.weights == "org/old" && old.args == ["--dtype", "half"] && old.image == "ops/vllm:1")
        #expect(file.model("bare")?.image == VLLM.image)
        // The embedding runner of vLLM's current CLI marks an embedding model.
        #expect(CatalogModel.ModelTask.inferred(fromArgs: ["--runner", "pooling"]) == .embedding)
        #expect(CatalogModel.ModelTask.inferred(fromArgs: ["--convert=embed"]) == .embedding)
    }

    /// An operator's `catalog-file` overrides one slug's image or engine arguments and keeps the
    /// rest; a new slug must be a whole model.
    @Test func anOperatorOverridesOneSlugsImageAndArguments() throws {
        let json = #"{"models": [{"slug": "llama-3.1-8b", "image": "registry.local/vllm:0.34.0-patched"}, {"slug": "phi-3.5-mini", "maxBatchSize": 8, "args": ["--enforce-eager"]}, {"slug": "tiny", "mode": 3, "size": "small", "vramGB": 1, "weights": "org/tiny"}]}"#
        let merged = try catalog.overridden(byFile: Data(json.utf8))
        let llama = try #require(merged.model("llama-3.1-8b"))
        let standard = try #require(catalog.model("llama-3.1-8b"))
        #expect(llama.image == "registry.local/vllm:0.34.0-patched")
        #expect(llama.weights == standard.weights && llama.maxModelLen == standard.maxModelLen && llama.vramGB == standard.vramGB)
        let phi = try #require(merged.model("phi-3.5-mini"))
        #expect(phi.maxBatchSize == 8 && phi.args == ["--enforce-eager"] && phi.weights == "microsoft/Phi-3.5-mini-instruct")
        #expect(phi.servingArguments(ServingShape(gpus: 1)).contains("--enforce-eager"))
        #expect(merged.model("tiny")?.image == VLLM.image)
        // A new slug that is not a whole model is refused, naming the slug.
        let partial = #"{"models": [{"slug": "nope", "image": "x"}]}"#
        #expect { try catalog.overridden(byFile: Data(partial.utf8)) } throws: { error in
            (error as? CatalogError)?.message.contains("'nope' is not in the catalog") == true
        }
        // Switching a slug to llama.cpp without naming an image is refused.
        let noImage = #"{"models": [{"slug": "phi-3.5-mini", "engine": "llama-cpp", "weights": "/w/phi.gguf"}]}"#
        #expect(throws: CatalogError.self) { try catalog.overridden(byFile: Data(noImage.utf8)) }
    }

    /// The catalog round-trips through its JSON (the scheduler and api-server read the same file).
    @Test func catalogEntriesRoundTrip() throws {
        for model in catalog.models {
            let back = try JSONDecoder().decode(CatalogModel.self, from: try JSONEncoder().encode(model))
            #expect(back == model)
        }
    }
}
