import ArgumentParser
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneTestSupport
import Hummingbird
import Logging

/// `gpuplane-bench gateway`: inference requests per second and their latency through the
/// api-server's gateway, both doors (a pod's `NXL_INFERENCE_URL`, and a deployment at
/// `/v1/openai`), next to the same requests sent straight to the server behind it, in one run.
///
/// The server behind is a plainly named bench upstream in this process (Hummingbird answering a
/// fixed chat completion at once), so what the gateway adds is all there is to see.
struct GatewayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Starts etcd, an api-server and a bench upstream; measures completions/s and p50/p99 through the gateway vs straight to the upstream.")

    @OptionGroup var options: LoadOptions

    static let body = #"{"model": "auto", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}"#

    /// A fixed answer of the size of a short real one.
    static let answer = Data(
        #"{"id":"bench-1","object":"chat.completion","created":1763870000,"model":"bench-upstream","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? (bench upstream, not a model)"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}"#.utf8)

    func run() async throws {
        let bench = try await BenchServer(mode: options.server, name: "bench-gateway")
        defer { bench.stop() }
        let (deps, admin, logger, base, serverProcess) = (bench.deps, bench.admin, bench.logger, bench.base, bench.process)
        var tasks: [Task<Void, any Error>] = []
        defer { for task in tasks { task.cancel() } }
        let upstreamPort = TestEnvironment.freePort()
        let upstreamURL = "http://127.0.0.1:\(upstreamPort)"
        tasks.append(Task { try await Self.upstream(port: upstreamPort, logger: logger).runService(gracefulShutdownSignals: []) })

        let session = CurlHTTP.Client(name: "bench", maxConnections: 128)
        defer { session.shutdown() }
        try await eventually("api-server answers", timeout: 60) { try await APIBench.call(session, "GET", base + "/readyz").0 == 200 }
        try await eventually("bench upstream answers", timeout: 30) { try await APIBench.call(session, "GET", upstreamURL + "/v1/models").0 == 200 }
        let (podPath, token) = try await setUp(deps: deps, session: session, base: base, admin: admin, upstream: upstreamURL)
        let podURL = base + podPath + "/chat/completions"
        let openAIURL = base + "/v1/openai/chat/completions"
        let deployment = #"{"model": "bench/bench-llm", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}"#
        try await eventually("both gateway doors answer", timeout: 60) {
            let pod = try await Self.post(session, podURL)
            let openAI = try await Self.post(session, openAIURL, token: token, body: deployment)
            return pod == 200 && openAI == 200
        }

        print("etcd 1 member on loopback; api-server \(options.server == .process ? "as its own process" : "in this process"); bench upstream in this process; \(options.seconds)s per phase")
        print("clients  direct/s  p50/p99 ms     pod URL/s  ratio  p50/p99 ms     /v1/openai/s  ratio  p50/p99 ms     server CPU µs/req pod+openai")
        let load = options.phases
        let serverPID = serverProcess?.pid
        for count in options.clientCounts {
            let direct = try await load.run(workers: count, serverPID: serverPID) { _, _ in
                guard try await Self.post(session, upstreamURL + "/v1/chat/completions") == 200 else { throw ValidationError("upstream") }
            }
            let pod = try await load.run(workers: count, serverPID: serverPID) { _, _ in
                guard try await Self.post(session, podURL) == 200 else { throw ValidationError("pod URL") }
            }
            let openAI = try await load.run(workers: count, serverPID: serverPID) { _, _ in
                guard try await Self.post(session, openAIURL, token: token, body: deployment) == 200 else { throw ValidationError("/v1/openai") }
            }
            print(String(
                format: "%7d  %8.0f  %5.2f / %-6.2f  %9.0f  %5.2f  %5.2f / %-6.2f  %12.0f  %5.2f  %5.2f / %-6.2f  %6.0f + %-6.0f", count,
                direct.rate, direct.p50 * 1000, direct.p99 * 1000,
                pod.rate, pod.rate / direct.rate, pod.p50 * 1000, pod.p99 * 1000,
                openAI.rate, openAI.rate / direct.rate, openAI.p50 * 1000, openAI.p99 * 1000,
                pod.serverCPU, openAI.serverCPU))
        }
    }

    /// A tenant with a Mode 3 pod bound to a model server, and a deployment with one instance,
    /// both served by the bench upstream. Returns the pod's inference path and the tenant's token.
    func setUp(deps: APIDependencies, session: CurlHTTP.Client, base: String, admin: String, upstream: String) async throws -> (String, String) {
        _ = try await deps.store.create(Tenant(metadata: ObjectMeta(name: "bench"), spec: .init(plan: .scale)))
        let (status, body) = try await APIBench.call(session, "POST", base + "/v1/tokens", token: admin, body: #"{"tenant": "bench", "role": "user"}"#)
        guard status == 201, let token = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["token"] as? String else {
            throw ValidationError("could not issue a token: \(status)")
        }
        guard try await APIBench.call(session, "POST", base + "/v1/applications", token: token, body: APIBench.manifest(name: "gw")).0 == 201 else {
            throw ValidationError("could not apply the pod")
        }
        let server = ModelServer(
            metadata: ObjectMeta(name: "bench-upstream"),
            spec: .init(slug: "llama-3.1-8b", mode: .sharedPinned, vramGB: 20, serving: .init(image: "bench", args: ["--model", "bench-upstream"])),
            binding: Binding(node: "bench-node", gpuIndices: [0]),
            status: .init(ready: true, endpoint: upstream, attachedReplicas: ["bench/gw.api"]))
        _ = try await deps.store.create(server)
        var pod = try await deps.store.get(Replica.self, tenant: "bench", name: "gw.api")
        pod.binding = Binding(node: "bench-node", gpuIndices: [], modelServer: server.metadata.name)
        _ = try await deps.store.update(pod)
        guard let key = pod.spec.inferenceKey else { throw ValidationError("the pod's replica has no inference key") }

        let deployment = #"{"model_name": "bench-llm", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 256, "hf": {"repo": "org/bench-llm"}, "settings": {"min_instances": 1, "max_instances": 1}}"#
        guard try await APIBench.call(session, "POST", base + "/v1/deployments", token: token, body: deployment).0 == 201 else {
            throw ValidationError("could not create the deployment")
        }
        var instance = try await deps.store.get(Replica.self, tenant: "bench", name: ReplicaPlanner.replicaName(deployment: "bench-llm", index: 0))
        instance.binding = Binding(node: "bench-node", gpuIndices: [1])
        instance.status = ReplicaStatus(phase: .running, ready: true, endpoint: upstream)
        _ = try await deps.store.update(instance)
        return (InferenceEndpoint.path(tenant: "bench", slug: "llama-3.1-8b", key: key), token)
    }

    /// The bench upstream: a fixed chat completion at once, and `/v1/models`.
    static func upstream(port: Int, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        router.post("/v1/chat/completions") { request, _ -> Response in
            _ = try await request.body.collect(upTo: 1 << 20)
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer)))
        }
        router.get("/v1/models") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers,
                body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"object":"list","data":[{"id":"bench-upstream","object":"model"}]}"#)))
        }
        return Hummingbird.Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "gpuplane-bench-upstream"),
            logger: logger)
    }

    static func post(_ session: CurlHTTP.Client, _ url: String, token: String? = nil, body: String = GatewayBench.body) async throws -> Int {
        var headers = [CurlHTTP.Header("Content-Type", "application/json")]
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        return try await session.perform(CurlHTTP.Request(method: .post, url: url, headers: headers, body: Data(body.utf8))).status
    }
}
