#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The inference engine a catalog model (or a deployment) is served by.
public enum EngineKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// vLLM's OpenAI-compatible server (`vllm serve`, the `vllm/vllm-openai` image): GPU hosts.
    case vllm
    /// llama.cpp's OpenAI-compatible server as llama-cpp-python runs it
    /// (`python3 -m llama_cpp.server`), serving one GGUF file on CPU: hosts without GPUs and
    /// the local cluster.
    case llamaCpp = "llama-cpp"
}

/// vLLM as gpuplane runs it: the pinned release, its image, and the `/dev/shm` it needs.
public enum VLLM {
    /// The vLLM release the catalog's arguments are written for and checked against (the
    /// `VLLMArgumentTests` read this release's CLI definitions from its wheel; scripts/install-deps
    /// downloads the same version).
    public static let version = "0.34.0"
    /// The image gpuplane starts for vLLM: vLLM's own OpenAI-compatible server image, whose
    /// entrypoint is `vllm serve` (so the arguments are `vllm serve`'s options).
    public static let image = "docker.io/vllm/vllm-openai:v\(version)"
    /// `/dev/shm` per GPU of the server, MiB: PyTorch's worker processes and NCCL exchange
    /// tensors through shared memory under tensor parallelism, and an engine's default 64 MiB
    /// makes a multi-GPU server fail at start.
    public static let shmMiBPerGPU = 4096
}

/// llama-cpp-python's server as gpuplane runs it.
///
/// Its image is built by the project, not pulled (llama-cpp-python publishes no wheel or
/// image gpuplane could use): `scripts/build-engine-image` builds llama-cpp-python's wheel from
/// its PyPI sdist (CPU only) and a Debian 12 rootfs with Python and a virtual environment at
/// `/opt/llama-cpp-server`, written as a tarball that is imported as ``image`` with
/// ``entrypoint``; the catalog's arguments (``ServingCommand/arguments(for:shape:weightsPath:)``)
/// are its `CMD`.
public enum LlamaCppServer {
    /// The llama-cpp-python release the image holds and the arguments are written for
    /// (scripts/build-engine-image reads it from here).
    public static let version = "0.3.36"
    /// The revision of the image's recipe (scripts/build-engine-image and its pinned
    /// requirements), bumped when they change so a stale image is not reused.
    public static let imageRevision = 1
    /// The image's tag, `<version>-<revision>`.
    public static var imageTag: String { "\(version)-\(imageRevision)" }
    /// The image reference a catalog entry names for the CPU engine.
    public static var image: String { "localhost/gpuplane/llama-cpp-server:\(imageTag)" }
    /// The image's entrypoint: the virtual environment's Python running the server module.
    public static let entrypoint = ["/opt/llama-cpp-server/bin/python", "-m", "llama_cpp.server"]
    /// The context a GGUF model gets when its catalog entry names no `maxModelLen`.
    public static let defaultContext = 2048
}

/// Where and how big a server is placed, which its command line depends on.
public struct ServingShape: Sendable, Hashable {
    /// GPUs the server spans (vLLM's tensor parallelism); 0 on a host without GPUs.
    public var gpus: Int
    /// The VRAM of each of its GPUs, GB; nil when unknown.
    public var gpuVRAMGB: Int?
    /// Whether the GPU is shared with other servers (Mode 3 packing): then the server may use
    /// only its model's share of the GPU's memory (`--gpu-memory-utilization`).
    public var sharesGPU: Bool

    /// Makes a shape.
    public init(gpus: Int, gpuVRAMGB: Int? = nil, sharesGPU: Bool = false) {
        self.gpus = gpus
        self.gpuVRAMGB = gpuVRAMGB
        self.sharesGPU = sharesGPU
    }
}

/// The command line of a serving engine, from what a catalog entry or a deployment says.
public enum ServingCommand {
    /// The address every engine listens on inside its container (the node-agent publishes its
    /// port; `0.0.0.0` so the published port reaches it).
    public static let listenAddress = "0.0.0.0"

