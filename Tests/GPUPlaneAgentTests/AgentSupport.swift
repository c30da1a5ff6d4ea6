import Synchronization
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

/// A step of the agent harness that could not be done.
struct AgentHarnessError: Error, CustomStringConvertible {
    let description: String
}

/// Whether the agent's integration tests can run: etcd, and podman as root.
let agentTestsAvailable = EtcdFixture.isAvailable && PodmanFixture.isAvailable

/// One real etcd and one in-process api-server for every agent test of this process, built
/// exactly as the api-server's own tests build theirs.
actor ControlPlane {
    static let shared = ControlPlane()

    struct Handle: Sendable {
        let etcd: EtcdFixture
        let client: Etcd.Client
        let deps: APIDependencies
        let base: String
        let admin: String
        var store: ResourceStore { deps.store }
    }

    private var starting: Task<Handle, any Error>?

    /// The one control plane (started by the first caller; later callers wait for it).
    func get() async throws -> Handle {
        if let starting { return try await starting.value }
        let task = Task { try await Self.start() }
        starting = task
        return try await task.value
    }

    private static func start() async throws -> Handle {
        try await startPrivate()
    }

    /// A control plane of its own (etcd and api-server) for a test that does what would
    /// disturb the others on ``shared`` (freezing etcd, say). Shut its etcd down when done.
    static func startPrivate() async throws -> Handle {
        let etcd = try await EtcdFixture.start()
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints))
        let admin = Tokens.generate()
        let quiet = Logger(label: "gpuplane.api") { _ in SwiftLogNoOpLogHandler() }
        var deps = APIDependencies(
            store: ResourceStore(client: client), catalog: try Catalog.standard(), adminTokens: [admin], heartbeatTTL: 5, bookmarkInterval: 0.5,
            logger: quiet)
        // Secrets (registry logins for image pulls) are sealed with a key of this run.
        deps.secretKeys = try SecretKeyring(keys: [(id: "agent-tests", key: Data((0..<32).map { _ in UInt8.random(in: 0...255) }))])
        return try await serve(deps, etcd: etcd, client: client, admin: admin).handle
    }

    /// Starts one more api-server on the same etcd (other bookmark interval…).
    func secondServer(bookmarkInterval: Double) async throws -> Handle {
        try await anotherServer(bookmarkInterval: bookmarkInterval).handle
    }

    /// Starts one more api-server on the same etcd, on `port` when given (where a stopped one
    /// listened), returning it with its running server (cancel its task to stop it).
    func anotherServer(bookmarkInterval: Double = 0.5, port: Int = 0) async throws -> (handle: Handle, server: RunningAPIServer) {
        let first = try await get()
        let quiet = Logger(label: "gpuplane.api") { _ in SwiftLogNoOpLogHandler() }
        let deps = APIDependencies(
            store: ResourceStore(client: first.client), catalog: try Catalog.standard(), adminTokens: [first.admin], heartbeatTTL: 5,
            bookmarkInterval: bookmarkInterval, logger: quiet)
        return try await Self.serve(deps, etcd: first.etcd, client: first.client, admin: first.admin, port: port)
    }

    private static func serve(
        _ deps: APIDependencies, etcd: EtcdFixture, client: Etcd.Client, admin: String, port: Int = 0
    ) async throws -> (handle: Handle, server: RunningAPIServer) {
        let server = try await startAPIServer(deps, port: port)
        let handle = Handle(etcd: etcd, client: client, deps: deps, base: server.base, admin: admin)
        try await eventually("api-server answers /healthz") {
            try await Self.call(handle, .get, "/healthz", token: nil).status == 200
        }
        return (handle, server)
    }

    static let http = CurlHTTP.Client(name: "agent-test-curl")

    static func call(_ handle: Handle, _ method: CurlHTTP.Method, _ path: String, token: String?, body: String? = nil) async throws -> CurlHTTP.Response {
        var headers: [CurlHTTP.Header] = [CurlHTTP.Header("Content-Type", "application/json")]
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        return try await http.perform(
            CurlHTTP.Request(method: method, url: handle.base + path, headers: headers, body: body.map { Data($0.utf8) }, timeout: .seconds(30)))
    }

    /// A user token of `tenant`, creating the tenant (plan pro) when it does not exist.
    static func userToken(_ handle: Handle, tenant: String) async throws -> String {
        let created = try await call(handle, .post, "/v1/tenants", token: handle.admin, body: #"{"name": "\#(tenant)", "plan": "pro"}"#)
        guard created.status == 201 || created.status == 409 else {
            throw AgentHarnessError(description: "tenant: HTTP \(created.status) \(String(decoding: created.body, as: UTF8.self))")
        }
        let reply = try await call(handle, .post, "/v1/tokens", token: handle.admin, body: #"{"role": "user", "tenant": "\#(tenant)"}"#)
        guard let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], let token = object["token"] as? String else {
            throw AgentHarnessError(description: "user token: HTTP \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
        }
        return token
    }

    /// A token for `node`.
    static func nodeToken(_ handle: Handle, node: String) async throws -> String {
        let reply = try await call(handle, .post, "/v1/tokens", token: handle.admin, body: #"{"role": "node", "node": "\#(node)"}"#)
        guard let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], let token = object["token"] as? String else {
            throw AgentHarnessError(description: "node token: HTTP \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
        }
        return token
    }
}

/// One test's world: a node name, its token, a tenant, fake GPUs, podman, and agents to run.
final class AgentWorld: @unchecked Sendable {
    let plane: ControlPlane.Handle
    let podman: PodmanFixture
    let engine: ContainerEngine.Client
    let node: String
    let tenant: String
    let token: String
    let nvml: FakeNVMLHost
    let gateway = "http://gateway.test:8081"
    private let lock = NSLock()
    private var running: [(NodeAgent, Task<Void, any Error>)] = []
    private let worldIndex = AgentWorld.worlds.add(1, ordering: .relaxed).oldValue
    private static let worlds = Atomic<Int>(0)

    /// A world on the shared podman, or on `podman` when given (one with a registry of its own).
    init(gpus: Int = 8, podman: PodmanFixture? = nil) async throws {
        plane = try await ControlPlane.shared.get()
        if let podman {
            self.podman = podman
            engine = ContainerEngine.Client(ContainerEngine.Configuration(socketPath: podman.socketPath, cdiGPUKind: podman.cdiKind))
        } else {
            (self.podman, engine) = try await SharedPodman.engine()
        }
        let word = UUID().uuidString.lowercased().prefix(8)
        node = "node-\(word)"
        tenant = "t-\(word)"
        token = try await ControlPlane.nodeToken(plane, node: node)
        nvml = try FakeNVMLHost(gpus: gpus)
    }

    var store: ResourceStore { plane.store }

    /// The node's API client (the agent's own; a test calling as the node may give its calls
    /// a longer deadline than the agent's 5 s, which a loaded full run outlived).
    func apiClient(base: String? = nil, requestTimeout: Duration = .seconds(5), watchIdleTimeout: Duration = .seconds(45)) -> NodeAPI.Client {
        NodeAPI.Client(NodeAPI.Configuration(
            baseURL: base ?? plane.base, token: token, requestTimeout: requestTimeout, watchIdleTimeout: watchIdleTimeout))
    }

    /// This world's host ports for model servers and deployment instances: a block of its own,
    /// because every world's agent publishes on 127.0.0.1 of this one machine, and two agents
    /// probing the same free port at once would both pick it (a real host has one agent).
    /// Above the local cluster's 20000-20999, which its end-to-end test uses meanwhile.
    var servingPorts: ClosedRange<Int> {
        let first = 21_000 + (worldIndex % 400) * 20
        return first...(first + 19)
    }

    /// Starts an agent for this world's node.
    @discardableResult
    func startAgent(
        nvmlPath: String? = nil, logger: Logger = Logger(label: "gpuplane.agent"), restartBackoff: Duration = .milliseconds(300),
        stopGracePeriod: Duration = .seconds(1), notifier: SystemdNotifier = .disabled,
        configure: (inout NodeAgentConfiguration) -> Void = { _ in }, registryLogins: RegistryLoginSource? = nil
    ) -> NodeAgent {
        var configuration = NodeAgentConfiguration(
            nodeName: node, gpuMode: "dedicated", gatewayBaseURL: gateway, nvmlLibraryPath: nvmlPath ?? nvml.libraryPath,
            heartbeatInterval: .seconds(1), resyncInterval: .seconds(2), stopGracePeriod: stopGracePeriod,
            restartBackoff: restartBackoff, restartBackoffMax: .seconds(2), healthPolicy: HealthPolicy(quietPeriod: .seconds(600)),
            modelServerPorts: servingPorts, logger: logger)
        configure(&configuration)
        let engine = ContainerEngine.Client(
            ContainerEngine.Configuration(socketPath: podman.socketPath, cdiGPUKind: podman.cdiKind, logger: logger))
        let agent = NodeAgent(
            configuration: configuration, api: apiClient(), engine: engine, notifier: notifier, registryLogins: registryLogins)
        let task = Task { try await agent.run() }
        lock.withLock { running.append((agent, task)) }
        return agent
    }

    /// Stops every agent this world started (their containers keep running).
    func stopAgents() async {
        let all = lock.withLock { () -> [(NodeAgent, Task<Void, any Error>)] in
            defer { running = [] }
            return running
        }
        for (_, task) in all {
            task.cancel()
            _ = try? await task.value
        }
    }

    /// A replica of this world's tenant, bound to this node on `gpus` unless `bound` is false.
    @discardableResult
    func createReplica(
        _ name: String, mode: GPUMode? = .dedicated, slug: String? = nil, gpus: [Int] = [], image: String? = nil,
        command: [String] = ["sh", "-c", "env; sleep 1000"], env: [String: String] = [:], bound: Bool = true
    ) async throws -> Replica {
        let spec = ReplicaSpec(
            owner: OwnerReference(kind: .application, name: "app", uid: "uid-app"), role: name, mode: mode, modelSlug: slug,
            gpus: gpus.count, vramGB: 0, machineTypes: [], priority: .inference, image: image ?? podman.testImage, env: env,
            command: command)
        let replica = Replica(
            metadata: ObjectMeta(name: "app.\(name)", tenant: tenant), spec: spec,
            binding: bound ? Binding(node: node, gpuIndices: gpus) : nil, status: ReplicaStatus(phase: bound ? .bound : .pending))
        return try await store.create(replica)
    }

    /// Changes a stored replica (retrying on conflicts), as the scheduler would.
    @discardableResult
    func updateReplica(_ name: String, _ change: (inout Replica) -> Void) async throws -> Replica {
        for _ in 0..<10 {
            var replica = try await store.get(Replica.self, tenant: tenant, name: "app.\(name)")
            change(&replica)
            do {
                return try await store.update(replica)
            } catch let error as StoreError where error.code == .conflict {
                continue
            }
        }
        throw AgentHarnessError(description: "replica \(name) kept changing")
    }

    func replica(_ name: String) async throws -> Replica {
        try await store.get(Replica.self, tenant: tenant, name: "app.\(name)")
    }

    func node() async throws -> Node {
        try await store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: node)
    }

    /// Waits until the replica's status satisfies `condition` and returns it.
    @discardableResult
    func waitForReplica(_ name: String, _ what: String, timeout: Double = 60, _ condition: @escaping (Replica) -> Bool) async throws -> Replica {
        var last: Replica?
        do {
            try await eventually("\(name): \(what)", timeout: timeout) {
                last = try await self.replica(name)
                return last.map(condition) ?? false
            }
        } catch {
            throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
        }
        return try await replica(name)
    }

    /// This node's containers, running or not.
    func containers() async throws -> [ContainerEngine.ContainerSummary] {
        try await engine.list(labels: [ContainerEngine.managedLabel.key: "true", ContainerPlan.nodeLabel: node])
    }

    /// The containers of one replica.
    func containers(of name: String) async throws -> [ContainerEngine.ContainerSummary] {
        try await containers().filter { $0.labels[ContainerPlan.replicaLabel] == "\(tenant)/app.\(name)" }
    }

    func output(_ id: String) async throws -> [String] {
        try await engine.logs(id, tail: nil).map(\.text)
    }

    /// Stops the agents and removes every container of this node.
    func tearDown() async {
        await stopAgents()
        for container in (try? await containers()) ?? [] {
            if (try? await engine.remove(container.id)) == nil {
                _ = try? await podman.podman(["rm", "--force", "--time", "0", container.id])
            }
        }
    }
}

/// Runs `body` in a fresh world, tearing it down afterwards even when the body throws.
func withAgentWorld(gpus: Int = 8, podman: PodmanFixture? = nil, _ body: (AgentWorld) async throws -> Void) async throws {
    let world = try await AgentWorld(gpus: gpus, podman: podman)
    do {
        try await body(world)
    } catch {
        await world.tearDown()
        throw error
    }
    await world.tearDown()
}
