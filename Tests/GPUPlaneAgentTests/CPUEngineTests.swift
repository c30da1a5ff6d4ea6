import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Logging
import Testing

/// The real CPU engine (llama.cpp through llama-cpp-python's OpenAI-compatible server, the
/// image scripts/build-engine-image builds) serving the project's tiny random llama
/// (scripts/make-tiny-gguf.py), started as the node-agent starts a model server: through the
/// agent's engine client on the podman fixture (root, runc, cgroupfs, explicit ulimits), the
/// weights folder mounted read-only at /weights, and exactly the arguments
/// `ServingCommand.arguments(for:shape:weightsPath:)` gives a llama-cpp catalog entry.
///
/// The model's text is nonsense (random weights); the tests check the answers' shape, the
/// token accounting and that greedy decoding repeats itself, never the text.
@Suite(
    .enabled(
        if: podmanAvailable && CPUEngineImage.isAvailable && TinyRandomLlama.isAvailable,
        "needs root podman, the CPU engine image (scripts/build-engine-image) and gguf in the tools venv (scripts/install-deps)"),
    .serialized)
struct CPUEngineTests {
    static let http = CurlHTTP.Client(name: "cpu-engine-test-curl", maxConnections: 4)

    /// The catalog entry the local cluster serves the tiny model with.
    static let model = CatalogModel(
        slug: TinyRandomLlama.slug, mode: .sharedPinned, size: .small, vramGB: 0, image: LlamaCppServer.image,
        useCase: "test model (random weights, nonsense text)", task: .chat, engine: .llamaCpp,
        weights: "oci://127.0.0.1:5000/gpuplane/tiny-random-llama:v1", weightsFile: TinyRandomLlama.fileName)

    @Test func servesTheTinyModelThroughTheOpenAIAPI() async throws {
        let weights = try #require(Self.model.servingWeights)
        let arguments = Self.model.servingArguments(ServingShape(gpus: 0), weightsPath: weights.enginePath)
        #expect(
            arguments == [
                "--model", "/weights/tiny-random-llama.gguf", "--model_alias", "tiny-random-llama", "--host", "0.0.0.0",
                "--port", "8000", "--n_ctx", "2048", "--n_gpu_layers", "0",
            ])
        let folder = try TestEnvironment.temporaryDirectory(prefix: "cpu-engine-weights")
        defer { try? FileManager.default.removeItem(at: folder) }
        _ = try await TinyRandomLlama.write(into: folder)

        try await withContainers { scope in
            let (name, base) = try await Self.startEngine(scope, arguments: arguments, weights: folder)

            // The weights are read-only inside the container.
            #expect(throws: (any Error).self) {
                try scope.podman.podman(["exec", name, "/bin/sh", "-c", "echo x > /weights/probe"])
            }

            // Chat, not streamed.
            let chatBody = """
                {"model":"tiny-random-llama","messages":[{"role":"user","content":"Hello, who are you?"}],\
                "max_tokens":8,"temperature":0}
                """
            let chat = try await Self.post(base + "/v1/chat/completions", chatBody)
            #expect(chat["object"] as? String == "chat.completion")
            #expect(chat["model"] as? String == TinyRandomLlama.slug)
            let chatChoice = try #require((chat["choices"] as? [[String: Any]])?.first)
            let message = try #require(chatChoice["message"] as? [String: Any])
            #expect(message["role"] as? String == "assistant")
            #expect(message["content"] is String)
            Self.expectUsage(chat, choice: chatChoice, maxTokens: 8)

