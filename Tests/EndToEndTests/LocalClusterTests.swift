import Foundation
import GPUPlaneTestSupport
import Testing

/// The README's main job, as a test: the real daemons, etcd, podman with fake GPUs; an
/// application is applied, placed by the scheduler, started by the node-agent on exactly its
/// GPU, and stopped when deleted.
@Suite(.serialized, .timeLimit(.minutes(10))) struct LocalClusterTests {
    static var binaries: URL {
        // The test bundle sits beside the executables in .build/<configuration>/.
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1, !FileManager.default.fileExists(atPath: url.appendingPathComponent("gpuplane-api-server").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable))
    func applyPlaceRunAndDelete() async throws {
        let cluster = try await LocalCluster.start(binaries: Self.binaries)
        do {
            let token = try await cluster.tenant("e2e", plan: "enterprise")
            let manifest = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/local-gpu-app.yaml"), encoding: .utf8)
            let applied = try await cluster.call("POST", "/v1/applications", token: token, body: manifest)
            #expect(applied.status == 201)

            var replica: [String: Any] = [:]
            try await eventually("placed and running", timeout: 120, every: 0.25) {
                replica = (try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]])?.first ?? [:]
                return (replica["status"] as? [String: Any])?["phase"] as? String == "running"
            }
            let binding = try #require(replica["binding"] as? [String: Any])
            #expect(binding["node"] as? String == cluster.nodeName)
            // Both nodes registered moments ago and never stopped: neither was ever NotReady.
            let nodeEvents = try await cluster.json("GET", "/v1/events?kind=nodes", token: cluster.adminToken)["items"] as? [[String: Any]] ?? []
            #expect(
                !nodeEvents.contains { ($0["spec"] as? [String: Any])?["reason"] as? String == "NodeNotReady" },
                "\(nodeEvents.map { ($0["spec"] as? [String: Any])?["message"] ?? "" })")
            let gpus = try #require(binding["gpuIndices"] as? [Int])
            #expect(gpus.count == 1)
            let index = try #require(gpus.first)

            // From inside the container: exactly its GPU, and the env contract.
            let name = "gpuplane_e2e_hello-gpu.worker"
            var logs = ""
            try await eventually("the container printed its GPU") {
                logs = (try? await cluster.podman.podman(["logs", name])) ?? ""
                return logs.contains("GPUPLANE_FAKE_GPU_INDEX=")
            }
            // The host's GPU `index` is the container's GPU 0 ("Your container gets
            // NXL_GPU_INDEX=0"); the fake NVML's variable names the host's index.
            #expect(logs.contains("NXL_GPU_INDEX=0\n"), "\(logs)")
            #expect(logs.contains("NXL_GPU_INDICES=0\n"), "\(logs)")
            #expect(logs.contains("GPUPLANE_FAKE_GPU_INDEX=\(index)\n"))
            #expect(logs.contains("GPUPLANE_FAKE_GPU_UUID=\(cluster.podman.fakeGPUs[index].uuid)\n"))
            #expect(logs.components(separatedBy: "_UUID=").count == 3, "exactly one GPU's CDI edits: \(logs)")

            // Mode 3: a shared pinned model. The scheduler starts a model server on the shared
            // node; its agent runs the serving image (the stand-in) and reports it ready once
            // /v1/models answers; the pod runs with NXL_INFERENCE_URL.
            let shared = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/local-shared-model.yaml"), encoding: .utf8)
            #expect(try await cluster.call("POST", "/v1/applications", token: token, body: shared).status == 201)
            var server: [String: Any] = [:]
            try await eventually("a model server ready on the shared node", timeout: 120, every: 0.25) {
                server = (try await cluster.json("GET", "/v1/modelservers", token: cluster.adminToken)["items"] as? [[String: Any]])?.first ?? [:]
                return (server["status"] as? [String: Any])?["ready"] as? Bool == true
            }
            #expect((server["binding"] as? [String: Any])?["node"] as? String == LocalCluster.sharedNodeName)
            #expect((server["spec"] as? [String: Any])?["slug"] as? String == "phi-3.5-mini")
            let endpoint = try #require((server["status"] as? [String: Any])?["endpoint"] as? String)
            let models = try await cluster.get(endpoint + "/v1/models")
            // The server answers to its slug (the catalog's `--served-model-name`).
            #expect(models.contains("\"id\":\"phi-3.5-mini\""), "\(models)")
            try await eventually("the Mode 3 pod runs", timeout: 120, every: 0.25) {
                let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
                return items.contains {
                    ($0["metadata"] as? [String: Any])?["name"] as? String == "hello-model.client"
                        && ($0["status"] as? [String: Any])?["phase"] as? String == "running"
                }
            }
            let client = "gpuplane_e2e_hello-model.client"
            try await eventually("the pod printed its inference URL") {
                ((try? await cluster.podman.podman(["logs", client])) ?? "").contains("NXL_INFERENCE_URL=http")
            }
            // The pod's URL, called as the pod would (no token, any model name), reaches the
            // model server on its GPU through the api-server's inference gateway.
            let line = try await cluster.podman.podman(["logs", client]).split(separator: "\n").first { $0.hasPrefix("NXL_INFERENCE_URL=") }
            let url = String(try #require(line).dropFirst("NXL_INFERENCE_URL=".count))
            #expect(url.hasPrefix(cluster.apiURL + "/v1/inference/e2e/phi-3.5-mini/"), "\(url)")
            let serverGPU = try #require(((server["binding"] as? [String: Any])?["gpuIndices"] as? [Int])?.first)
            var answer = (status: 0, body: Data())
            try await eventually("a chat completion through the pod's URL", timeout: 60, every: 0.25) {
                answer = try await cluster.post(url + "/chat/completions", json: #"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#)
                return answer.status == 200
            }
            let reply = String(decoding: answer.body, as: UTF8.self)
            #expect(reply.contains("stand-in reply (not a model) from phi-3.5-mini on gpus \(serverGPU),"), "\(reply)")

            // A custom LLM deployment, DeepInfra-style, scaled to zero (min_instances 0): the
            // first call through /v1/openai (the tenant's token, model "<owner>/<model_name>") is
            // held while the gateway reports it cold, the scheduler's autoscaler adds an instance,
            // the scheduler places it on a whole H100 of the dedicated node and its agent
            // publishes and probes it; then that same call is answered by it.
            let deployment = #"{"model_name": "e2e-llm", "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 4, "hf": {"repo": "org/e2e-llm"}, "settings": {"min_instances": 0, "max_instances": 1}}"#
            let created = try await cluster.call("POST", "/v1/deployments", token: token, body: deployment)
            #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
            let call = #"{"model": "e2e/e2e-llm", "messages": [{"role": "user", "content": "hi"}]}"#
            let completion = try await cluster.call("POST", "/v1/openai/chat/completions", token: token, body: call, timeout: .seconds(150))
            #expect(completion.status == 200, "\(String(decoding: completion.body, as: UTF8.self))")
            let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
            let instance = try #require(items.first { ($0["metadata"] as? [String: Any])?["name"] as? String == "deploy.e2e-llm.0" })
            #expect((instance["binding"] as? [String: Any])?["node"] as? String == cluster.nodeName)
            let instanceGPU = try #require(((instance["binding"] as? [String: Any])?["gpuIndices"] as? [Int])?.first)
            #expect(String(decoding: completion.body, as: UTF8.self).contains("from e2e/e2e-llm on gpus \(instanceGPU),"))
            #expect(try await cluster.call("DELETE", "/v1/deployments/e2e-llm", token: token).status == 204)

            // Deleting the application stops the container.
            #expect(try await cluster.call("DELETE", "/v1/applications/hello-gpu", token: token).status == 204)
            try await eventually("the container is gone", timeout: 60) {
                !((try? await cluster.podman.podman(["ps", "--format", "{{.Names}}"])) ?? name).contains(name)
            }
        } catch {
            Issue.record("\(error)\n\(cluster.logTails())\n(all logs in \(cluster.directory.path))")
            await TestEnvironment.offPool { cluster.shutdown() }
            return
        }
        await TestEnvironment.offPool { cluster.shutdown() }
        // Passed: its logs are of no more use (a failed run keeps them, and says where).
        try? FileManager.default.removeItem(at: cluster.directory)
    }
}
