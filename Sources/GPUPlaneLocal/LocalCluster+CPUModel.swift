import Foundation
import GPUPlaneCore

/// The real model the local cluster serves on CPU, `tiny-random-llama`: the project's tiny
/// randomly initialised llama (``TinyRandomLlama``: its text is nonsense), published as an OCI
/// artifact to a registry on loopback, fetched by the node-agent's weights cache, mounted
/// read-only and served by llama.cpp's OpenAI-compatible server (the CPU engine image,
/// ``CPUEngineImage``). Every other catalog model stays on the stand-in model server.
public struct LocalCPUModel: Sendable {
    /// The registry on loopback holding the weights.
    public let registry: RegistryFixture
    /// The pushed artifact (`127.0.0.1:<port>/gpuplane/tiny-random-llama:v1`).
    public let artifact: PushedArtifact
    /// The catalog entry the api-server and scheduler get: engine `llama-cpp`, the engine image,
    /// `weights: oci://<artifact>`, `weightsFile: tiny-random-llama.gguf`.
    public let catalogEntry: CatalogModel
    /// The agents' `weights-registry-auth-file` (the registry's login, containers-auth format).
    public let authFile: URL

    /// The repository and tag the weights are pushed as.
    public static let repository = "gpuplane/tiny-random-llama:v1"

    /// Whether everything it needs is here: the engine image's tarball, the model script with
    /// `gguf`, and the registry (scripts/install-deps installs them all).
    public static var isAvailable: Bool {
        CPUEngineImage.isAvailable && TinyRandomLlama.isAvailable && RegistryFixture.isAvailable
    }

    /// What is missing when ``isAvailable`` is false.
    public static var missingReason: String {
        if !CPUEngineImage.isAvailable { return CPUEngineImage.missingReason }
        if !TinyRandomLlama.isAvailable {
            return "\(TinyRandomLlama.python) with gguf, or \(TinyRandomLlama.script), is missing (scripts/install-deps)"
        }
        return "docker-registry and htpasswd are missing (scripts/install-deps)"
    }

    /// The catalog entry for weights at `reference`: a small Mode 3 chat model of 1 GB (the
    /// whole of it fits anywhere; a fake GPU's memory is not used), served by llama-cpp with a
    /// context of 512 tokens (an answer asked without `max_tokens`, as the seed's snippet asks,
    /// ends there at the latest).
    public static func catalogEntry(weights reference: String) -> CatalogModel {
        CatalogModel(
            slug: TinyRandomLlama.slug, mode: .sharedPinned, size: .small, vramGB: 1, image: LlamaCppServer.image,
            useCase: "tiny random llama on CPU (llama.cpp; random weights, nonsense text)", task: .chat, engine: .llamaCpp,
            weights: "oci://" + reference, maxModelLen: 512, weightsFile: TinyRandomLlama.fileName)
    }

    /// Starts the registry, writes the model into `directory`, pushes it, imports the engine
    /// image into `podman` and writes the agents' auth file.
    static func prepare(podman: PodmanFixture, directory: URL, log: (String) -> Void) async throws -> LocalCPUModel {
        log("registry on loopback with \(TinyRandomLlama.fileName) (random weights) as \(repository)…")
        let password = UUID().uuidString.lowercased()
        let registry = try await RegistryFixture.start(users: ["gpuplane-local": password])
        do {
            let file = try await TinyRandomLlama.write(into: directory.appendingPathComponent("tiny-model"))
            let artifact = try await registry.pushArtifact(files: [file], as: repository)
            log("the CPU engine image \(LlamaCppServer.image) (llama.cpp's server)…")
            try await podman.importCPUEngineImage()
            let authFile = directory.appendingPathComponent("weights-registry-auth.json")
            let auth = Data("gpuplane-local:\(password)".utf8).base64EncodedString()
            let object = ["auths": Dictionary(uniqueKeysWithValues: registry.locations.map { ($0, ["auth": auth]) })]
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: authFile)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: authFile.path)
            return LocalCPUModel(
                registry: registry, artifact: artifact, catalogEntry: catalogEntry(weights: artifact.reference), authFile: authFile)
        } catch {
            registry.shutdown()
            throw error
        }
    }
}
