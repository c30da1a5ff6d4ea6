#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

/// How a GPU workload is served (see `reference/gpu-block-and-modes.txt`).
public enum GPUMode: Int, Codable, Sendable, CaseIterable, Comparable {
    /// Mode 1: raw whole GPUs, the user's own server (`model: custom`). Enterprise only.
    case dedicated = 1
    /// Mode 2: a 70B-class model pinned in a dedicated 96 GB slot.
    case largePinned = 2
    /// Mode 3: a small or mid model (≤ 48 GB) packed with other tenants on shared GPUs.
    case sharedPinned = 3

    /// The node label value that admits this mode (`gpu-mode=<label>`).
    public var nodeLabel: String {
        switch self {
        case .dedicated: return "dedicated"
        case .largePinned: return "large"
        case .sharedPinned: return "shared"
        }
    }

    /// A human name, e.g. "Mode 2 (large pinned)".
    public var displayName: String {
        switch self {
        case .dedicated: return "Mode 1 (dedicated)"
        case .largePinned: return "Mode 2 (large pinned)"
        case .sharedPinned: return "Mode 3 (shared pinned)"
        }
    }

    public static func < (lhs: GPUMode, rhs: GPUMode) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A model of the catalog: a slug users name in `gpu.model` and how it is served.
public struct CatalogModel: Resource, Hashable {
    public static let kind = ResourceKind.catalogModel

    /// Size classes, which plans unlock one by one.
    public enum SizeClass: String, Codable, Sendable, Comparable {
        /// Small Mode 3 models (Pro and up).
        case small
        /// Mid-size Mode 3 models, up to 48 GB (Scale and up).
        case mid
        /// 70B-class Mode 2 models (Scale and up).
        case large

        private var order: Int { self == .small ? 0 : self == .mid ? 1 : 2 }
        public static func < (lhs: SizeClass, rhs: SizeClass) -> Bool { lhs.order < rhs.order }
    }

    /// What a model answers: chat (and text) completions, or embeddings.
    public enum ModelTask: String, Codable, Sendable, Hashable {
        /// Chat and text completions (`/v1/chat/completions`): what `auto` may pick.
        case chat
        /// Embeddings only (`/v1/embeddings`).
        case embedding

        /// The task a catalog entry that names none serves: `embedding` when its arguments ask
        /// the server for embeddings (vLLM's `--runner pooling` or `--convert embed`, or the
        /// older `--task embed`/`embedding`), `chat` otherwise.
        public static func inferred(fromArgs args: [String]) -> ModelTask {
            for (i, arg) in args.enumerated() {
                for flag in ["--task", "--convert", "--runner"] {
                    let value: Substring?
                    if arg == flag { value = i + 1 < args.count ? Substring(args[i + 1]) : nil }
                    else if arg.hasPrefix(flag + "=") { value = arg.dropFirst(flag.count + 1) }
                    else { value = nil }
                    if let value, value.hasPrefix("embed") || value == "pooling" { return .embedding }
                }
            }
            return .chat
        }
    }

    public var metadata: ObjectMeta
    /// The slug users write, e.g. `llama-3.1-8b`.
    public var slug: String
    /// Mode 3 (shared) or Mode 2 (large); never Mode 1, which is `custom`.
    public var mode: GPUMode
    /// The size class plans are checked against.
    public var size: SizeClass
    /// VRAM the pinned server needs, weights and KV cache, in GB.
    public var vramGB: Int
    /// The engine serving it: vLLM on GPU hosts (the catalog's default), llama.cpp for GGUF
    /// models on hosts without GPUs.
    public var engine: EngineKind
    /// The serving image started for this model (``VLLM/image`` for vLLM).
    public var image: String
    /// The weights the engine loads (``WeightsSource``): a Hugging Face repo id
    /// (`meta-llama/Llama-3.1-8B-Instruct`, `hf://owner/name@revision`), an OCI artifact
    /// holding the files (`oci://REGISTRY/REPOSITORY:TAG`), or a path on every node
    /// (`/abs/path`). An OCI artifact or a path is fetched (or mounted) by the node-agent and
    /// the engine gets the mount (``servingWeights``); a Hugging Face id is passed as `--model`.
    public var weights: String
    /// The file inside the weights the engine loads, relative (`tiny-random-llama.gguf`): a
    /// llama-cpp model's GGUF file; nil: the engine gets the whole directory.
    public var weightsFile: String? = nil
    /// The longest context served (`--max-model-len`, llama.cpp's `--n_ctx`); the engine's
    /// default (the model's own) when nil.
    public var maxModelLen: Int?
    /// Sequences served at once (`--max-num-seqs`, the model's `max_batch_size`); the engine's
    /// default when nil.
    public var maxBatchSize: Int?
    /// Further engine arguments, after those ``ServingCommand/arguments(for:shape:weightsPath:)``
    /// writes (`--quantization fp8`, `--runner pooling`…).
    public var args: [String]
    /// The port the server's OpenAI-protocol API listens on inside the container.
    public var port: Int
    /// What the model is for, shown by `gpuplane models`.
    public var useCase: String
    /// Chat or embeddings (a catalog file that names none: inferred from `args`, see
    /// ``ModelTask/inferred(fromArgs:)``).
    public var task: ModelTask

