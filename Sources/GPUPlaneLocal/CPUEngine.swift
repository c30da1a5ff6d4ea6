import Foundation
import GPUPlaneCore

/// The CPU inference engine's image as scripts/build-engine-image leaves it: a rootfs tarball
/// (Debian 12, Python, llama-cpp-python's server in `/opt/llama-cpp-server`) that each podman
/// under test imports as ``LlamaCppServer/image``. A real engine: llama.cpp serving a GGUF model
/// through llama-cpp-python's OpenAI-compatible server.
public enum CPUEngineImage {
    /// The folder of built images (`$GPUPLANE_IMAGES`, else `/opt/gpuplane-images`).
    public static var directory: String {
        ProcessInfo.processInfo.environment["GPUPLANE_IMAGES"] ?? "/opt/gpuplane-images"
    }

    /// The rootfs tarball of the image ``LlamaCppServer/image`` names.
    public static var tarballPath: String {
        "\(directory)/llama-cpp-server-\(LlamaCppServer.imageTag).tar"
    }

    /// Whether the tarball is built (scripts/install-deps runs scripts/build-engine-image).
    public static var isAvailable: Bool {
        FileManager.default.isReadableFile(atPath: tarballPath)
    }

    /// Why it cannot be used, for a test's skip or failure message.
    public static var missingReason: String {
        "\(tarballPath) is missing: run scripts/build-engine-image (scripts/install-deps runs it)"
    }

    /// The `podman import` changes that make the tarball the engine's image: its entrypoint
    /// (``LlamaCppServer/entrypoint``), no `CMD` (the catalog's arguments are the command),
    /// `PATH` with the virtual environment first. scripts/build-engine-image's `--podman-import`
    /// uses the same.
    public static var importChanges: [String] {
        let entrypoint = LlamaCppServer.entrypoint.map { "\"\($0)\"" }.joined(separator: ", ")
        return [
            "ENTRYPOINT [\(entrypoint)]", "CMD []",
            "ENV PATH=/opt/llama-cpp-server/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
    }
}

extension PodmanFixture {
    /// Imports the CPU engine's image into this fixture's store as ``LlamaCppServer/image``
    /// (once: a second call finds it there) and returns that reference. Off the cooperative
    /// pool: importing 200 MB takes seconds.
    /// - Throws: ``PodmanFixtureError`` when the tarball is missing or the import fails.
    @discardableResult
    public func importCPUEngineImage() async throws -> String {
        guard CPUEngineImage.isAvailable else { throw PodmanFixtureError(message: CPUEngineImage.missingReason) }
        let image = LlamaCppServer.image
        try await TestEnvironment.offPool("gpuplane-engine-import") {
            if (try? self.podman(["image", "exists", image])) != nil { return }
            var arguments = ["import", "--quiet"]
            for change in CPUEngineImage.importChanges { arguments += ["--change", change] }
            try self.podman(arguments + [CPUEngineImage.tarballPath, image])
        }
        return image
    }
}

/// The project's own tiny model: a RANDOMLY INITIALISED llama in GGUF that
/// scripts/make-tiny-gguf.py writes with PyPI's `gguf` (2 blocks, hidden size 64, a 406-piece
/// SentencePiece-style vocabulary, about 0.5 MB). It was never trained: the text it generates
/// is nonsense. It lets the tests and the local cluster run the real CPU engine on a real model
/// file without downloading weights; the same seed gives the same bytes.
public enum TinyRandomLlama {
    /// The file's name, which is also the catalog's `weightsFile`.
    public static let fileName = "tiny-random-llama.gguf"
    /// The catalog slug (and served model name) the local cluster gives it.
    public static let slug = "tiny-random-llama"

    /// The repository's root (this file is Sources/GPUPlaneLocal/CPUEngine.swift).
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// scripts/make-tiny-gguf.py.
    public static var script: String { repositoryRoot.appendingPathComponent("scripts/make-tiny-gguf.py").path }

    /// The Python that has `gguf` (`$GPUPLANE_TOOLS_VENV/bin/python`, default
    /// `/opt/gpuplane-venv`: scripts/install-deps installs it there).
    public static var python: String {
        (ProcessInfo.processInfo.environment["GPUPLANE_TOOLS_VENV"] ?? "/opt/gpuplane-venv") + "/bin/python"
    }

    /// Whether the script and its Python are there.
    public static var isAvailable: Bool {
        FileManager.default.isReadableFile(atPath: script) && TestEnvironment.hasExecutable(python)
    }

    /// Writes the model into `directory` (created if missing) as ``fileName`` and returns its URL.
    /// - Throws: ``PodmanFixtureError`` with the script's output when it fails.
    public static func write(into directory: URL, seed: Int = 0) async throws -> URL {
        let file = directory.appendingPathComponent(fileName)
        try await TestEnvironment.offPool("gpuplane-tiny-gguf") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            _ = try PodmanFixture.run(python, [script, "--seed", String(seed), "--output", file.path])
        }
        return file
    }
}
