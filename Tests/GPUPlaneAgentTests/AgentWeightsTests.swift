import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Logging
import Testing

/// Model servers whose weights the node-agent fetches from the real registry into its cache and
/// mounts read-only at /weights, on real podman. The serving image is the plainly named
/// stand-in (busybox), not an engine; what is checked is the agent's part: one fetch for two
/// servers, the mount, and the stage their status shows (fetching with bytes, loading, ready
/// with the load time, failed with the reason or the engine's last log lines).
@Suite(.enabled(if: agentTestsAvailable && RegistryFixture.isAvailable, "needs etcd, root with podman, and docker-registry"))
struct AgentWeightsTests {
    func server(_ world: AgentWorld, _ name: String, gpu: Int, weights: ServingWeights, args: [String] = []) -> ModelServer {
        let serving = ModelServer.Serving(
            image: world.podman.standInModelServerImage, args: ["--model", weights.enginePath] + args, port: 8000, weights: weights)
        return ModelServer(
            metadata: ObjectMeta(name: name), spec: .init(slug: "tiny-llama", mode: .sharedPinned, vramGB: 1, serving: serving),
            binding: Binding(node: world.node, gpuIndices: [gpu]))
    }

    func waitForServer(
        _ world: AgentWorld, _ name: String, _ what: String, timeout: Double = 90, _ condition: @escaping (ModelServer) -> Bool
    ) async throws -> ModelServer {
        var last: ModelServer?
        do {
            try await eventually("\(name): \(what)", timeout: timeout) {
                last = try await world.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
                return last.map(condition) ?? false
            }
        } catch {
            throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
        }
        return try #require(last)
    }

    func container(_ world: AgentWorld, _ name: String) async throws -> ContainerEngine.ContainerSummary {
        try #require(try await world.containers().first { $0.labels[ContainerPlan.modelServerLabel] == name })
    }

    func startAgent(_ world: AgentWorld, _ settings: WeightsCacheSettings) -> NodeAgent {
        world.startAgent(configure: { $0.weightsCache = settings })
    }

