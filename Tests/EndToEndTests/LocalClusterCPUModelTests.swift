import Foundation
import GPUPlaneTestSupport
import Testing

/// The local cluster serving a real model on CPU, end to end: a Mode 3 pod names
/// `tiny-random-llama`; the scheduler starts its model server on the shared node; that node's
/// agent fetches the weights from the registry on loopback (an OCI artifact the cluster pushed)
/// into its cache, mounts them read-only and starts llama.cpp's server (the CPU engine image);
/// the seed's Python snippet (the `openai` client on `NXL_INFERENCE_URL`, as the reference
/// shows it) gets its completion through the inference gateway, and streamed too.
///
/// The model has random weights: the text is nonsense and is not checked, only that it came.
@Suite(.serialized, .timeLimit(.minutes(10)))
struct LocalClusterCPUModelTests {
    /// The reference's snippet, verbatim ("Using the injected inference endpoint").
    static let snippet = """
        import os
        from openai import OpenAI
        client = OpenAI(
        base_url=os.environ["NXL_INFERENCE_URL"],
        api_key="not-used", # URL is already owner-scoped
        )
        resp = client.chat.completions.create(
        model="llama-3.3-70b", # ignored; the slug in nexlayer.yaml wins
        messages=[{"role": "user", "content": "Hello!"}],
        )
        print(resp.choices[0].message.content)
        """

    /// The same call streamed (`stream=True`), reporting what came as one JSON line.
    static let streamedSnippet = """
        import json, os
        from openai import OpenAI
        client = OpenAI(base_url=os.environ["NXL_INFERENCE_URL"], api_key="not-used")
        stream = client.chat.completions.create(
            model="llama-3.3-70b",
            messages=[{"role": "user", "content": "Hello!"}],
            max_tokens=16,
            stream=True,
        )
        chunks, text, finish, models = 0, "", None, set()
        for chunk in stream:
            chunks += 1
            models.add(chunk.model)
            choice = chunk.choices[0]
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        print(json.dumps({"chunks": chunks, "finish": finish, "models": sorted(models), "chars": len(text)}))
        """

    static let manifest = """
        application:
          name: tiny-model
          pods:
            - name: client
              image: localhost/gpuplane-test-busybox:latest
              command: ["sh", "-c", "echo NXL_INFERENCE_URL=$NXL_INFERENCE_URL; exec sleep 100000"]
              gpu:
                enabled: true
                model: tiny-random-llama
        """