    /// Makes a catalog entry; `task` nil is inferred from `args`. Empty `weights` are taken
    /// from a `--model` in `args` (the shape catalog files had before `weights`), which then
    /// leaves `args`.
    public init(
        slug: String, mode: GPUMode, size: SizeClass, vramGB: Int, image: String,
        args: [String] = [], port: Int = 8000, useCase: String = "", task: ModelTask? = nil,
        engine: EngineKind = .vllm, weights: String = "", maxModelLen: Int? = nil, maxBatchSize: Int? = nil,
        weightsFile: String? = nil
    ) {
        self.weightsFile = weightsFile
        self.metadata = ObjectMeta(name: slug)
        self.slug = slug
        self.mode = mode
        self.size = size
        self.vramGB = vramGB
        self.engine = engine
        self.image = image
        (self.weights, self.args) = Self.weights(weights, args: args)
        self.maxModelLen = maxModelLen
        self.maxBatchSize = maxBatchSize
        self.port = port
        self.useCase = useCase
        self.task = task ?? .inferred(fromArgs: args)
    }

    /// `weights`, else the value of a `--model` (or `--model=`) in `args`, and `args` without it.
    static func weights(_ weights: String, args: [String]) -> (String, [String]) {
        guard weights.isEmpty else { return (weights, args) }
        var rest: [String] = []
        var found = ""
        var i = 0
        while i < args.count {
            if args[i] == "--model", i + 1 < args.count, found.isEmpty {
                found = args[i + 1]
                i += 2
                continue
            }
            if args[i].hasPrefix("--model="), found.isEmpty {
                found = String(args[i].dropFirst("--model=".count))
                i += 1
                continue
            }
            rest.append(args[i])
            i += 1
        }
        return (found, rest)
    }

    private enum CodingKeys: String, CodingKey {
        case metadata, slug, mode, size, vramGB, engine, image, weights, weightsFile, maxModelLen, maxBatchSize, args, port, useCase, task
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        slug = try c.decode(String.self, forKey: .slug)
        metadata = try c.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta(name: slug)
        mode = try c.decode(GPUMode.self, forKey: .mode)
        size = try c.decode(SizeClass.self, forKey: .size)
        vramGB = try c.decode(Int.self, forKey: .vramGB)
        engine = try c.decodeIfPresent(EngineKind.self, forKey: .engine) ?? .vllm
        image = try c.decodeIfPresent(String.self, forKey: .image) ?? (engine == .vllm ? VLLM.image : "")
        guard !image.isEmpty else {
            throw DecodingError.dataCorruptedError(
                forKey: .image, in: c, debugDescription: "'\(slug)': a \(engine.rawValue) model must name its image")
        }
        let rawArgs = try c.decodeIfPresent([String].self, forKey: .args) ?? []
        (weights, args) = Self.weights(try c.decodeIfPresent(String.self, forKey: .weights) ?? "", args: rawArgs)
        weightsFile = try c.decodeIfPresent(String.self, forKey: .weightsFile)
        maxModelLen = try c.decodeIfPresent(Int.self, forKey: .maxModelLen)
        maxBatchSize = try c.decodeIfPresent(Int.self, forKey: .maxBatchSize)
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? 8000
        useCase = try c.decodeIfPresent(String.self, forKey: .useCase) ?? ""
        task = try c.decodeIfPresent(ModelTask.self, forKey: .task) ?? .inferred(fromArgs: rawArgs)
    }

    /// What the node-agent fetches (or mounts) and the engine loads from the mount: set for an
    /// OCI artifact, a host path, and a Hugging Face repository written `hf://owner/name[@rev]`;
    /// nil for a plain Hugging Face id (`owner/name`, the engine fetches it itself, as the
    /// bundled catalog's entries are) and for weights that do not parse (``Catalog`` refuses those).
    public var servingWeights: ServingWeights? {
        guard let source = try? WeightsSource.parse(weights) else { return nil }
        switch source {
        case .oci, .hostPath: return ServingWeights(source: source.description, file: weightsFile)
        case .huggingFace: return weights.hasPrefix("hf://") ? ServingWeights(source: source.description, file: weightsFile) : nil
        }
    }