    /// The arguments `model` is started with, placed as `shape` says.
    ///
    /// vLLM (`vllm serve` options): `--model` (the weights: the catalog's `weights`, a Hugging
    /// Face repo id vLLM fetches or a path), `--served-model-name` (the slug, the name the
    /// gateway pins requests to), `--host`, `--port`, `--max-num-seqs` (`maxBatchSize`),
    /// `--max-model-len`, `--tensor-parallel-size` (the GPUs), `--gpu-memory-utilization` (the
    /// model's VRAM over its GPU's, only when Mode 3 packs several servers on one GPU), then
    /// the entry's own `args` (`--quantization fp8`, `--runner pooling`…).
    ///
    /// llama.cpp (llama-cpp-python's `llama_cpp.server` options): `--model` (the GGUF file),
    /// `--model_alias` (the slug), `--host`, `--port`, `--n_ctx` (`maxModelLen`, else
    /// ``LlamaCppServer/defaultContext``), `--n_gpu_layers 0` without a GPU, then `args`.
    ///
    /// `weightsPath`, when given, replaces the catalog's `weights` (a path the node-agent
    /// mounted the fetched weights at).
    public static func arguments(for model: CatalogModel, shape: ServingShape, weightsPath: String? = nil) -> [String] {
        let weights = weightsPath ?? model.weights
        var out: [String] = []
        switch model.engine {
        case .vllm:
            if !weights.isEmpty { out += ["--model", weights] }
            out += ["--served-model-name", model.slug, "--host", listenAddress, "--port", "\(model.port)"]
            if let batch = model.maxBatchSize { out += ["--max-num-seqs", "\(batch)"] }
            if let length = model.maxModelLen { out += ["--max-model-len", "\(length)"] }
            out += ["--tensor-parallel-size", "\(max(1, shape.gpus))"]
            if shape.sharesGPU, let share = memoryShare(vramGB: model.vramGB, gpuVRAMGB: shape.gpuVRAMGB) {
                out += ["--gpu-memory-utilization", share]
            }
        case .llamaCpp:
            if !weights.isEmpty { out += ["--model", weights] }
            out += [
                "--model_alias", model.slug, "--host", listenAddress, "--port", "\(model.port)",
                "--n_ctx", "\(model.maxModelLen ?? LlamaCppServer.defaultContext)",
            ]
            if shape.gpus == 0 { out += ["--n_gpu_layers", "0"] }
        }
        return out + model.args
    }

    /// The vLLM arguments of a deployment's instance: its Hugging Face repo (and revision),
    /// served as its full name, `max_batch_size` sequences at once, tensor parallel over its
    /// `num_gpus` GPUs (whole GPUs: no memory share). With `weightsPath` (the node-agent fetched
    /// the revision and mounted it there), `--model` is that path and no revision is named.
    public static func deploymentArguments(_ spec: DeploymentSpec, servedName: String, port: Int, weightsPath: String? = nil) -> [String] {
        var out = [
            "--model", weightsPath ?? spec.hf.repo, "--served-model-name", servedName, "--host", listenAddress, "--port", "\(port)",
            "--max-num-seqs", "\(spec.maxBatchSize)", "--tensor-parallel-size", "\(max(1, spec.numGPUs))",
        ]
        if weightsPath == nil, let revision = spec.hf.revision { out += ["--revision", revision] }
        return out
    }

    /// `/dev/shm` a server of `engine` on `gpus` GPUs needs, MiB; nil for the engine's default.
    public static func shmMiB(engine: EngineKind, gpus: Int) -> Int? {
        switch engine {
        case .vllm: return VLLM.shmMiBPerGPU * max(1, gpus)
        case .llamaCpp: return nil
        }
    }

    /// `vramGB / gpuVRAMGB` rounded down to two decimals (`0.20`), never above 1; nil when the
    /// GPU's size is unknown or nothing would be left.
    public static func memoryShare(vramGB: Int, gpuVRAMGB: Int?) -> String? {
        guard let total = gpuVRAMGB, total > 0, vramGB > 0 else { return nil }
        let hundredths = min(100, vramGB * 100 / total)
        guard hundredths > 0 else { return nil }
        return hundredths == 100 ? "1.0" : "0.\(hundredths < 10 ? "0" : "")\(hundredths)"
    }
}
