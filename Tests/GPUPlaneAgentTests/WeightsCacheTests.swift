import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Logging
import Testing

/// The node-agent's weights cache against the real registry (Debian's docker-registry, with
/// htpasswd logins): an ORAS-style artifact fetched once however many ask, verified, renamed
/// into place whole; least recently used weights evicted past the limit, never those in use;
/// failures named; progress visible while a transfer is held midway.
@Suite(.enabled(if: RegistryFixture.isAvailable, "needs docker-registry and htpasswd (scripts/install-deps)"))
struct WeightsCacheTests {
    static let logger = Logger(label: "gpuplane.weights-test") { _ in SwiftLogNoOpLogHandler() }

    func makeCache(_ settings: WeightsCacheSettings) throws -> WeightsCache {
        let cache = WeightsCache(settings: settings, http: CurlHTTP.Client(name: "weights-test-curl"), logger: Self.logger)
        try cache.prepare()
        return cache
    }

    @Test func fetchedOnceForTwoVerifiedAndNeverPartial() async throws {
        let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
        defer { registry.shutdown() }
        let gguf = WeightsPush.bytes(300_000, seed: 1)
        let config = Data(#"{"arch": "llama"}"#.utf8)
        let digest = try await WeightsPush.push(
            [("tiny-random-llama.gguf", gguf), ("sub/config.json", config)], as: "gpuplane/tiny-random-llama", tag: "v1", to: registry)
        let settings = try WeightsPush.settings(registry)
        let cache = try makeCache(settings)
        let source = try WeightsSource.parse("oci://\(registry.address)/gpuplane/tiny-random-llama:v1")
        #expect(cache.resolve(source) == nil)

        // Two servers of one model ask at once: one fetch, shared.
        let first = cache.fetch(source)
        let second = cache.fetch(source)
        #expect(first === second)
        let entry = try await first.ended().get()
        #expect(entry.address == "oci-" + digest.replacingOccurrences(of: ":", with: "-"))
        #expect(entry.path == settings.directory + "/entries/" + entry.address)
        #expect(entry.bytes == Int64(gguf.count + config.count))
        #expect(try Data(contentsOf: URL(fileURLWithPath: entry.path + "/tiny-random-llama.gguf")) == gguf)
        #expect(try Data(contentsOf: URL(fileURLWithPath: entry.path + "/sub/config.json")) == config)
        #expect(cache.statistics.fetches == 1)
        #expect(cache.statistics.filesFetched == 2)
        // Nothing left half-made, and the next server finds the weights without a transfer.
        #expect(try FileManager.default.contentsOfDirectory(atPath: settings.directory + "/partial").isEmpty)
        #expect(cache.resolve(source) == entry)
        let byDigest = try WeightsSource.parse("oci://\(registry.address)/gpuplane/tiny-random-llama@\(digest)")
        #expect(cache.resolve(byDigest)?.address == entry.address)

        // A restarted agent: a partial fetch left by a crash is removed, the cache is read back,
        // the tag resolves without the registry.
        let junk = settings.directory + "/partial/deadbeef"
        try FileManager.default.createDirectory(atPath: junk, withIntermediateDirectories: true)
        try Data("half a file".utf8).write(to: URL(fileURLWithPath: junk + "/tiny-random-llama.gguf"))
        registry.shutdown()
        let restarted = try makeCache(settings)
        #expect(!FileManager.default.fileExists(atPath: junk))
        #expect(restarted.resolve(source) == entry)
        #expect(restarted.cachedBytes == entry.bytes)
        #expect(restarted.statistics.fetches == 0)
    }

    /// An image-style artifact: untitled gzip tar layers are unpacked into the weights.
    @Test func tarLayersAreUnpacked() async throws {
        let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
        defer { registry.shutdown() }
        let folder = try TestEnvironment.temporaryDirectory(prefix: "weights-tar")
        let content = folder.appendingPathComponent("content")
        try FileManager.default.createDirectory(at: content.appendingPathComponent("tokenizer"), withIntermediateDirectories: true)
        try Data("vocab".utf8).write(to: content.appendingPathComponent("tokenizer/vocab.txt"))
        try WeightsPush.bytes(5000, seed: 5).write(to: content.appendingPathComponent("model.safetensors"))
        let tarball = folder.appendingPathComponent("layer.tar.gz")
        let made = try await TestEnvironment.offPool("tar") { try Command.run("/usr/bin/tar", ["-czf", tarball.path, "-C", content.path, "."]) }
        #expect(made.status == 0, "\(made.output)")
        try await WeightsPush.push(
            [("README.md", Data("titled".utf8))], as: "team/image-style", tag: "v1", to: registry, tarLayers: [try Data(contentsOf: tarball)])
        let cache = try makeCache(try WeightsPush.settings(registry))
        let entry = try await cache.fetch(try WeightsSource.parse("oci://\(registry.address)/team/image-style:v1")).ended().get()
        #expect(try String(contentsOfFile: entry.path + "/tokenizer/vocab.txt", encoding: .utf8) == "vocab")
        #expect(try Data(contentsOf: URL(fileURLWithPath: entry.path + "/model.safetensors")) == WeightsPush.bytes(5000, seed: 5))
        #expect(try String(contentsOfFile: entry.path + "/README.md", encoding: .utf8) == "titled")
        // The layer's own file is gone once unpacked.
        #expect(try FileManager.default.contentsOfDirectory(atPath: entry.path).sorted() == ["README.md", "model.safetensors", "tokenizer"])
    }

    @Test func failuresAreNamed() async throws {
        let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
        defer { registry.shutdown() }
        try await WeightsPush.push([("w.gguf", WeightsPush.bytes(1000, seed: 2))], as: "team/w", tag: "v1", to: registry)
        try await WeightsPush.push([("w.gguf", WeightsPush.bytes(1000, seed: 3))], as: "team/lies", tag: "v1", to: registry, sizeLie: 7)
        var settings = try WeightsPush.settings(registry)
        let cache = try makeCache(settings)
        func failure(_ text: String, in cache: WeightsCache) async throws -> WeightsError {
            let outcome = try await cache.fetch(try WeightsSource.parse(text)).ended()
            guard case .failure(let error) = outcome else { throw WeightsTestError(message: "\(text) was fetched") }
            return error
        }
        let missing = try await failure("oci://\(registry.address)/team/w:v2", in: cache)
        #expect(missing.code == .notFound && missing.message.contains("team/w:v2") && missing.message.contains("not found"), "\(missing)")
        #expect(missing.loadingReason == .fetchFailed)
        let wrongDigest = "sha256:" + String(repeating: "0", count: 64)
        let unknown = try await failure("oci://\(registry.address)/team/w@\(wrongDigest)", in: cache)
        #expect(unknown.code == .notFound, "\(unknown)")
        let lies = try await failure("oci://\(registry.address)/team/lies:v1", in: cache)
        #expect(lies.code == .verification && lies.message.contains("bytes, not 1007"), "\(lies)")
        #expect(lies.loadingReason == .verificationFailed)
        let nothing = try await failure("oci://127.0.0.1:\(TestEnvironment.freePort())/team/w:v1", in: cache)
        #expect(nothing.code == .unreachable && nothing.message.contains("did not answer"), "\(nothing)")
        // Without the login the registry wants: said so, naming the setting that fixes it.
        settings.registryLogins = [:]
        let anonymous = try makeCache(settings)
        let refused = try await failure("oci://\(registry.address)/team/w:v1", in: anonymous)
        #expect(refused.code == .unauthorized && refused.message.contains("weights-registry-auth-file"), "\(refused)")
        // No failure left anything behind.
        #expect(cache.addresses.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: settings.directory + "/partial").isEmpty)
    }

    @Test func evictsLeastRecentlyUsedNeverInUse() async throws {
        let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
        defer { registry.shutdown() }
        let size = 100_000
        var sources: [String: WeightsSource] = [:]
        for (i, name) in ["a", "b", "c"].enumerated() {
            try await WeightsPush.push([("w.bin", WeightsPush.bytes(size, seed: UInt64(10 + i)))], as: "lru/\(name)", tag: "v1", to: registry)
            sources[name] = try WeightsSource.parse("oci://\(registry.address)/lru/\(name):v1")
        }
        // Room for two and a half.
        let cache = try makeCache(try WeightsPush.settings(registry, limit: Int64(size * 5 / 2)))
        func fetch(_ name: String) async throws -> String {
            try await cache.fetch(try #require(sources[name])).ended().get().address
        }
        let a = try await fetch("a")
        let b = try await fetch("b")
        cache.setInUse([])
        #expect(cache.addresses == [a, b])
        cache.markUsed(a)  // a server started on a: b is now the least recently used
        let c = try await fetch("c")
        #expect(cache.addresses == [a, c], "b, least recently used, is evicted")
        #expect(cache.statistics.evictions == 1)
        #expect(!FileManager.default.fileExists(atPath: cache.settings.directory + "/entries/" + b))

        // Everything in use: over the limit, nothing evicted.
        cache.setInUse([a, c])
        let b2 = try await fetch("b")
        #expect(b2 == b)
        #expect(cache.addresses == [a, b, c])
        #expect(cache.cachedBytes > cache.settings.sizeLimitBytes)
        // a's and c's servers stop: the older of them (a) goes, and that is enough.
        cache.setInUse([b])
        #expect(cache.addresses == [b, c])
        #expect(cache.statistics.evictions == 2)
    }

    /// A transfer held midway by the throttling proxy: the job's progress says how far, in the
    /// words a status shows.
    @Test func progressIsVisibleMidFetch() async throws {
        let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"], throttle: 8_000_000)
        defer { registry.shutdown() }
        let big = WeightsPush.bytes(16_000_000, seed: 4)
        try await WeightsPush.push([("big.gguf", big)], as: "slow/w", tag: "v1", to: registry)
        let cache = try makeCache(try WeightsPush.settings(registry))
        try registry.holdThrottledPulls()
        defer { registry.releaseThrottledPulls() }
        let job = cache.fetch(try WeightsSource.parse("oci://\(try #require(registry.throttledAddress))/slow/w:v1"))
        try await eventually("the transfer is held midway", timeout: 120, every: 0.05) {
            let (done, total) = job.progress
            return done >= 8_000_000 && total == 16_000_000 && job.outcome == nil
        }
        #expect(job.progressMessage.hasPrefix("fetching weights "))
        #expect(job.progressMessage.hasSuffix("/16.0 MB"))
        // Nothing of it is in entries/ while it runs.
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.settings.directory + "/entries").isEmpty)
        registry.releaseThrottledPulls()
        let entry = try await job.ended().get()
        #expect(entry.bytes == 16_000_000)
    }
}