    @Test func twoServersShareOneFetchMountedReadOnlyAndReportTheirStage() async throws {
        try await withAgentWorld { world in
            let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
            defer { registry.shutdown() }
            let gguf = WeightsPush.bytes(200_000, seed: 21)
            try await WeightsPush.push([("tiny-random-llama.gguf", gguf)], as: "gpuplane/tiny-random-llama", tag: "v1", to: registry)
            let settings = try WeightsPush.settings(registry)
            let agent = startAgent(world, settings)
            let cache = try #require(agent.weightsCache)
            let weights = ServingWeights(
                source: "oci://\(registry.address)/gpuplane/tiny-random-llama:v1", file: "tiny-random-llama.gguf")
            let names = ["ms-w1-\(world.node)", "ms-w2-\(world.node)"]
            _ = try await world.store.create(server(world, names[0], gpu: 1, weights: weights))
            _ = try await world.store.create(server(world, names[1], gpu: 2, weights: weights))
            for name in names {
                let ready = try await waitForServer(world, name, "ready") { $0.status.ready }
                let loading = try #require(ready.status.container?.loading)
                #expect(loading.stage == .ready)
                #expect(loading.loadSeconds != nil)
                #expect(loading.fetchSeconds != nil)
                #expect(loading.bytesTotal == Int64(gguf.count))
            }
            // One fetch for both: one manifest's files transferred once.
            #expect(cache.statistics.fetches == 1)
            #expect(cache.statistics.filesFetched == 1)
            let address = try #require(cache.addresses.first)
            #expect(cache.addresses.count == 1)
            for name in names {
                let found = try await container(world, name)
                #expect(found.labels[ContainerPlan.weightsLabel] == address)
                // The engine was told the mounted file, and sees the fetched bytes there, read-only.
                try await eventually("stand-in logged its model") {
                    try await world.output(found.id).contains { $0.contains("model=/weights/tiny-random-llama.gguf") }
                }
                let size = try await world.podman.podman(["exec", found.id, "busybox", "wc", "-c", "/weights/tiny-random-llama.gguf"])
                #expect(size.contains("\(gguf.count)"), "\(size)")
                #expect(throws: (any Error).self) { try world.podman.podman(["exec", found.id, "busybox", "touch", "/weights/x"]) }
                let mounts = try await world.podman.podman(["inspect", "--format", "{{range .Mounts}}{{.Source}} {{.Destination}} {{.RW}};{{end}}", found.id])
                #expect(mounts.contains("\(settings.directory)/entries/\(address) /weights false"), "\(mounts)")
            }
            // While a container mounts the weights, a cache over its limit keeps them.
            cache.setInUse([])
            for name in names { try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name) }
            try await eventually("server containers removed") {
                try await world.containers().allSatisfy { $0.labels[ContainerPlan.modelServerLabel] == nil }
            }
        }
    }

    /// Weights a running container mounts are never evicted, even by a restarted agent whose
    /// cache is over its limit: the container's label says it uses them.
    @Test func aRestartedAgentNeverEvictsWeightsARunningServerMounts() async throws {
        try await withAgentWorld { world in
            let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
            defer { registry.shutdown() }
            try await WeightsPush.push([("a.gguf", WeightsPush.bytes(100_000, seed: 51))], as: "keep/a", tag: "v1", to: registry)
            try await WeightsPush.push([("b.gguf", WeightsPush.bytes(100_000, seed: 52))], as: "keep/b", tag: "v1", to: registry)
            // Room for one.
            let settings = try WeightsPush.settings(registry, limit: 150_000)
            startAgent(world, settings)
            let first = "ms-keep-a-\(world.node)"
            _ = try await world.store.create(server(
                world, first, gpu: 1, weights: ServingWeights(source: "oci://\(registry.address)/keep/a:v1", file: "a.gguf")))
            _ = try await waitForServer(world, first, "ready") { $0.status.ready }
            let mounted = try #require(try await container(world, first).labels[ContainerPlan.weightsLabel])

            await world.stopAgents()
            let second = startAgent(world, settings)
            let cache = try #require(second.weightsCache)
            #expect(cache.addresses == [mounted], "the restarted agent reads its cache back")
            let other = "ms-keep-b-\(world.node)"
            _ = try await world.store.create(server(
                world, other, gpu: 2, weights: ServingWeights(source: "oci://\(registry.address)/keep/b:v1", file: "b.gguf")))
            _ = try await waitForServer(world, other, "ready") { $0.status.ready }
            // Over the limit with both, and both in use: nothing evicted.
            #expect(cache.addresses.count == 2 && cache.addresses.contains(mounted))
            #expect(cache.cachedBytes > settings.sizeLimitBytes)
            let size = try await world.podman.podman(["exec", try await container(world, first).id, "busybox", "wc", "-c", "/weights/a.gguf"])
            #expect(size.contains("100000"))
            // The first server goes: its weights are the ones evicted.
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: first)
            try await eventually("the unused weights are evicted", timeout: 60) { !cache.addresses.contains(mounted) }
            #expect(cache.addresses.count == 1)
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: other)
        }
    }

    @Test func aFailedFetchIsReportedWithItsReason() async throws {
        try await withAgentWorld { world in
            let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"])
            defer { registry.shutdown() }
            try await WeightsPush.push([("w.gguf", WeightsPush.bytes(1000, seed: 22))], as: "team/w", tag: "v1", to: registry)
            startAgent(world, try WeightsPush.settings(registry))
            let name = "ms-missing-\(world.node)"
            let weights = ServingWeights(source: "oci://\(registry.address)/team/w:v9", file: "w.gguf")
            _ = try await world.store.create(server(world, name, gpu: 3, weights: weights))
            let failed = try await waitForServer(world, name, "weights failed") { $0.status.container?.reason == .weightsFailed }
            let status = try #require(failed.status.container)
            #expect(status.phase == .failed)
            #expect(status.message?.contains("team/w:v9") == true && status.message?.contains("not found") == true, "\(status)")
            #expect(status.loading?.stage == .failed)
            #expect(status.loading?.reason == .fetchFailed)
            #expect(failed.status.ready == false)
            #expect(try await world.containers().allSatisfy { $0.labels[ContainerPlan.modelServerLabel] != name })

            // The tag appears: the next try after the backoff fetches it and the server starts.
            try await WeightsPush.push([("w.gguf", WeightsPush.bytes(1000, seed: 22))], as: "team/w", tag: "v9", to: registry)
            _ = try await waitForServer(world, name, "ready once the tag exists") { $0.status.ready }
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
        }
    }

    @Test func progressIsVisibleInTheStatusMidFetch() async throws {
        try await withAgentWorld { world in
            let registry = try await RegistryFixture.start(users: ["ops": "weights-pass"], throttle: 8_000_000)
            defer { registry.shutdown() }
            try await WeightsPush.push([("big.gguf", WeightsPush.bytes(16_000_000, seed: 23))], as: "slow/w", tag: "v1", to: registry)
            startAgent(world, try WeightsPush.settings(registry))
            try registry.holdThrottledPulls()
            defer { registry.releaseThrottledPulls() }
            let name = "ms-slow-\(world.node)"
            let weights = ServingWeights(source: "oci://\(try #require(registry.throttledAddress))/slow/w:v1", file: "big.gguf")
            _ = try await world.store.create(server(world, name, gpu: 4, weights: weights))
            let fetching = try await waitForServer(world, name, "fetching, held midway") {
                guard let loading = $0.status.container?.loading, loading.stage == .fetching else { return false }
                return (loading.bytesDone ?? 0) >= 8_000_000 && loading.bytesTotal == 16_000_000
            }
            let status = try #require(fetching.status.container)
            #expect(status.phase == .starting && status.reason == .fetchingWeights)
            #expect(status.message?.hasPrefix("fetching weights ") == true && status.message?.hasSuffix("/16.0 MB") == true, "\(status)")
            registry.releaseThrottledPulls()
            let ready = try await waitForServer(world, name, "ready") { $0.status.ready }
            #expect(ready.status.container?.loading?.stage == .ready)
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
        }
    }

    @Test func aHostPathIsMountedReadOnlyAsItIs() async throws {
        try await withAgentWorld { world in
            let folder = try TestEnvironment.temporaryDirectory(prefix: "host-weights")
            try Data("host gguf".utf8).write(to: folder.appendingPathComponent("m.gguf"))
            let agent = startAgent(world, try WeightsPush.settings(nil))
            let name = "ms-host-\(world.node)"
            _ = try await world.store.create(server(world, name, gpu: 5, weights: ServingWeights(source: folder.path, file: "m.gguf")))
            _ = try await waitForServer(world, name, "ready") { $0.status.ready }
            let found = try await container(world, name)
            #expect(try await world.podman.podman(["exec", found.id, "busybox", "cat", "/weights/m.gguf"]).contains("host gguf"))
            #expect(throws: (any Error).self) { try world.podman.podman(["exec", found.id, "busybox", "touch", "/weights/x"]) }
            // Nothing copied into the cache.
            #expect(agent.weightsCache?.addresses.isEmpty == true)
            #expect(agent.weightsCache?.statistics.fetches == 0)

            // A weights file missing from the path: failed, naming it.
            let missing = "ms-host-missing-\(world.node)"
            _ = try await world.store.create(server(world, missing, gpu: 6, weights: ServingWeights(source: folder.path, file: "other.gguf")))
            let failed = try await waitForServer(world, missing, "weights missing") { $0.status.container?.loading?.reason == .weightsMissing }
            #expect(failed.status.container?.message?.contains("other.gguf") == true)
            for server in [name, missing] { try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: server) }
        }
    }

    @Test func anEngineThatExitsIsFailedWithItsLastLogLines() async throws {
        try await withAgentWorld { world in
            let folder = try TestEnvironment.temporaryDirectory(prefix: "host-weights")
            try Data("x".utf8).write(to: folder.appendingPathComponent("m.gguf"))
            startAgent(world, try WeightsPush.settings(nil))
            let name = "ms-exit-\(world.node)"
            // The stand-in cannot listen on port "bogus": it logs its banner and exits.
            _ = try await world.store.create(server(
                world, name, gpu: 7, weights: ServingWeights(source: folder.path, file: "m.gguf"), args: ["--port", "bogus"]))
            let failed = try await waitForServer(world, name, "engine exited") { $0.status.container?.loading?.reason == .engineExited }
            let loading = try #require(failed.status.container?.loading)
            #expect(loading.stage == .failed)
            #expect(loading.logTail?.contains { $0.contains("gpuplane stand-in model server") } == true, "\(loading)")
            try await world.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
        }
    }
}