            // The same greedy request decodes the same tokens: a model computing, not canned text.
            let again = try await Self.post(base + "/v1/chat/completions", chatBody)
            let againMessage = (again["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any]
            #expect(againMessage?["content"] as? String == message["content"] as? String)

            // Completion, not streamed; a longer prompt is more tokens (the GGUF's tokenizer).
            let short = try await Self.post(
                base + "/v1/completions", #"{"model":"tiny-random-llama","prompt":"Once","max_tokens":6,"temperature":0}"#)
            let long = try await Self.post(
                base + "/v1/completions",
                #"{"model":"tiny-random-llama","prompt":"Once upon a time there was a tiny model","max_tokens":6,"temperature":0}"#)
            for completion in [short, long] {
                #expect(completion["object"] as? String == "text_completion")
                #expect(completion["model"] as? String == TinyRandomLlama.slug)
                let choice = try #require((completion["choices"] as? [[String: Any]])?.first)
                #expect(choice["text"] is String)
                Self.expectUsage(completion, choice: choice, maxTokens: 6)
            }
            let shortPrompt = (short["usage"] as? [String: Any])?["prompt_tokens"] as? Int ?? 0
            let longPrompt = (long["usage"] as? [String: Any])?["prompt_tokens"] as? Int ?? 0
            #expect(longPrompt > shortPrompt)

            // Streamed: server-sent chunks of one id, the role first, content deltas, a finish
            // reason, then [DONE].
            let chatChunks = try await Self.stream(
                base + "/v1/chat/completions",
                #"{"model":"tiny-random-llama","messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":6,"stream":true}"#)
            #expect(chatChunks.allSatisfy { $0["object"] as? String == "chat.completion.chunk" })
            #expect(Set(chatChunks.compactMap { $0["id"] as? String }).count == 1)
            let deltas = chatChunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any] }
            #expect(deltas.count == chatChunks.count)
            #expect(deltas.first?["role"] as? String == "assistant")
            #expect(deltas.contains { $0["content"] is String })
            let chatFinish = chatChunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
            #expect(chatFinish.count == 1 && ["length", "stop"].contains(chatFinish[0]))

            let textChunks = try await Self.stream(
                base + "/v1/completions", #"{"model":"tiny-random-llama","prompt":"Hello","max_tokens":6,"stream":true}"#)
            #expect(textChunks.count >= 2)
            #expect(textChunks.allSatisfy { $0["object"] as? String == "text_completion" })
            #expect(textChunks.allSatisfy { (($0["choices"] as? [[String: Any]])?.first?["text"]) is String })
            let textFinish = textChunks.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
            #expect(textFinish.count == 1 && ["length", "stop"].contains(textFinish[0]))
        }
    }

    /// Publishes the tiny model to a real registry as an OCI artifact
    /// (``RegistryFixture/pushArtifact(files:as:user:)``), fetches it with the node-agent's
    /// weights cache, and serves the cached file: the bytes the engine loads are the bytes the
    /// script wrote, under the manifest's digest.
    @Test(.enabled(if: RegistryFixture.isAvailable, "needs docker-registry and htpasswd (scripts/install-deps)"))
    func servesTheModelFetchedFromTheRegistry() async throws {
        let registry = try await RegistryFixture.start(users: ["publisher": "tiny-pass"])
        defer { registry.shutdown() }
        let folder = try TestEnvironment.temporaryDirectory(prefix: "cpu-engine-model")
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = try await TinyRandomLlama.write(into: folder)
        let pushed = try await registry.pushArtifact(files: [file], as: "gpuplane/tiny-random-llama:v1")
        #expect(pushed.reference == "\(registry.address)/gpuplane/tiny-random-llama:v1")

        let cacheFolder = try TestEnvironment.temporaryDirectory(prefix: "cpu-engine-cache")
        defer { try? FileManager.default.removeItem(at: cacheFolder) }
        var settings = WeightsCacheSettings(directory: cacheFolder.path, sizeLimitBytes: 1 << 30)
        settings.registryLogins[registry.address] = WeightsRegistryLogin(username: "publisher", password: "tiny-pass")
        let cache = WeightsCache(
            settings: settings, http: CurlHTTP.Client(name: "cpu-engine-cache-curl"),
            logger: Logger(label: "gpuplane.cpu-engine-test") { _ in SwiftLogNoOpLogHandler() })
        try cache.prepare()
        let job = cache.fetch(try WeightsSource.parse("oci://" + pushed.reference))
        var outcome: Result<WeightsEntry, WeightsError>?
        try await eventually("the weights cache fetched \(pushed.reference)", timeout: 60) {
            outcome = job.outcome
            return outcome != nil
        }
        let entry = try #require(outcome).get()
        #expect(entry.address == "oci-" + pushed.digest.replacingOccurrences(of: ":", with: "-"))
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: entry.path + "/" + TinyRandomLlama.fileName)) == Data(contentsOf: file))

        var model = Self.model
        model.weights = "oci://" + pushed.reference
        let weights = try #require(model.servingWeights)
        try await withContainers { scope in
            let (_, base) = try await Self.startEngine(
                scope, arguments: model.servingArguments(ServingShape(gpus: 0), weightsPath: weights.enginePath),
                weights: URL(fileURLWithPath: entry.path))
            let answer = try await Self.post(
                base + "/v1/chat/completions",
                #"{"model":"tiny-random-llama","messages":[{"role":"user","content":"Hi"}],"max_tokens":4}"#)
            let choice = try #require((answer["choices"] as? [[String: Any]])?.first)
            #expect((choice["message"] as? [String: Any])?["content"] is String)
            Self.expectUsage(answer, choice: choice, maxTokens: 4)
        }
    }

