import EtcdClient
import Foundation
@testable import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Logging
import Testing


/// A call to a deployment at zero instances is held while the autoscaler starts one, then
/// answered: against a real etcd, a live api-server of the test's own (its own
/// `inference-queue-timeout`) and the real `gpuplane-scheduler` executable. The test plays the
/// node-agent: it starts the stand-in model server (not a model) as the instance's engine and
/// reports the instance ready, as an agent does once `/v1/models` answers.
@Suite(.timeLimit(.minutes(6))) struct ScaleFromZeroTests {
    static let chatBody = #"{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}"#

    @Test func heldCallersShareOneStartAndAreAnsweredOnceItIsReady() async throws {
        let c = try await ColdCluster.start(queueTimeout: .seconds(300), scheduler: true)
        defer { c.stop() }
        let h = c.h
        let (tenant, token) = try await h.tenant(.pro)
        try await c.addNode("n-cold")
        let name = "cold-x"
        let model = try await c.deployment(token: token, tenant: tenant, name: name, batch: 4, max: 3)
        let key = model
        let gateway = h.deps.gateway
        let fromRevision = try await h.client.status().header.revision
        // Nothing runs: min_instances 0.
        #expect(try await c.instances(tenant, name).isEmpty)

        // Three plain callers, one streaming and one that hangs up after a few seconds.
        let body = Self.chatBody.replacingOccurrences(of: "MODEL", with: model)
        let plain = (0..<3).map { _ in Task { try await c.call("/v1/openai/chat/completions", token: token, body: body) } }
        let streamed = c.directory.appendingPathComponent("stream.txt")
        let stream = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: [
                "-sN", "-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json", "-d",
                body.replacingOccurrences(of: #""messages""#, with: #""stream": true, "messages""#), h.base + "/v1/openai/chat/completions",
            ],
            logFile: streamed)
        defer { stream.kill9() }
        try await eventually("four callers held", timeout: 60) { gateway.admission.held(key) == 4 }
        let quitter = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-s", "-H", "Authorization: Bearer \(token)", "-d", body, h.base + "/v1/openai/chat/completions"],
            logFile: c.directory.appendingPathComponent("quitter.txt"))
        defer { quitter.kill9() }
        // Held (counted for the load reports) a moment before it waits for the wake-up.
        try await eventually("five callers held and waiting", timeout: 60) {
            gateway.admission.held(key) == 5 && gateway.coldStarts.waiting(key) == 5
        }
        // One hangs up: it is let go, the others keep waiting.
        quitter.kill9()
        try await eventually("the caller that hung up is no longer held nor waiting", timeout: 60) {
            gateway.admission.held(key) == 4 && gateway.coldStarts.waiting(key) == 4
        }

        // While they wait the reports say cold, with them queued: the scheduler wants one
        // instance, not one per caller, and places it.
        #expect(
            try await DeploymentGatewayTests.sawReport(h, prefix: DeploymentLoad.prefix + "\(tenant)/\(name)/", from: fromRevision) {
                $0.cold && ($0.queued ?? 0) >= 4 && $0.peak == 0
            }, "no cold report with the held callers queued")
        try await eventually("one instance, placed", timeout: 60) {
            let mine = try await c.instances(tenant, name)
            return mine.count == 1 && mine.allSatisfy { $0.binding != nil }
        }
        #expect(try await h.deps.store.get(Deployment.self, tenant: tenant, name: name).status.instancesWanted == 1)
        // Placed is not ready: nobody has been answered.
        #expect(gateway.admission.held(key) == 4)
        #expect(!(try String(contentsOf: streamed, encoding: .utf8)).contains("data:"))

        // The instance's engine comes up and the agent reports it ready: the held calls go to it.
        let port = TestEnvironment.freePort()
        let release = c.directory.appendingPathComponent("release-stream")
        let standIn = try StandInModelServer.start(
            in: c.directory, port: port, arguments: ["--model", "org/\(name)", "--served-model-name", model, "--stand-in-hold-stream", release.path])
        defer { standIn.kill9() }
        try await eventually("the engine answers /v1/models", timeout: 60) {
            await Harness.text(at: "http://127.0.0.1:\(port)/v1/models")?.contains(model) == true
        }
        try await c.report(tenant, ReplicaPlanner.replicaName(deployment: name, index: 0), readyAt: "http://127.0.0.1:\(port)")
        for call in plain {
            let answer = try await call.value
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.text.contains("stand-in reply (not a model) from \(model)"), "\(answer.text)")
        }
        func text() -> String { (try? String(contentsOf: streamed, encoding: .utf8)) ?? "" }
        // Held, then streamed chunk by chunk: the first part is here while the engine holds the rest.
        try await eventually("the held stream's first chunk") { text().contains("part 1 of") }
        #expect(!text().contains("part 2 of"))
        FileManager.default.createFile(atPath: release.path, contents: nil)
        try await eventually("the rest of the stream") { text().contains("data: [DONE]") }
        #expect(gateway.admission.held(key) == 0)
        #expect(gateway.coldStarts.waiting(key) == 0)

        // One start for all of them: still one instance after more autoscaler rounds, and the
        // scheduler's event says 0 → 1.
        let rounds = try await h.client.status().header.revision
        try await eventually("a later load report") {
            try await h.client.range(.prefix(DeploymentLoad.prefix + "\(tenant)/\(name)/")).kvs.contains { $0.modRevision > rounds }
        }
        #expect(try await c.instances(tenant, name).map(\.metadata.name) == [ReplicaPlanner.replicaName(deployment: name, index: 0)])
        #expect(try await h.deps.store.get(Deployment.self, tenant: tenant, name: name).status.instancesWanted == 1)
        var scaled: [String] = []
        try await eventually("the Scaled event") {
            scaled = try await h.deps.store.list(Event.self, tenant: tenant).items
                .filter { $0.spec.involved.name == name && $0.spec.reason == "Scaled" }.map(\.spec.message)
            return scaled.contains { $0.contains("from 0 to 1") }
        }
        #expect(!scaled.contains { $0.contains("to 2") }, "\(scaled)")
    }

    @Test func aHoldThatRunsOutIsAClearErrorNamingTheTimeout() async throws {
        // No scheduler: nothing ever starts.
        let c = try await ColdCluster.start(queueTimeout: .seconds(2), scheduler: false)
        defer { c.stop() }
        let h = c.h
        let (tenant, token) = try await h.tenant(.pro)
        let model = try await c.deployment(token: token, tenant: tenant, name: "never", batch: 1, max: 1)
        let fromRevision = try await h.client.status().header.revision
        let answer = try await c.call("/v1/openai/chat/completions", token: token, body: Self.chatBody.replacingOccurrences(of: "MODEL", with: model))
        #expect(answer.status == 503, "\(answer.text)")
        #expect(answer.errorCode == "unavailable")
        #expect(answer.errorMessage.contains("no instance of \(model) became ready within 2 s"), "\(answer.text)")
        #expect(answer.errorMessage.contains("inference-queue-timeout"), "\(answer.text)")
        #expect(answer.headers["retry-after"] == "5")
        #expect(h.deps.gateway.admission.held(model) == 0)
        #expect(h.deps.gateway.coldStarts.waiting(model) == 0)
        // It was demand while it waited.
        #expect(
            try await DeploymentGatewayTests.sawReport(h, prefix: DeploymentLoad.prefix + "\(tenant)/never/", from: fromRevision) { $0.cold },
            "no cold report")
    }
}