/// A deployment whose instances' node-agents fetch its Hugging Face weights (the api-server's
/// `deployment-weights node-agent`), from a loopback stand-in of the Hub, with the token of the
/// tenant secret `hf.token_secret` names.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AgentDeploymentWeightsTests {
    @Test func anInstanceGetsItsHuggingFaceWeightsWithTheTenantsTokenNeverLogged() async throws {
        let lines = LogRecorder()
        let logger = lines.logger()
        try await withAgentWorld { world in
            let token = "hf_tenant_token_\(UUID().uuidString.prefix(8))"
            let hub = try await HuggingFaceHubStandIn(token: token)
            defer { hub.shutdown() }
            let gguf = WeightsPush.bytes(80_000, seed: 41)
            try hub.add("acme/chat", [("model.safetensors", gguf), ("config.json", Data(#"{"model_type": "llama"}"#.utf8))])
            let user = try await ControlPlane.userToken(world.plane, tenant: world.tenant)
            let created = try await ControlPlane.call(
                world.plane, .post, "/v1/secrets", token: user, body: #"{"name": "hf", "data": {"token": "\#(token)"}}"#)
            #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
            var settings = try WeightsPush.settings(nil)
            settings.huggingFaceEndpoint = hub.endpoint
            let agent = world.startAgent(logger: logger, configure: { $0.weightsCache = settings })

            var spec = DeploymentSpec(
                modelName: "chat", gpu: "H100-80GB", numGPUs: 1, maxBatchSize: 4,
                hf: HuggingFaceWeights(repo: "acme/chat", tokenSecret: "hf"), settings: DeploymentSettings(minInstances: 1, maxInstances: 1))
            spec.fetchWeights = true
            let deployment = Deployment(metadata: ObjectMeta(name: "chat", tenant: world.tenant, uid: "uid-chat"), spec: spec)
            let planner = ReplicaPlanner(catalog: try Catalog.standard(), deploymentImage: world.podman.standInModelServerImage)
            var replica = planner.replica(for: deployment, index: 0)
            #expect(replica.spec.weights == ServingWeights(source: "hf://acme/chat@main", tokenSecret: "hf"))
            #expect(replica.spec.command?.prefix(2) == ["--model", "/weights"])
            #expect(replica.spec.secretEnv == [ServingWeights.tokenVariable: SecretReference(secret: "hf")])
            replica.binding = Binding(node: world.node, gpuIndices: [1])
            replica.status = ReplicaStatus(phase: .bound)
            _ = try await world.store.create(replica)
            var last: Replica?
            do {
                try await eventually("the instance is ready", timeout: 90) {
                    last = try await world.store.get(Replica.self, tenant: world.tenant, name: replica.metadata.name)
                    return last?.status.ready == true
                }
            } catch {
                throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
            }
            let ready = try #require(last)
            #expect(ready.status.loading?.stage == .ready)
            #expect(ready.status.loading?.bytesTotal == Int64(gguf.count + 23))
            let container = try #require(try await world.containers().first { $0.labels[ContainerPlan.replicaLabel] == ContainerPlan.key(replica) })
            let size = try await world.podman.podman(["exec", container.id, "busybox", "wc", "-c", "/weights/model.safetensors"])
            #expect(size.contains("\(gguf.count)"))
            #expect(agent.weightsCache?.statistics.fetches == 1)
            // The Hub got the token on every call; no log line and no status carries it.
            let fetches = hub.requests.split(separator: "\n").filter { !$0.hasPrefix("/health") }
            #expect(!fetches.isEmpty && fetches.allSatisfy { $0.hasSuffix("auth=yes") }, "\(hub.requests)")
            #expect(!lines.all.isEmpty && !lines.all.contains { $0.contains(token) })
            let statusJSON = String(decoding: try JSONEncoder().encode(ready.status), as: UTF8.self)
            #expect(!statusJSON.contains(token))

            try await world.store.delete(Replica.self, tenant: world.tenant, name: replica.metadata.name)
            try await eventually("instance container removed") {
                try await world.containers().allSatisfy { $0.labels[ContainerPlan.replicaLabel] != ContainerPlan.key(replica) }
            }
        }
    }
}