    /// Starts the engine image as the node-agent starts a CPU model server (its client, the
    /// weights folder mounted read-only, a published port, memory and CPU limits) and waits
    /// until `/v1/models` answers; returns the container's name and the server's base URL.
    static func startEngine(
        _ scope: ContainerScope, arguments: [String], weights: URL
    ) async throws -> (name: String, base: String) {
        let image = try await scope.podman.importCPUEngineImage()
        #expect(image == LlamaCppServer.image)
        let port = TestEnvironment.freePort()
        var spec = ContainerEngine.ContainerSpec(
            name: scope.name("llama-cpp"), image: image, command: arguments, labels: scope.scopeLabel,
            ports: [ContainerEngine.PortMapping(containerPort: model.port, hostPort: port)],
            memoryLimitBytes: 1 << 30, network: .bridge)
        spec.weightsMount = weights.path
        spec.cpuLimitMilli = 1000
        let id = try await scope.run(spec)
        let base = "http://127.0.0.1:\(port)"
        var models: [String: Any] = [:]
        do {
            try await eventually("the engine's /v1/models answers", timeout: 180, every: 0.25) {
                let answer = try await http.perform(CurlHTTP.Request(url: base + "/v1/models", timeout: .seconds(5)))
                guard answer.status == 200 else { return false }
                models = try object(answer.body)
                return true
            }
        } catch {
            let logs = (try? await output(scope.engine, id).suffix(30).joined(separator: "\n")) ?? ""
            Issue.record("the engine never answered: \(error)\n--- engine log ---\n\(logs)")
            throw error
        }
        let listed = (models["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(listed == [TinyRandomLlama.slug])
        return (spec.name, base)
    }

    /// `usage` adds up, and a finish by length used every token asked for.
    static func expectUsage(_ answer: [String: Any], choice: [String: Any], maxTokens: Int) {
        let usage = answer["usage"] as? [String: Any]
        let prompt = usage?["prompt_tokens"] as? Int ?? -1
        let completion = usage?["completion_tokens"] as? Int ?? -1
        #expect(prompt > 0)
        #expect((0...maxTokens).contains(completion))
        #expect(usage?["total_tokens"] as? Int == prompt + completion)
        let finish = choice["finish_reason"] as? String
        #expect(finish == "length" || finish == "stop")
        if finish == "length" { #expect(completion == maxTokens) }
    }

    static func object(_ body: Data) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw CPUEngineTestError(message: "not a JSON object: \(String(decoding: body, as: UTF8.self))")
        }
        return object
    }

    static func post(_ url: String, _ json: String) async throws -> [String: Any] {
        let answer = try await http.perform(CurlHTTP.Request(
            method: .post, url: url, headers: [CurlHTTP.Header("Content-Type", "application/json")], body: Data(json.utf8),
            timeout: .seconds(120)))
        guard answer.status == 200 else {
            throw CPUEngineTestError(message: "POST \(url) answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))")
        }
        return try object(answer.body)
    }

    /// The JSON chunks of a streamed answer; throws unless it is `text/event-stream` whose last
    /// event is `data: [DONE]`.
    static func stream(_ url: String, _ json: String) async throws -> [[String: Any]] {
        let answer = try await http.perform(CurlHTTP.Request(
            method: .post, url: url, headers: [CurlHTTP.Header("Content-Type", "application/json")], body: Data(json.utf8),
            timeout: .seconds(120)))
        guard answer.status == 200, answer.header("Content-Type")?.hasPrefix("text/event-stream") == true else {
            throw CPUEngineTestError(
                message: "POST \(url) answered \(answer.status) \(answer.header("Content-Type") ?? "-"): \(String(decoding: answer.body, as: UTF8.self))")
        }
        let events = String(decoding: answer.body, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            .components(separatedBy: "\n").filter { $0.hasPrefix("data:") }
            .map { String($0.dropFirst("data:".count)).trimmingCharacters(in: .whitespaces) }
        guard events.last == "[DONE]", events.count >= 2 else {
            throw CPUEngineTestError(message: "the stream did not end in data: [DONE]: \(events)")
        }
        return try events.dropLast().map { try object(Data($0.utf8)) }
    }
}

/// A CPU engine test's own failure.
struct CPUEngineTestError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