/// Hugging Face weights through the Hub's HTTP API, against a loopback stand-in of the Hub
/// (there is no Hub here): the token goes in Authorization and nowhere else.
@Suite struct HuggingFaceWeightsTests {
    @Test func fetchesARepositoryWithTheTokenAndNeverLogsIt() async throws {
        let token = "hf_secret_token_\(UUID().uuidString.prefix(8))"
        let hub = try await HuggingFaceHubStandIn(token: token, lie: "bad.gguf")
        defer { hub.shutdown() }
        let weights = WeightsPush.bytes(50_000, seed: 31)
        try hub.add("acme/tiny", [("model.gguf", weights), ("config.json", Data(#"{"a": 1}"#.utf8))])
        try hub.add("acme/liar", [("bad.gguf", WeightsPush.bytes(100, seed: 32))])
        let lines = LogRecorder()
        var settings = try WeightsPush.settings(nil)
        settings.huggingFaceEndpoint = hub.endpoint
        let cache = WeightsCache(
            settings: settings, http: CurlHTTP.Client(name: "hf-test-curl"), logger: lines.logger("hf"))
        try cache.prepare()

        let source = try WeightsSource.parse("acme/tiny")
        let entry = try await cache.fetch(source, token: token).ended().get()
        #expect(entry.address.hasPrefix("hf-") && entry.address.count == 43)
        #expect(try Data(contentsOf: URL(fileURLWithPath: entry.path + "/model.gguf")) == weights)
        #expect(cache.resolve(source) == entry)
        #expect(cache.resolve(try WeightsSource.parse("hf://acme/tiny@\(entry.address.dropFirst(3))")) == entry)
        // Every request carried the token.
        let fetches = hub.requests.split(separator: "\n").filter { !$0.hasPrefix("/health") }
        #expect(fetches.count == 3 && fetches.allSatisfy { $0.hasSuffix("auth=yes") }, "\(hub.requests)")

        // Without the token: refused, said so, naming the setting.
        let refused = try await cache.fetch(try WeightsSource.parse("acme/other"), token: nil).ended()
        guard case .failure(let error) = refused else { throw WeightsTestError(message: "fetched without a token") }
        #expect(error.code == .unauthorized && error.message.contains("hf.token_secret"), "\(error)")
        // A file whose sha256 is not the one announced: a verification failure, nothing kept.
        let lied = try await cache.fetch(try WeightsSource.parse("acme/liar"), token: token).ended()
        guard case .failure(let verification) = lied else { throw WeightsTestError(message: "a lying file was accepted") }
        #expect(verification.code == .verification && verification.message.contains("bad.gguf"), "\(verification)")
        #expect(cache.addresses == [entry.address])
        // The token appears in no log line and no error.
        #expect(!lines.all.isEmpty)
        #expect(!lines.all.contains { $0.contains(token) })
        #expect(!error.message.contains(token) && !verification.message.contains(token))
    }
}

/// The agent's weights settings as its configuration file gives them.
@Suite struct WeightsSettingsTests {
    @Test func sizesAndAuthFile() throws {
        #expect(NodeAgentMain.byteSize("200GB") == 200_000_000_000)
        #expect(NodeAgentMain.byteSize("500Gi") == 536_870_912_000)
        #expect(NodeAgentMain.byteSize("1.5 TB") == 1_500_000_000_000)
        #expect(NodeAgentMain.byteSize("1000") == 1000)
        #expect(NodeAgentMain.byteSize("lots") == nil)
        #expect(NodeAgentMain.byteSize("10 parsecs") == nil)
        let folder = try TestEnvironment.temporaryDirectory(prefix: "weights-auth")
        let file = folder.appendingPathComponent("auth.json")
        try #"{"auths": {"127.0.0.1:5000": {"auth": "\#(Data("ops:p4ss:word".utf8).base64EncodedString())"}, "https://Registry.Example.com/v2/": {"username": "u", "password": "p"}}}"#
            .write(to: file, atomically: true, encoding: .utf8)
        let logins = try WeightsCacheSettings.registryLogins(authFile: file.path)
        #expect(logins["127.0.0.1:5000"] == WeightsRegistryLogin(username: "ops", password: "p4ss:word"))
        #expect(logins["registry.example.com"] == WeightsRegistryLogin(username: "u", password: "p"))
        #expect(!"\(logins["127.0.0.1:5000"]!)".contains("p4ss"))
        try "not json".write(to: file, atomically: true, encoding: .utf8)
        #expect(throws: WeightsError.self) { try WeightsCacheSettings.registryLogins(authFile: file.path) }
    }
}
