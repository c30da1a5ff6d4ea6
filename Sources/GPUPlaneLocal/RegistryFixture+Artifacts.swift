import CurlHTTP
import Foundation
import GPUPlaneSystem

/// An OCI artifact pushed to a ``RegistryFixture``.
public struct PushedArtifact: Sendable, Hashable {
    /// `127.0.0.1:<port>/<repository>:<tag>`: what a catalog names as `oci://<reference>`.
    public let reference: String
    /// The manifest's digest, `sha256:…` (the weights cache's content address).
    public let digest: String
    /// The layers' digests, in the order of the files pushed.
    public let layerDigests: [String]
}

extension RegistryFixture {
    /// The media type of each file's layer in an artifact ``pushArtifact(files:as:user:)`` makes.
    public static let weightsLayerMediaType = "application/vnd.gpuplane.weights.layer.v1"
    /// The artifact type of the manifest (`artifactType`).
    public static let weightsArtifactType = "application/vnd.gpuplane.weights.v1"
    /// The annotation naming a layer's file: the layout ORAS writes and the node-agent's weights
    /// cache reads (a titled layer is one file of that name).
    public static let titleAnnotation = "org.opencontainers.image.title"

    /// Pushes `files` as one OCI artifact `repository:tag` (e.g. `gpuplane/tiny-random-llama:v1`)
    /// through the registry's HTTP API v2, as `oras push` does: every file one blob (a monolithic
    /// upload, `POST /v2/<repository>/blobs/uploads/` then `PUT <location>?digest=sha256:…`), an
    /// empty config (`application/vnd.oci.empty.v1+json`, `{}`), and an OCI image manifest with
    /// one layer per file in the order given, media type ``weightsLayerMediaType``, annotated
    /// with ``titleAnnotation`` = the file's name; then `PUT /v2/<repository>/manifests/<tag>`.
    ///
    /// Logged in as `user` (the first user, by name, when nil). Every call has a timeout; an
    /// upload is not retried (a retry would start a new one). Blocking work (reading and hashing
    /// the files) runs off the cooperative pool.
    /// - Throws: ``RegistryFixtureError`` naming the step and the registry's answer.
    @discardableResult
    public func pushArtifact(files: [URL], as repositoryAndTag: String, user: String? = nil) async throws -> PushedArtifact {
        var contents: [(name: String, data: Data)] = []
        for file in files {
            let data = try await TestEnvironment.offPool("gpuplane-artifact-read") { try Data(contentsOf: file) }
            contents.append((file.lastPathComponent, data))
        }
        return try await pushArtifact(contents: contents, as: repositoryAndTag, user: user)
    }

    /// ``pushArtifact(files:as:user:)`` from bytes in memory (name → content). For tests of the
    /// cache's reading: `layerMediaType` replaces ``weightsLayerMediaType``, `sizeLie` adds bytes
    /// to every titled layer's size in the manifest (a manifest that does not match its blobs),
    /// and `untitledLayers` (media type → content, e.g. a gzip tar) follow without a title.
    @discardableResult
    public func pushArtifact(
        contents: [(name: String, data: Data)], as repositoryAndTag: String, user: String? = nil,
        layerMediaType: String = RegistryFixture.weightsLayerMediaType, sizeLie: Int = 0,
        untitledLayers: [(mediaType: String, data: Data)] = []
    ) async throws -> PushedArtifact {
        guard let colon = repositoryAndTag.lastIndex(of: ":"), !repositoryAndTag[colon...].contains("/") else {
            throw RegistryFixtureError(message: "pushArtifact: \"\(repositoryAndTag)\" is not REPOSITORY:TAG")
        }
        let repository = String(repositoryAndTag[..<colon])
        let tag = String(repositoryAndTag[repositoryAndTag.index(after: colon)...])
        guard let login = user ?? users.keys.sorted().first, let password = users[login] else {
            throw RegistryFixtureError(message: "pushArtifact: no user \(user ?? "(any)") in the registry fixture")
        }
        let authorization = CurlHTTP.Header(
            "Authorization", "Basic " + Data("\(login):\(password)".utf8).base64EncodedString())
        var names = Set<String>()
        for file in contents where !names.insert(file.name).inserted {
            throw RegistryFixtureError(message: "pushArtifact: two files are named \(file.name)")
        }

        let config = Data("{}".utf8)
        let configDigest = try await uploadBlob(config, repository: repository, authorization: authorization)
        var layers: [[String: Any]] = []
        var layerDigests: [String] = []
        for file in contents {
            let digest = try await uploadBlob(file.data, repository: repository, authorization: authorization)
            layerDigests.append(digest)
            layers.append([
                "mediaType": layerMediaType, "digest": digest, "size": file.data.count + sizeLie,
                "annotations": [Self.titleAnnotation: file.name],
            ])
        }
        for layer in untitledLayers {
            let digest = try await uploadBlob(layer.data, repository: repository, authorization: authorization)
            layerDigests.append(digest)
            layers.append(["mediaType": layer.mediaType, "digest": digest, "size": layer.data.count])
        }
        let manifest: [String: Any] = [
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": Self.weightsArtifactType,
            "config": ["mediaType": "application/vnd.oci.empty.v1+json", "digest": configDigest, "size": config.count],
            "layers": layers,
        ]
        let body = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
        let put = try await Self.artifactHTTP.perform(CurlHTTP.Request(
            method: .put, url: "http://\(address)/v2/\(repository)/manifests/\(tag)",
            headers: [authorization, CurlHTTP.Header("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            body: body, timeout: .seconds(30), connectTimeout: .seconds(5)))
        guard put.status == 201 else {
            throw RegistryFixtureError(
                message: "pushArtifact: PUT manifest \(repository):\(tag) answered \(put.status): \(String(decoding: put.body, as: UTF8.self))")
        }
        return PushedArtifact(
            reference: "\(address)/\(repository):\(tag)", digest: "sha256:" + Self.sha256(body), layerDigests: layerDigests)
    }

    private static let artifactHTTP = CurlHTTP.Client(name: "registry-artifact-curl", maxConnections: 2)

    private static func sha256(_ data: Data) -> String {
        PortableSHA256.hex(PortableSHA256.hash(Array(data)))
    }

    /// One monolithic blob upload; returns the blob's digest.
    private func uploadBlob(_ data: Data, repository: String, authorization: CurlHTTP.Header) async throws -> String {
        let digest = try await TestEnvironment.offPool("gpuplane-artifact-hash") { "sha256:" + Self.sha256(data) }
        let started = try await Self.artifactHTTP.perform(CurlHTTP.Request(
            method: .post, url: "http://\(address)/v2/\(repository)/blobs/uploads/", headers: [authorization],
            timeout: .seconds(30), connectTimeout: .seconds(5)))
        guard started.status == 202, var location = started.header("Location") else {
            throw RegistryFixtureError(
                message: "pushArtifact: POST blobs/uploads/ answered \(started.status): \(String(decoding: started.body, as: UTF8.self))")
        }
        if location.hasPrefix("/") { location = "http://\(address)" + location }
        let put = try await Self.artifactHTTP.perform(CurlHTTP.Request(
            method: .put, url: location + (location.contains("?") ? "&" : "?") + "digest=\(digest)",
            headers: [authorization, CurlHTTP.Header("Content-Type", "application/octet-stream")], body: data,
            timeout: .seconds(300), connectTimeout: .seconds(5)))
        guard put.status == 201 else {
            throw RegistryFixtureError(
                message: "pushArtifact: PUT blob \(digest) answered \(put.status): \(String(decoding: put.body, as: UTF8.self))")
        }
        return digest
    }
}
