import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneSystem
import GPUPlaneTestSupport

/// Pushes weights to the real registry fixture as an ORAS-style OCI artifact through the
/// registry's HTTP API v2 (the same calls `oras push` makes): each file one blob (monolithic
/// upload: `POST /v2/<repo>/blobs/uploads/`, then `PUT <location>&digest=…`), its layer
/// titled with `org.opencontainers.image.title`, then the manifest (`PUT
/// /v2/<repo>/manifests/<tag>`). Returns the manifest's digest.
enum WeightsPush {
    static let http = CurlHTTP.Client(name: "weights-push-curl", maxConnections: 4)

    static func sha256(_ data: Data) -> String {
        PortableSHA256.hex(PortableSHA256.hash(Array(data)))
    }

    static func auth(_ registry: RegistryFixture) -> CurlHTTP.Header {
        let (user, password) = registry.users.sorted { $0.key < $1.key }[0]
        return CurlHTTP.Header("Authorization", "Basic " + Data("\(user):\(password)".utf8).base64EncodedString())
    }

    static func uploadBlob(_ data: Data, repository: String, to registry: RegistryFixture) async throws -> String {
        let digest = "sha256:" + sha256(data)
        let started = try await http.perform(CurlHTTP.Request(
            method: .post, url: "http://\(registry.address)/v2/\(repository)/blobs/uploads/", headers: [auth(registry)],
            timeout: .seconds(30)))
        guard started.status == 202, var location = started.header("Location") else {
            throw WeightsTestError(message: "blob upload start answered \(started.status): \(String(decoding: started.body, as: UTF8.self))")
        }
        if location.hasPrefix("/") { location = "http://\(registry.address)" + location }
        let put = try await http.perform(CurlHTTP.Request(
            method: .put, url: location + (location.contains("?") ? "&" : "?") + "digest=\(digest)",
            headers: [auth(registry), CurlHTTP.Header("Content-Type", "application/octet-stream")], body: data,
            timeout: .seconds(120)))
        guard put.status == 201 else {
            throw WeightsTestError(message: "blob upload answered \(put.status): \(String(decoding: put.body, as: UTF8.self))")
        }
        return digest
    }

    /// Pushes `files` (name → content) as `repository:tag`; `sizeLie` adds bytes to every
    /// layer's size in the manifest (a manifest that does not match its blobs).
    @discardableResult
    static func push(
        _ files: [(String, Data)], as repository: String, tag: String, to registry: RegistryFixture, sizeLie: Int = 0,
        tarLayers: [Data] = []
    ) async throws -> String {
        let config = Data("{}".utf8)
        let configDigest = try await uploadBlob(config, repository: repository, to: registry)
        var layers: [[String: Any]] = []
        for (name, data) in files {
            let digest = try await uploadBlob(data, repository: repository, to: registry)
            layers.append([
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": data.count + sizeLie,
                "annotations": ["org.opencontainers.image.title": name],
            ])
        }
        for tar in tarLayers {
            // An image-style layer: no title, a gzip tar unpacked into the weights.
            let digest = try await uploadBlob(tar, repository: repository, to: registry)
            layers.append(["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": tar.count])
        }
        let manifest: [String: Any] = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.gpuplane.weights.v1",
            "config": ["mediaType": "application/vnd.oci.empty.v1+json", "digest": configDigest, "size": config.count],
            "layers": layers,
        ]
        let body = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
        let put = try await http.perform(CurlHTTP.Request(
            method: .put, url: "http://\(registry.address)/v2/\(repository)/manifests/\(tag)",
            headers: [auth(registry), CurlHTTP.Header("Content-Type", "application/vnd.oci.image.manifest.v1+json")], body: body,
            timeout: .seconds(30)))
        guard put.status == 201 else {
            throw WeightsTestError(message: "manifest push answered \(put.status): \(String(decoding: put.body, as: UTF8.self))")
        }
        return "sha256:" + sha256(body)
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
