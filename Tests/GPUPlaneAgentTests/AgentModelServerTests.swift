import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// Model servers (Mode 2/3) run by the node-agent: the serving image on exactly its GPU,
/// published on a host port, reported ready only once `/v1/models` answers. The serving image
/// is the plainly named stand-in (busybox httpd), not vLLM.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AgentModelServerTests {
    static let model = "microsoft/Phi-3.5-mini-instruct"

    func server(_ world: AgentWorld, _ name: String, gpu: Int, serving: ModelServer.Serving?) -> ModelServer {
        ModelServer(
            metadata: ObjectMeta(name: name), spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10, serving: serving),
            binding: Binding(node: world.node, gpuIndices: [gpu]))
    }

    func serverContainers(_ world: AgentWorld, _ name: String) async throws -> [ContainerEngine.ContainerSummary] {
        try await world.containers().filter { $0.labels[ContainerPlan.modelServerLabel] == name }
    }

    func waitForServer(
        _ world: AgentWorld, _ name: String, _ what: String, _ condition: @escaping (ModelServer) -> Bool
    ) async throws -> ModelServer {
        var last: ModelServer?
        do {
            try await eventually("\(name): \(what)", timeout: 60) {
                last = try await world.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
                return last.map(condition) ?? false
            }
        } catch {
            throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
        }
        return try #require(last)
    }

    @Test func startsOnItsGPUIsReadyOnlyOnceV1ModelsAnswersIsAdoptedAndStopsWhenDeleted() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            let name = "ms-\(world.node)"
            let serving = ModelServer.Serving(
                image: world.podman.standInModelServerImage,
                args: ["--model", Self.model, "--max-model-len", "8192", "--hold-until", "/tmp/loaded"], port: 8000)
            _ = try await world.store.create(server(world, name, gpu: 5, serving: serving))

            // Running, but the stand-in holds back like a server still loading weights: not ready.
            let loading = try await waitForServer(world, name, "container running, not ready") {
                $0.status.container?.phase == .running && $0.status.endpoint != nil
            }
            #expect(loading.status.ready == false)
            #expect(loading.status.container?.message?.contains("/v1/models") == true)
            let containers = try await serverContainers(world, name)
            let container = try #require(containers.first)
            #expect(containers.count == 1)
            // Exactly GPU 5, as the stand-in saw it from inside (the fake CDI devices set env).
            try await eventually("stand-in logged its GPUs") {
                try await world.output(container.id).contains {
                    $0.contains("gpus=5, ") && $0.contains("model=\(Self.model)") && $0.contains("slug=phi-3.5-mini")
                }
            }
            #expect(try await world.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name).status.ready == false)

            // Weights "loaded": /v1/models answers, and only now is the server ready.
            try await world.podman.podman(["exec", container.id, "touch", "/tmp/loaded"])
            let ready = try await waitForServer(world, name, "ready") { $0.status.ready }
            let endpoint = try #require(ready.status.endpoint)
            #expect(endpoint.hasPrefix("http://127.0.0.1:"))
            #expect(ready.status.container?.message == nil)
            let models = try await ControlPlane.http.perform(CurlHTTP.Request(url: endpoint + "/v1/models", timeout: .seconds(5)))
            #expect(models.status == 200)
            #expect(String(decoding: models.body, as: UTF8.self).contains("\"id\":\"\(Self.model)\""))

            // A restarted agent adopts the server without restarting it and keeps it ready.
            let startedAt = try await world.engine.inspect(container.id).state.startedAt
            await world.stopAgents()
            let second = world.startAgent()
            try await eventually("second agent reconciled") { second.lastSummary?.running == 1 }
            #expect(try await serverContainers(world, name).map(\.id) == [container.id])
            #expect(try await world.engine.inspect(container.id).state.startedAt == startedAt)
            let adopted = try await world.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
            #expect(adopted.status.ready)
            #expect(adopted.status.endpoint == endpoint)

            // Deleted by the scheduler (idle, or its node drained): the container goes.
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
            try await eventually("server container removed") { try await serverContainers(world, name).isEmpty }
        }
    }

    /// A deployment instance serves the OpenAI protocol itself: its port is published like a
    /// model server's, and the replica's own status says when it is ready and where, which is
    /// what the gateway routes on.
    @Test func aDeploymentInstanceIsPublishedAndReportsReadyAndWhere() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            let deployment = Deployment(
                metadata: ObjectMeta(name: "chat-x", tenant: world.tenant, uid: "uid-deploy"),
                spec: DeploymentSpec(
                    modelName: "chat-x", gpu: "H100-80GB", numGPUs: 2, maxBatchSize: 4, hf: HuggingFaceWeights(repo: "org/chat-x"),
                    settings: DeploymentSettings(minInstances: 1, maxInstances: 1)))
            let planner = ReplicaPlanner(catalog: try Catalog.standard(), deploymentImage: world.podman.standInModelServerImage)
            var replica = planner.replica(for: deployment, index: 0)
            replica.binding = Binding(node: world.node, gpuIndices: [2, 3])
            replica.status = ReplicaStatus(phase: .bound)
            _ = try await world.store.create(replica)
            var last: Replica?
            do {
                try await eventually("the instance is ready", timeout: 60) {
                    last = try await world.store.get(Replica.self, tenant: world.tenant, name: replica.metadata.name)
                    return last?.status.ready == true
                }
            } catch {
                throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
            }
            let ready = try #require(last)
            #expect(ready.status.phase == .running)
            let endpoint = try #require(ready.status.endpoint)
            #expect(endpoint.hasPrefix("http://127.0.0.1:"))
            // It answers to the deployment's full name, on exactly its two GPUs.
            let answer = try await ControlPlane.http.perform(
                CurlHTTP.Request(
                    method: .post, url: endpoint + "/v1/chat/completions", headers: [CurlHTTP.Header("Content-Type", "application/json")],
                    body: Data(#"{"model": "\#(deployment.fullName)", "messages": []}"#.utf8), timeout: .seconds(10)))
            #expect(answer.status == 200)
            #expect(String(decoding: answer.body, as: UTF8.self).contains("from \(deployment.fullName) on gpus 2,3,"))

            try await world.store.delete(Replica.self, tenant: world.tenant, name: replica.metadata.name)
            try await eventually("instance container removed") {
                try await world.containers().allSatisfy { $0.labels[ContainerPlan.replicaLabel] != ContainerPlan.key(replica) }
            }
        }
    }

    @Test func serverWithoutServingImageFailsWithAReason() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            let name = "ms-bare-\(world.node)"
            _ = try await world.store.create(server(world, name, gpu: 1, serving: nil))
            let failed = try await waitForServer(world, name, "failed") { $0.status.container?.phase == .failed }
            #expect(failed.status.container?.message?.contains("spec.serving") == true)
            #expect(failed.status.ready == false)
            #expect(try await serverContainers(world, name).isEmpty)
        }
    }
}
