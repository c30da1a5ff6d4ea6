import Foundation
import GPUPlaneCore
import Testing

@testable import GPUPlaneAgent

/// What the pull decides without an engine: the progress read from the engine's stream (the
/// lines podman 4.3 sends, as measured), the codes of its failures, the credential header.
struct ImagePullUnitTests {
    /// Feeds `lines` in chunks of `chunk` bytes and returns every progress reported.
    func progress(_ lines: [String], chunk: Int) -> (reported: [ContainerEngine.PullProgress], stream: PullStream) {
        var stream = PullStream()
        var reported: [ContainerEngine.PullProgress] = []
        let bytes = Array(lines.joined(separator: "\n").utf8) + [10]
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + chunk, bytes.count)
            bytes[offset..<end].withUnsafeBytes { if let p = stream.append($0) { reported.append(p) } }
            offset = end
        }
        return (reported, stream.finish())
    }

    static let podmanLines = [
        #"{"status":"Pulling fs layer","progressDetail":{},"id":"dfdf14ca7181"}"#,
        #"{"status":"Pulling fs layer","progressDetail":{},"id":"ae5f97ae5a2c"}"#,
        #"{"status":"Downloading","progressDetail":{"current":16544768,"total":81094646},"progress":"[==>  ]  16.54MB/81.09MB","id":"dfdf14ca7181"}"#,
        #"{"status":"Downloading","progressDetail":{"current":16422912,"total":20002462},"progress":"[====> ]  16.42MB/20MB","id":"ae5f97ae5a2c"}"#,
        #"{"status":"Download complete","progressDetail":{},"id":"ae5f97ae5a2c"}"#,
        #"{"status":"Downloading","progressDetail":{"current":65411072,"total":81094646},"progress":"[====>  ]  65.41MB/81.09MB","id":"dfdf14ca7181"}"#,
        #"{"status":"Download complete","progressDetail":{},"id":"dfdf14ca7181"}"#,
        #"{"status":"Pulling fs layer","progressDetail":{},"id":"fb90bf71eefd"}"#,
        #"{"status":"Download complete","progressDetail":{},"id":"fb90bf71eefd"}"#,
        #"{"status":"Download complete","progressDetail":{},"id":"fb90bf71eefd"}"#,
    ]

    /// Chunks shorter than a line: each line is seen on its own.
    @Test(arguments: [1, 7, 40]) func progressCountsLayersAndBytesWhateverTheChunking(chunk: Int) {
        let (reported, stream) = progress(Self.podmanLines, chunk: chunk)
        #expect(stream.error == nil)
        #expect(reported.first == ContainerEngine.PullProgress(layers: 1))
        #expect(reported.contains(ContainerEngine.PullProgress(layers: 2, layersDone: 0, bytesDone: 32_967_680, bytesTotal: 101_097_108)))
        #expect(reported.last == ContainerEngine.PullProgress(layers: 3, layersDone: 3, bytesDone: 101_097_108, bytesTotal: 101_097_108))
        #expect("\(reported.last!)" == "3/3 layers, 101.1/101.1 MB")
        #expect("\(ContainerEngine.PullProgress(layers: 2, layersDone: 1))" == "1/2 layers")
        // A repeated line changes nothing and is not reported again.
        #expect(Set(reported).count == reported.count)
    }

    @Test func oneChunkOfManyLinesReportsWhereTheyEnd() {
        let (reported, _) = progress(Self.podmanLines, chunk: 1 << 20)
        #expect(reported == [ContainerEngine.PullProgress(layers: 3, layersDone: 3, bytesDone: 101_097_108, bytesTotal: 101_097_108)])
    }

    @Test func dockerLinesThatNameNoLayerAreNotCounted() {
        let (reported, stream) = progress([
            #"{"status":"Pulling from library/busybox","id":"1.36"}"#,
            #"{"status":"Pulling fs layer","progressDetail":{},"id":"a1"}"#,
            #"{"status":"Already exists","progressDetail":{},"id":"a2"}"#,
            #"{"status":"Pull complete","progressDetail":{},"id":"a1"}"#,
            #"{"status":"Digest: sha256:abc"}"#,
            #"{"status":"Status: Downloaded newer image for busybox:1.36"}"#,
        ], chunk: 5)
        #expect(stream.error == nil)
        #expect(reported.last == ContainerEngine.PullProgress(layers: 2, layersDone: 2))
    }

    @Test func anErrorInTheStreamEndsThePull() {
        let message = "initializing source docker://127.0.0.1:5000/team/x:1: reading manifest 1 in 127.0.0.1:5000/team/x: manifest unknown: manifest unknown"
        let (_, stream) = progress([
            #"{"progressDetail":{},"errorDetail":{"message":"\#(message)"},"error":"\#(message)"}"#
        ], chunk: 3)
        #expect(stream.error == message)
    }

    @Test func failuresGetTheirCodeFromTheEnginesWords() {
        func code(_ message: String, status: Int? = nil) -> EngineError.Code {
            ContainerEngine.Client.pullFailure(message, status: status, image: "r/x:1").code
        }
        // podman 4.3 (containers/image), as measured against docker-registry 2.8.
        #expect(code("initializing source docker://127.0.0.1:5000/team/x:1: reading manifest 1 in 127.0.0.1:5000/team/x: manifest unknown: manifest unknown") == .imageNotFound)
        #expect(code("initializing source docker://127.0.0.1:5000/team/x:2: reading manifest 2 in 127.0.0.1:5000/team/x: unauthorized: authentication required") == .registryUnauthorized)
        #expect(code("initializing source docker://127.0.0.1:1/team/x:9: pinging container registry 127.0.0.1:1: Get \"https://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused") == .pullFailed)
        // Docker's words, and its statuses.
        #expect(code("pull access denied for team/x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied") == .registryUnauthorized)
        #expect(code("manifest for team/x:1 not found: manifest unknown: manifest unknown", status: 404) == .imageNotFound)
        #expect(code("Head \"https://r/v2/x/manifests/1\": unauthorized", status: 500) == .registryUnauthorized)
        // A local failure is not the registry's refusal.
        #expect(code("writing blob: open /var/lib/containers/storage/x: permission denied") == .pullFailed)
    }

    @Test func theCredentialTravelsAsBase64URLJSONAndIsNeverDescribed() throws {
        let credential = ContainerEngine.RegistryCredential(server: "127.0.0.1:5000", username: "alice", password: "s3cr?t>>")
        let header = try credential.header()
        #expect(!header.contains("+") && !header.contains("/"))
        let standard = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        let json = try #require(Data(base64Encoded: standard))
        let object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: String])
        #expect(object == ["username": "alice", "password": "s3cr?t>>", "serveraddress": "127.0.0.1:5000"])
        #expect(!"\(credential)".contains("s3cr"))
    }

    @Test func failureMessagesNameImageRegistryAndSecret() {
        let image = "127.0.0.1:5000/team/x:1"
        func words(_ code: EngineError.Code, secret: String?) -> String {
            ImagePullState.describe(EngineError(code: code, message: "engine words"), image: image, registry: "127.0.0.1:5000", secret: secret)
        }
        #expect(words(.imageNotFound, secret: "regcred") == "image \(image) not found in registry 127.0.0.1:5000")
        #expect(words(.registryUnauthorized, secret: "regcred") == "registry 127.0.0.1:5000 refused the credentials of secret regcred for image \(image)")
        #expect(words(.registryUnauthorized, secret: nil).hasPrefix("no credentials for registry 127.0.0.1:5000"))
        #expect(words(.pullFailed, secret: nil) == "pulling image \(image) from 127.0.0.1:5000 failed: engine words")
    }
}