    @Test(
        .enabled(
            if: PodmanFixture.isAvailable && EtcdFixture.isAvailable && LocalCPUModel.isAvailable
                && TestEnvironment.hasExecutable(TinyRandomLlama.python),
            "needs root podman, etcd, the CPU engine image, gguf and openai in the tools venv (scripts/install-deps)"))
    func theSnippetGetsACompletionFromTheRealCPUModel() async throws {
        let cluster = try await LocalCluster.start(binaries: LocalClusterTests.binaries, cpuModel: true)
        do {
            let cpuModel = try #require(cluster.cpuModel)
            let token = try await cluster.tenant("cpu", plan: "pro")
            let applied = try await cluster.call("POST", "/v1/applications", token: token, body: Self.manifest)
            #expect(applied.status == 201, "\(String(decoding: applied.body, as: UTF8.self))")

            // The model server: placed on the shared node, weights fetched, the engine loaded.
            var server: [String: Any] = [:]
            try await eventually("the tiny-random-llama server is ready", timeout: 300, every: 0.5) {
                let items = try await cluster.json("GET", "/v1/modelservers", token: cluster.adminToken)["items"] as? [[String: Any]] ?? []
                server = items.first { ($0["spec"] as? [String: Any])?["slug"] as? String == TinyRandomLlama.slug } ?? [:]
                return (server["status"] as? [String: Any])?["ready"] as? Bool == true
            }
            #expect((server["binding"] as? [String: Any])?["node"] as? String == LocalCluster.sharedNodeName)
            let endpoint = try #require((server["status"] as? [String: Any])?["endpoint"] as? String)
            let models = try JSONSerialization.jsonObject(with: Data(try await cluster.get(endpoint + "/v1/models").utf8)) as? [String: Any]
            let listed = (models?["data"] as? [[String: Any]])?.first
            #expect(listed?["id"] as? String == TinyRandomLlama.slug)
            // llama-cpp-python's answer, not the stand-in's (which says owned_by gpuplane-stand-in).
            #expect(listed?["owned_by"] as? String != "gpuplane-stand-in")

            // The weights came through the shared node's cache, under the artifact's digest,
            // byte for byte what the cluster pushed.
            let entry = cluster.directory.appendingPathComponent("\(LocalCluster.sharedNodeName).weights/entries/oci-"
                + cpuModel.artifact.digest.replacingOccurrences(of: ":", with: "-"))
            let cached = try Data(contentsOf: entry.appendingPathComponent(TinyRandomLlama.fileName))
            let pushed = try Data(contentsOf: cluster.directory.appendingPathComponent("tiny-model/\(TinyRandomLlama.fileName)"))
            #expect(cached == pushed)

            // The pod and its NXL_INFERENCE_URL.
            let client = "gpuplane_cpu_tiny-model.client"
            var logs = ""
            try await eventually("the pod printed its inference URL", timeout: 120, every: 0.5) {
                logs = (try? await cluster.podman.podman(["logs", client])) ?? ""
                return logs.contains("NXL_INFERENCE_URL=http")
            }
            let line = try #require(logs.split(separator: "\n").first { $0.hasPrefix("NXL_INFERENCE_URL=") })
            let url = String(line.dropFirst("NXL_INFERENCE_URL=".count))
            #expect(url.hasPrefix(cluster.apiURL + "/v1/inference/cpu/tiny-random-llama/"), "\(url)")

            // The seed's snippet, as written, and streamed.
            let plain = try await Self.python(Self.snippet, url: url)
            #expect(plain.status == 0, "\(plain.output)")
            #expect(!plain.output.contains("Traceback"), "\(plain.output)")
            #expect(plain.output != "None\n", "the answer had no message content")
            let streamed = try await Self.python(Self.streamedSnippet, url: url)
            #expect(streamed.status == 0, "\(streamed.output)")
            let summaryLine = streamed.output.split(separator: "\n").last.map(String.init) ?? ""
            let summary = try #require(
                try JSONSerialization.jsonObject(with: Data(summaryLine.utf8)) as? [String: Any], "\(streamed.output)")
            #expect((summary["chunks"] as? Int ?? 0) >= 2, "\(summary)")
            #expect(["length", "stop"].contains(summary["finish"] as? String ?? ""), "\(summary)")
            #expect(summary["models"] as? [String] == [TinyRandomLlama.slug], "\(summary)")

            #expect(try await cluster.call("DELETE", "/v1/applications/tiny-model", token: token).status == 204)
        } catch {
            Issue.record("\(error)\n\(cluster.logTails())\n(all logs in \(cluster.directory.path))")
            await TestEnvironment.offPool { cluster.shutdown() }
            return
        }
        await TestEnvironment.offPool { cluster.shutdown() }
        try? FileManager.default.removeItem(at: cluster.directory)
    }

    /// Runs `source` with the tools venv's Python (which has `openai`), `NXL_INFERENCE_URL` set
    /// to `url` as in the pod.
    static func python(_ source: String, url: String) async throws -> (status: Int32, output: String) {
        let file = try TestEnvironment.temporaryDirectory(prefix: "snippet").appendingPathComponent("snippet.py")
        try source.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        return try await TestEnvironment.offPool("gpuplane-snippet") {
            try Command.run(TinyRandomLlama.python, [file.path], environment: ["NXL_INFERENCE_URL": url], timeout: .seconds(240))
        }
    }
}