/// The wait itself: woken by a change, bounded by its deadline, left when cancelled.
@Suite struct ColdStartsTests {
    @Test func wakeTimeoutAndCancel() async throws {
        let cold = ColdStarts()
        let ready = Locked(false)
        let woken = Task { try await cold.wait(for: "t/d", until: .now + .seconds(600)) { ready.withLock { $0 } } }
        try await eventually("registered") { cold.waiting("t/d") == 1 }
        cold.wake("t/other")
        #expect(cold.waiting("t/d") == 1)
        cold.wake("t/d")
        #expect(try await woken.value == .woken)
        // Ready already when it registers: no wait.
        ready.withLock { $0 = true }
        #expect(try await cold.wait(for: "t/d", until: .now + .seconds(600)) { ready.withLock { $0 } } == .woken)
        // Nothing happens: the deadline ends it.
        #expect(try await cold.wait(for: "t/d", until: .now + .milliseconds(200)) { false } == .timedOut)
        // The caller goes away: it leaves.
        let gone = Task { try await cold.wait(for: "t/d", until: .now + .seconds(600)) { false } }
        try await eventually("registered") { cold.waiting("t/d") == 1 }
        gone.cancel()
        await #expect(throws: CancellationError.self) { try await gone.value }
        #expect(cold.waiting("t/d") == 0)
    }

    @Test func heldCallsAreColdAndQueuedInEveryReportWhileHeld() {
        let admission = BatchAdmission(timeout: .seconds(60))
        let first = admission.hold("t/d")
        let second = admission.hold("t/d")
        for _ in 0..<2 {
            let load = admission.drainLoad()["t/d"]
            #expect(load?.cold == true)
            #expect(load?.queued == 2)
            #expect(load?.peak == 0)
            #expect(load?.demand == 1)
        }
        first()
        first()
        #expect(admission.held("t/d") == 1)
        second()
        #expect(admission.drainLoad()["t/d"] == nil)
    }
}

/// An etcd, an api-server and (if asked) the scheduler executable of one test's own.
struct ColdCluster: Sendable {
    let h: Harness
    let directory: URL
    let server: Task<Void, any Error>
    let scheduler: ChildProcess?
    let lease: Int64
    let keepAlive: Task<Void, Never>

