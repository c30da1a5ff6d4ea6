import Foundation
@testable import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneSystem
import Testing

/// The pieces of the weights cache that need no registry.
@Suite struct WeightsCacheUnitTests {
    /// SHA-256 fed in pieces agrees with the whole message hashed at once (which
    /// `AgentRequestSignatureTests` checks against swift-crypto) however the bytes are split
    /// (block boundaries, empty and odd chunks), and with FIPS 180-4's "abc".
    @Test func streamingSHA256MatchesPortableSHA256() {
        var abc = PortableSHA256.Hasher()
        abc.update(Array("abc".utf8))
        #expect(abc.finalizeHex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        var generator = SplitMix64(seed: 7)
        for length in [0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 70_000] {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let expected = PortableSHA256.hex(PortableSHA256.hash(data))
            var hash = PortableSHA256.Hasher()
            var offset = 0
            while offset < data.count {
                let size = min(data.count - offset, Int.random(in: 0...200, using: &generator))
                data[offset..<(offset + size)].withUnsafeBytes { hash.update($0) }
                offset += size
            }
            #expect(hash.finalizeHex() == expected, "length \(length)")
        }
    }

    @Test func registryChallengesAndURLs() {
        let bearer = RegistryAuth.parameters(#" realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#)
        #expect(bearer["realm"] == "https://auth.example.com/token")
        #expect(bearer["service"] == "registry.example.com")
        #expect(bearer["scope"] == "repository:a/b:pull")
        #expect(OCIWeightsFetcher.baseURL("127.0.0.1:5000", plain: []) == "http://127.0.0.1:5000")
        #expect(OCIWeightsFetcher.baseURL("localhost:5000", plain: []) == "http://localhost:5000")
        #expect(OCIWeightsFetcher.baseURL("registry.example.com", plain: []) == "https://registry.example.com")
        #expect(OCIWeightsFetcher.baseURL("registry.lan:5000", plain: ["registry.lan:5000"]) == "http://registry.lan:5000")
        #expect(WeightsDownload.hostOf("https://cdn.example.com/a/b?c") == "https://cdn.example.com")
        #expect(WeightsDownload.resolve("/v2/x", against: "http://127.0.0.1:5000/v2/y") == "http://127.0.0.1:5000/v2/x")
        #expect(WeightsDownload.resolve("https://s3.example.com/blob", against: "http://r/v2/y") == "https://s3.example.com/blob")
        #expect(HuggingFaceWeightsFetcher.escape("refs/pr/1") == "refs%2Fpr%2F1")
        #expect(WeightsCache.ociAddress("sha256:ab") == "oci-sha256-ab")
    }
}
