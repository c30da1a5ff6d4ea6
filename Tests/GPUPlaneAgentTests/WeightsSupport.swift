import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneSystem
import GPUPlaneTestSupport

/// Weights in the real registry fixture for the cache's tests: pushed with
/// ``RegistryFixture/pushArtifact(contents:as:user:layerMediaType:sizeLie:untitledLayers:)`` (the
/// ORAS-style layout), here with the plain OCI tar layer type on titled layers, as `oras push`
/// writes by default.
enum WeightsPush {
    static func sha256(_ data: Data) -> String {
        PortableSHA256.hex(PortableSHA256.hash(Array(data)))
    }

    /// Pushes `files` (name → content) as `repository:tag` and returns the manifest's digest;
    /// `sizeLie` adds bytes to every layer's size in the manifest (a manifest that does not
    /// match its blobs); `tarLayers` are image-style layers (no title, a gzip tar unpacked into
    /// the weights).
    @discardableResult
    static func push(
        _ files: [(String, Data)], as repository: String, tag: String, to registry: RegistryFixture, sizeLie: Int = 0,
        tarLayers: [Data] = []
    ) async throws -> String {
        try await registry.pushArtifact(
            contents: files.map { (name: $0.0, data: $0.1) }, as: "\(repository):\(tag)",
            layerMediaType: "application/vnd.oci.image.layer.v1.tar", sizeLie: sizeLie,
            untitledLayers: tarLayers.map { (mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", data: $0) }
        ).digest
    }

    /// `count` pseudo-random bytes (seeded: the same content for the same seed).
    static func bytes(_ count: Int, seed: UInt64) -> Data {
        var generator = SplitMix64(seed: seed)
        var data = Data(count: count)
        data.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<words.count { words[i] = generator.next() }
            for i in (words.count * 8)..<count { raw[i] = UInt8(truncatingIfNeeded: generator.next()) }
        }
        return data
    }

    /// The settings of a cache in a new temporary folder, with the registry's login.
    static func settings(_ registry: RegistryFixture?, limit: Int64 = 1 << 40) throws -> WeightsCacheSettings {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "weights-cache")
        var settings = WeightsCacheSettings(directory: directory.path, sizeLimitBytes: limit)
        if let registry {
            let (user, password) = registry.users.sorted { $0.key < $1.key }[0]
            for address in registry.locations {
                settings.registryLogins[address] = WeightsRegistryLogin(username: user, password: password)
            }
        }
        settings.progressInterval = .milliseconds(50)
        settings.attempts = 2
        return settings
    }
}

extension WeightsFetchJob {
    /// Waits for the fetch's end.
    func ended(timeout: Double = 120) async throws -> Result<WeightsEntry, WeightsError> {
        var outcome: Result<WeightsEntry, WeightsError>?
        try await eventually("weights fetch of \(source) ends", timeout: timeout, every: 0.05) {
            outcome = self.outcome
            return outcome != nil
        }
        guard let outcome else { throw WeightsTestError(message: "no outcome") }
        return outcome
    }
}

/// A weights test's own failure.
struct WeightsTestError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