    static func start(queueTimeout: Duration, scheduler: Bool) async throws -> ColdCluster {
        let etcd = try await EtcdFixture.start()
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints))
        let directory = try TestEnvironment.temporaryDirectory(prefix: "cold")
        let admin = Tokens.generate()
        var logger = Logger(label: "gpuplane.api.cold")
        logger.logLevel = .error
        let deps = APIDependencies(
            store: ResourceStore(client: client), catalog: try Catalog.standard(), adminTokens: [admin], heartbeatTTL: 3,
            bookmarkInterval: 0.5, inferenceQueueTimeout: queueTimeout, logger: logger)
        let running = try await startAPIServer(deps)
        let server = running.task
        let h = Harness(base: running.base, admin: admin, etcd: etcd, client: client, deps: deps, auditIdentifier: "cold")
        try await eventually("api-server answers /healthz") { try await h.call("GET", "/healthz").status == 200 }
        let lease = try await client.grantLease(ttl: 30).id
        let keepAlive = Task {
            do { for try await _ in client.keepAlive(lease, ttl: 30) {} } catch {}
        }
        var process: ChildProcess?
        if scheduler {
            process = try ChildProcess(
                executable: schedulerExecutable,
                arguments: [
                    "--etcd.endpoints", etcd.endpoints.joined(separator: ","), "--identity", "s-cold", "--lease-ttl", "10s",
                    "--meter-interval", "1h", "--resync-interval", "200ms", "--autoscale-interval", "1s",
                    "--listen", "127.0.0.1", "--port", "\(TestEnvironment.freePort())", "--log-destination", "stderr", "--log-level", "info",
                ],
                environment: ["NOTIFY_SOCKET": "", "GPUPLANE_CONFIG": ""],
                logFile: directory.appendingPathComponent("scheduler.log"))
        }
        return ColdCluster(h: h, directory: directory, server: server, scheduler: process, lease: lease, keepAlive: keepAlive)
    }

    func stop() {
        scheduler?.kill9()
        keepAlive.cancel()
        server.cancel()
        h.etcd.shutdown()
    }

    /// The `gpuplane-scheduler` built next to the test bundle.
    static var schedulerExecutable: String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [
            bundle.appendingPathComponent("gpuplane-scheduler").path,
            bundle.deletingLastPathComponent().appendingPathComponent("gpuplane-scheduler").path,
            FileManager.default.currentDirectoryPath + "/.build/debug/gpuplane-scheduler",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    /// A ready one-GPU A100 node (its heartbeat key on a kept-alive lease), as an agent registers it.
    func addNode(_ name: String) async throws {
        let device = GPUDevice(index: 0, uuid: "GPU-\(name)-0", product: "A100-SXM4-80GB", memoryMiB: 81920)
        _ = try await h.deps.store.create(Node(
            metadata: ObjectMeta(name: name, labels: [Node.machineTypeLabel: "GPU-A100-80GB", Node.gpuModeLabel: "dedicated"]),
            spec: NodeSpec(machineType: "GPU-A100-80GB", gpus: [device]),
            status: NodeStatus(gpuHealth: [GPUHealth(uuid: device.uuid, healthy: true)])))
        _ = try await h.client.put(NodeHeartbeat.key(name), "alive", lease: lease)
    }

    /// A one-GPU deployment at zero instances; its full name.
    func deployment(token: String, tenant: String, name: String, batch: Int, max: Int) async throws -> String {
        let body = #"{"model_name": "\#(name)", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": \#(batch), "hf": {"repo": "org/\#(name)"}, "settings": {"min_instances": 0, "max_instances": \#(max)}}"#
        let created = try await h.call("POST", "/v1/deployments", token: token, body: body)
        guard created.status == 201 else { throw HarnessError(description: "deployment: \(created.text)") }
        return "\(tenant)/\(name)"
    }

    func instances(_ tenant: String, _ name: String) async throws -> [Replica] {
        try await h.deps.store.list(Replica.self, tenant: tenant).items.filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == name }
    }

    /// Reports the instance running and ready at `endpoint`, as its node-agent does.
    func report(_ tenant: String, _ replica: String, readyAt endpoint: String) async throws {
        for _ in 0..<50 {
            var object = try await h.deps.store.get(Replica.self, tenant: tenant, name: replica)
            object.status.phase = .running
            object.status.ready = true
            object.status.endpoint = endpoint
            do {
                _ = try await h.deps.store.update(object)
                return
            } catch let error as StoreError where error.code == .conflict {
                continue
            }
        }
        throw HarnessError(description: "could not report \(replica) ready")
    }

    /// A call that may be held for a while (the harness's own gives up after 60 s).
    func call(_ path: String, token: String, body: String) async throws -> Reply {
        try await h.call("POST", path, token: token, body: body, headers: ["Content-Type": "application/json"], timeout: .seconds(600))
    }
}