    /// Why this entry's `weights` and `weightsFile` cannot be used, naming the field and the
    /// fix; nil when they can.
    public var weightsProblem: String? {
        if weights.isEmpty {
            return engine == .llamaCpp
                ? "'\(slug)': weights: a llama-cpp model must name its weights (oci://REGISTRY/REPOSITORY:TAG or /abs/path, with weightsFile the GGUF file)"
                : nil
        }
        let source: WeightsSource
        do {
            source = try WeightsSource.parse(weights)
        } catch {
            return "'\(slug)': weights: \(error.message)"
        }
        if let file = weightsFile, !WeightsSource.isRelativeFile(file) {
            return "'\(slug)': weightsFile: '\(file)' is not a relative file inside the weights; write a name such as model.gguf (no leading '/', no '..')"
        }
        if engine == .llamaCpp, weightsFile == nil, source.isFetched {
            return "'\(slug)': weightsFile: a llama-cpp model loads one GGUF file; name it inside \(weights) (weightsFile: model.gguf)"
        }
        return nil
    }

    /// The arguments its engine is started with when placed as `shape`
    /// (``ServingCommand/arguments(for:shape:weightsPath:)``).
    public func servingArguments(_ shape: ServingShape, weightsPath: String? = nil) -> [String] {
        ServingCommand.arguments(for: self, shape: shape, weightsPath: weightsPath)
    }
}

/// Raised when a catalog file cannot be used.
public struct CatalogError: Error, CustomStringConvertible, Sendable {
    /// What is wrong, naming the slug or field.
    public let message: String
    public var description: String { message }
}

/// The model catalog: slug → mode, VRAM footprint, serving image and arguments.
///
/// gpuplane ships `catalog.json`; operators override it with their own file of the same shape
/// (`{"models": [...]}`), which replaces entries by slug and adds new ones.
public struct Catalog: Sendable {
    /// The literal that lets the scheduler pick a small shared chat model (Free plan only:
    /// ``Plan/allowsAuto``; ``autoModel`` is the one it picks).
    public static let auto = "auto"
    /// The literal for Mode 1 bring-your-own.
    public static let custom = "custom"

    /// Every model, by slug order.
    public let models: [CatalogModel]
    private let bySlug: [String: CatalogModel]

    /// Makes a catalog of `models`, checking slugs are unique and footprints fit their mode.
    public init(models: [CatalogModel]) throws {
        var bySlug: [String: CatalogModel] = [:]
        for model in models {
            guard bySlug[model.slug] == nil else {
                throw CatalogError(message: "catalog: slug '\(model.slug)' appears twice")
            }
            guard model.mode != .dedicated else {
                throw CatalogError(
                    message: "catalog: '\(model.slug)' has mode 1; Mode 1 is `custom`, not a catalog model")
            }
            if let problem = model.weightsProblem {
                throw CatalogError(message: "catalog: \(problem)")
            }
            if model.mode == .sharedPinned && model.vramGB > 48 {
                throw CatalogError(
                    message: "catalog: '\(model.slug)' needs \(model.vramGB) GB; Mode 3 models must fit 48 GB")
            }
            bySlug[model.slug] = model
        }
        self.bySlug = bySlug
        self.models = models.sorted { $0.slug < $1.slug }
    }

    private struct File: Codable { var models: [CatalogModel] }

    /// Decodes a catalog file's JSON.
    public init(json: Data) throws {
        do {
            try self.init(models: try JSONDecoder().decode(File.self, from: json).models)
        } catch let error as CatalogError {
            throw error
        } catch {
            throw CatalogError(message: "catalog: \(error)")
        }
    }

    /// The catalog shipped with gpuplane.
    public static func standard() throws -> Catalog {
        try Catalog(json: Data(StandardCatalog.json.utf8))
    }

    /// The bundled catalog, overridden by the operator's file at `path` when one is given (the
    /// `catalog-file` setting of the api-server and the scheduler, which must agree): entries of
    /// known slugs change only the fields they name (an image, engine arguments…), new slugs
    /// add whole models (``overridden(byFile:)``).
    public static func load(overrideFile path: String?) throws -> Catalog {
        let standard = try standard()
        guard let path else { return standard }
        let data: Data
        do {
            data = Data(try SystemFile.read(path))
        } catch {
            throw CatalogError(message: "catalog-file \(path): \(error.reason)")
        }
        return try standard.overridden(byFile: data)
    }

    /// This catalog with `overrides` replacing models of the same slug and adding new ones.
    public func overridden(by overrides: Catalog) throws -> Catalog {
        var merged = bySlug
        for model in overrides.models { merged[model.slug] = model }
        return try Catalog(models: Array(merged.values))
    }

    /// The model with this slug.
    public func model(_ slug: String) -> CatalogModel? { bySlug[slug] }

    /// The model `auto` resolves to: the smallest small shared chat model (never an embedding
    /// model: a Free pod's `NXL_INFERENCE_URL` is called for chat completions), then by slug.
    public var autoModel: CatalogModel? {
        models.filter { $0.mode == .sharedPinned && $0.size == .small && $0.task == .chat }
            .min { ($0.vramGB, $0.slug) < ($1.vramGB, $1.slug) }
    }

    /// Slugs for suggestions.
    public var slugs: [String] { models.map(\.slug) }
}
