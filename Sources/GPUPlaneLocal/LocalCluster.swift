import CurlHTTP
import Foundation
import GPUPlaneCore
import GPUPlaneSystem

/// A whole gpuplane on one machine, for the README's first command and the end-to-end test:
/// etcd, a podman service with fake GPUs (CDI) and a locally built image, the fake NVML, and the
/// real `gpuplane-api-server`, `gpuplane-scheduler` and `gpuplane-node-agent` executables.
///
/// Two nodes: `local-gpu-0` (`gpu-mode=dedicated`, 8 fake H100s) for Mode 1, and
/// `local-gpu-1` (`gpu-mode=shared`, 2 fake H100s) for Mode 3 model servers. The catalog is
/// overridden so every model is served by the stand-in model server image (not vLLM), except
/// `tiny-random-llama` (``cpuModel``), a real model served on CPU by llama.cpp, whose weights the
/// agents fetch from a registry on loopback.
public final class LocalCluster: @unchecked Sendable {
    /// The shared node's name.
    public static let sharedNodeName = "local-gpu-1"
    /// The pod subnet of `local-gpu-0`, the node that runs the pod network (10.252.`n`.0/24).
    public var podSubnet: String { podNetwork?.subnet ?? "" }

    /// The api-server's base URL.
    public let apiURL: String
    /// The admin token.
    public let adminToken: String
    /// The node's name.
    public let nodeName: String
    /// The podman service and its fake GPUs.
    public let podman: PodmanFixture
    /// Where configuration and the daemons' logs are.
    public let directory: URL
    private let etcd: EtcdFixture
    private let podNetwork: LocalPodNetwork?
    /// With `tls`: the CA that signed the api-server's and etcd's certificates (`certs/ca.pem`).
    public let caFile: String?
    /// The scheduler's listener (`/metrics`), on loopback.
    public var schedulerURL: String = ""
    /// The real CPU model (`tiny-random-llama`) and its registry; nil unless started with
    /// `cpuModel`, or where the engine image, `gguf` or the registry is missing
    /// (``LocalCPUModel/isAvailable``).
    public let cpuModel: LocalCPUModel?
    private let daemons: [(name: String, process: ChildProcess)]
    private let http = CurlHTTP.Client(name: "local-cluster", maxConnections: 8)
    /// Whether this cluster holds the process's slot (given back once, by ``shutdown()``).
    private let holdsSlot = Locked(false)

    /// Why the cluster could not start or a call failed.
    public struct Failure: Error, CustomStringConvertible {
        /// What went wrong, with the tail of the logs that tell why.
        public let description: String

        /// Makes a failure.
        public init(description: String) { self.description = description }
    }

    private init(
        apiURL: String, adminToken: String, nodeName: String, podman: PodmanFixture, directory: URL,
        etcd: EtcdFixture, podNetwork: LocalPodNetwork?, caFile: String?, daemons: [(name: String, process: ChildProcess)],
        cpuModel: LocalCPUModel? = nil
    ) {
        self.cpuModel = cpuModel
        self.podNetwork = podNetwork
        self.caFile = caFile
        self.apiURL = apiURL
        self.adminToken = adminToken
        self.nodeName = nodeName
        self.podman = podman
        self.directory = directory
        self.etcd = etcd
        self.daemons = daemons
    }

    /// Starts everything with `binaries` holding the built executables and `libFakeNVML.so`,
    /// and waits until the node is registered. With `tls`, everything runs over TLS with
    /// certificates `scripts/dev-certs` makes in the cluster's folder: etcd serves only
    /// https:// and asks for client certificates, the api-server serves only HTTPS, and the
    /// agents verify it with the CA.
    ///
    /// At most one local cluster runs at a time in one process (``ClusterSlots``): a cluster is a
    /// dozen processes, and several started together by parallel test suites on a small machine
    /// slowed every daemon past its timeouts. A second `start` waits until the first is shut down.
    ///
    /// With `cpuModel` (what `gpuplane-local` does), `tiny-random-llama` is served for real
    /// (``cpuModel``): a registry and the engine image's 200 MB import into this cluster's podman,
    /// which tests that do not call it skip.
    public static func start(
        binaries: URL, gpus: Int = 8, tls: Bool = false, cpuModel: Bool = false, log: (String) -> Void = { _ in }
    ) async throws -> LocalCluster {
        await ClusterSlots.acquire()
        do {
            let cluster = try await startInSlot(binaries: binaries, gpus: gpus, tls: tls, cpuModel: cpuModel, log: log)
            cluster.holdsSlot.withLock { $0 = true }
            return cluster
        } catch {
            ClusterSlots.release()
            throw error
        }
    }

    private static func startInSlot(binaries: URL, gpus: Int, tls: Bool, cpuModel wantsCPUModel: Bool, log: (String) -> Void) async throws -> LocalCluster {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "local-cluster", keep: true)
        let certs = directory.appendingPathComponent("certs").path
        if tls {
            log("certificates (scripts/dev-certs \(certs))…")
            try makeCertificates(in: certs, binaries: binaries)
        }
        log(tls ? "etcd (TLS, client certificates)…" : "etcd…")
        let etcd = try await EtcdFixture.start(
            tls: tls ? EtcdTLSFiles(caFile: certs + "/ca.pem", certFile: certs + "/server.pem", keyFile: certs + "/server-key.pem") : nil)
        let etcdFlags = ["--etcd.endpoints", etcd.endpoints.joined(separator: ",")] + (tls
            ? ["--etcd.ca-file", certs + "/ca.pem", "--etcd.cert-file", certs + "/client.pem", "--etcd.key-file", certs + "/client-key.pem"]
            : [])
        let caFile = tls ? certs + "/ca.pem" : nil
        log("podman with \(gpus) fake GPUs…")
        let podman = try await PodmanFixture.start()
        var daemons: [(String, ChildProcess)] = []
        let cpuModel: LocalCPUModel?
        do {
            if !wantsCPUModel {
                cpuModel = nil
            } else if LocalCPUModel.isAvailable {
                cpuModel = try await LocalCPUModel.prepare(podman: podman, directory: directory, log: log)
            } else {
                log("no real CPU model (\(LocalCPUModel.missingReason)): every model is the stand-in")
                cpuModel = nil
            }
        } catch {
            podman.shutdown()
            etcd.shutdown()
            throw error
        }
        let podNetwork: LocalPodNetwork
        do { podNetwork = try LocalPodNetwork.claim() } catch {
            cpuModel?.registry.shutdown()
            podman.shutdown()
            etcd.shutdown()
            throw error
        }
        // An empty configuration file, so no /etc/gpuplane/*.conf of this machine is read.
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        func launch(_ name: String, _ arguments: [String], environment: [String: String] = [:], label: String? = nil) throws {
            let label = label ?? name
            let process = try ChildProcess(
                executable: binaries.appendingPathComponent(name).path, arguments: arguments,
                environment: environment.merging(["GPUPLANE_CONFIG": emptyConfig.path]) { a, _ in a },
                logFile: directory.appendingPathComponent("\(label).log"))
            daemons.append((label, process))
        }
        do {
            // Every catalog model, and every deployment, served by the stand-in (same arguments and
            // port as the real one); tiny-random-llama by the real CPU engine.
            let catalogFile = directory.appendingPathComponent("catalog.json")
            try standInCatalog(image: podman.standInModelServerImage, adding: cpuModel.map { [$0.catalogEntry] } ?? [])
                .write(to: catalogFile)
            let admin = "gp_local_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
            let adminFile = directory.appendingPathComponent("admin-token")
            try admin.write(to: adminFile, atomically: true, encoding: .utf8)
            let port = TestEnvironment.freePort()
            let apiURL = "\(tls ? "https" : "http")://127.0.0.1:\(port)"
            log("gpuplane-api-server on \(apiURL)…")
            let secretKeyFile = try SecretKeyFile.create(in: directory)
            try launch("gpuplane-api-server", etcdFlags + [
                "--port", "\(port)", "--secret-key-file", secretKeyFile.path,
                "--admin-token-file", adminFile.path, "--heartbeat-ttl", "5", "--log-level", "notice", "--log-destination", "stderr",
                "--catalog-file", catalogFile.path, "--deployment-image", podman.standInModelServerImage,
                // A call to a deployment at zero is held while its first instance starts (a
                // container on a loaded machine may take more than the default 60 s).
                "--inference-queue-timeout", "120",
            ] + (tls ? ["--tls-cert-file", certs + "/server.pem", "--tls-key-file", certs + "/server-key.pem"] : []))
            log("gpuplane-scheduler…")
            let schedulerPort = TestEnvironment.freePort()
            try launch("gpuplane-scheduler", etcdFlags + [
                "--meter-interval", "60s", "--listen", "127.0.0.1", "--port", "\(schedulerPort)",
                "--log-destination", "stderr", "--log-level", "notice", "--catalog-file", catalogFile.path,
            ])
            let cluster = LocalCluster(
                apiURL: apiURL, adminToken: admin, nodeName: "local-gpu-0", podman: podman, directory: directory,
                etcd: etcd, podNetwork: nil, caFile: caFile, daemons: [])
            try await eventually("the api-server answers", timeout: 60) { try await cluster.call("GET", "/readyz").status == 200 }
            /// `spare`: the CPU millicores and memory (MiB) beyond its GPUs' share that CPU pods
            /// (and the Mode 2/3 pods' own containers) may use; `podSubnet`: the node runs the
            /// pod network (`<pod>.pod` names) on it.
            func launchAgent(
                _ node: String, mode: String, gpus: [PodmanFixture.FakeGPU], spare: (cpuMilli: Int, memoryMiB: Int),
                podNetwork: LocalPodNetwork? = nil
            ) async throws {
                let token = try await cluster.json("POST", "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)["token"] as? String
                guard let token else { throw Failure(description: "the api-server issued no node token") }
                let tokenFile = directory.appendingPathComponent("\(node).token")
                try token.write(to: tokenFile, atomically: true, encoding: .utf8)
                let nvml = try FakeNVMLFiles.write(gpus: gpus, in: directory, name: node)
                log("gpuplane-node-agent \(node) (gpu-mode=\(mode), \(gpus.count) fake GPUs)…")
                try launch(
                    "gpuplane-node-agent",
                    [
                        "--api-server", apiURL, "--node-token-file", tokenFile.path, "--node-name", node,
                        "--gpu-mode", mode, "--engine-socket", podman.socketPath, "--cdi-gpu-kind", podman.cdiKind,
                        "--nvml-library", binaries.appendingPathComponent("libFakeNVML.so").path, "--stop-grace-period", "2s",
                        "--log-level", "info", "--log-destination", "stderr",
                        // A fake H100 host: its GPUs' share (12 CPUs, 112 GB each) and what is
                        // spare, which CPU pods may use (docs/architecture.md, "CPU and memory").
                        "--allocatable-cpu", "\(gpus.count * 12_000 + spare.cpuMilli)m",
                        "--allocatable-memory", "\(gpus.count * 112 * 1024 + spare.memoryMiB)Mi",
                        // Both agents share this host: each listener (logs, /metrics) gets a
                        // port of its own on loopback.
                        "--listen", "127.0.0.1", "--port", "\(TestEnvironment.freePort())",
                        // A weights cache of its own (two agents share this host).
                        "--weights-cache", directory.appendingPathComponent("\(node).weights").path,
                    ] + (cpuModel.map { ["--weights-registry-auth-file", $0.authFile.path] } ?? [])
                        + (podNetwork?.agentArguments ?? []) + (caFile.map { ["--api-server-ca-file", $0] } ?? []),
                    environment: nvml.environment,
                    label: "gpuplane-node-agent-\(node)")
            }
            // The pod network runs on local-gpu-0 only: both agents share one podman and this
            // host's network namespace, where two pod networks of one cluster would clash. Application pods
            // that talk by name therefore land there: it has 4 CPUs and 8 GB spare, the shared
            // node only room for one XS pod (the Mode 3 example's client).
            try await launchAgent(
                "local-gpu-0", mode: "dedicated", gpus: Array(podman.fakeGPUs.prefix(gpus)), spare: (4000, 8192),
                podNetwork: podNetwork)
            let shared = (0..<2).map {
                PodmanFixture.FakeGPU(index: $0, uuid: String(format: "GPU-5ba4ed%02x-0000-4000-8000-%012x", $0, $0))
            }
            try await launchAgent(sharedNodeName, mode: "shared", gpus: shared, spare: (500, 768))
            let running = LocalCluster(
                apiURL: apiURL, adminToken: admin, nodeName: "local-gpu-0", podman: podman, directory: directory,
                etcd: etcd, podNetwork: podNetwork, caFile: caFile, daemons: daemons, cpuModel: cpuModel)
            running.schedulerURL = "http://127.0.0.1:\(schedulerPort)"
            for node in ["local-gpu-0", sharedNodeName] {
                try await eventually("node \(node) registers and is Ready", timeout: 90) {
                    let object = try await running.json("GET", "/v1/nodes/\(node)", token: admin)
                    let conditions = (object["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
                    return conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? Bool == true }
                }
            }
            return running
        } catch {
            let logs = daemons.map { "--- \($0.0) ---\n\($0.1.logTail(bytes: 2000))" }.joined(separator: "\n")
            for (_, process) in daemons.reversed() { process.stop(timeout: 5) }
            podman.shutdown()
            podNetwork.release()
            cpuModel?.registry.shutdown()
            etcd.shutdown()
            throw Failure(description: "\(error)\n\(logs)")
        }
    }

    /// The bundled catalog with every model's image replaced by `image`, plus `adding`, as
    /// catalog-file JSON.
    static func standInCatalog(image: String, adding: [CatalogModel] = []) throws -> Data {
        struct File: Encodable { var models: [CatalogModel] }
        let models = try Catalog.standard().models.map { model -> CatalogModel in
            var model = model
            model.image = image
            return model
        }
        return try JSONEncoder().encode(File(models: models + adding))
    }

    /// One HTTP call to the api-server, given `timeout` to answer (a call held for a
    /// deployment's start from zero needs longer).
    public func call(
        _ method: String, _ path: String, token: String? = nil, body: String? = nil, timeout: Duration = .seconds(10)
    ) async throws -> (status: Int, body: Data) {
        let response = try await http.perform(.api(method, apiURL + path, token: token, body: body.map { Data($0.utf8) }, timeout: timeout, tls: clientTLS))
        return (response.status, response.body)
    }

    /// A GET of any URL (a node-agent's listener) with `headers`.
    public func call(absolute url: String, headers: [String: String] = [:]) async throws -> (status: Int, body: Data) {
        let response = try await http.perform(
            CurlHTTP.Request(url: url, headers: headers.map { CurlHTTP.Header($0.key, $0.value) }, timeout: .seconds(10), tls: clientTLS))
        return (response.status, response.body)
    }

    /// A plain GET of any URL (a model server's endpoint), as text.
    public func get(_ url: String) async throws -> String {
        String(decoding: try await call(absolute: url).body, as: UTF8.self)
    }

    /// A JSON POST to any URL (an inference URL, as a pod would call it: no token).
    public func post(_ url: String, json: String) async throws -> (status: Int, body: Data) {
        let response = try await http.perform(
            CurlHTTP.Request(
                method: .post, url: url, headers: [CurlHTTP.Header("Content-Type", "application/json")], body: Data(json.utf8),
                timeout: .seconds(30), tls: clientTLS))
        return (response.status, response.body)
    }

    /// The CA to verify the api-server with, under `tls`.
    private var clientTLS: CurlHTTP.TLS? { caFile.map { CurlHTTP.TLS(caFile: $0) } }

    /// Runs `scripts/dev-certs` (found from the working directory or above `binaries`, as
    /// `.build/<triple>/<configuration>` sits in the repository) into `directory`.
    static func makeCertificates(in directory: String, binaries: URL) throws {
        var candidates = [FileManager.default.currentDirectoryPath + "/scripts/dev-certs"]
        var folder = binaries
        for _ in 0..<4 {
            folder.deleteLastPathComponent()
            candidates.append(folder.appendingPathComponent("scripts/dev-certs").path)
        }
        guard let script = candidates.first(where: { access($0, X_OK) == 0 }) else {
            throw Failure(description: "TLS needs scripts/dev-certs: run from the repository (looked at \(candidates.joined(separator: ", ")))")
        }
        do { _ = try PodmanFixture.run(script, [directory]) } catch {
            throw Failure(description: "scripts/dev-certs failed: \(error)")
        }
    }

    /// One call whose answer is a JSON object.
    public func json(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> [String: Any] {
        let (status, data) = try await call(method, path, token: token, body: body)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure(description: "\(method) \(path): \(status) \(String(decoding: data, as: UTF8.self))")
        }
        return object
    }

    /// A tenant on `plan` and a user token for it.
    public func tenant(_ name: String, plan: String) async throws -> String {
        let created = try await call("POST", "/v1/tenants", token: adminToken, body: #"{"name": "\#(name)", "plan": "\#(plan)"}"#)
        guard created.status == 201 || created.status == 409 else {
            throw Failure(description: "creating tenant \(name): \(created.status) \(String(decoding: created.body, as: UTF8.self))")
        }
        guard let token = try await json("POST", "/v1/tokens", token: adminToken, body: #"{"tenant": "\#(name)", "role": "user"}"#)["token"] as? String else {
            throw Failure(description: "no token for tenant \(name)")
        }
        return token
    }

    /// The daemon process labelled `name` (`gpuplane-api-server`, `gpuplane-scheduler`,
    /// `gpuplane-node-agent-<node>`), to signal or watch it.
    public func daemon(_ name: String) -> ChildProcess? {
        daemons.first { $0.name == name }?.process
    }

    /// The last lines each daemon wrote, for failure reports.
    public func logTails(bytes: Int = 3000) -> String {
        daemons.map { "--- \($0.name) ---\n\($0.process.logTail(bytes: bytes))" }.joined(separator: "\n")
    }

    /// Stops the daemons (the agent first), the containers they left (an agent leaves its
    /// containers running on shutdown, to adopt them when it comes back), podman and etcd.
    public func shutdown() {
        for (_, process) in daemons.reversed() { process.stop(timeout: 15) }
        _ = try? podman.podman(["rm", "--force", "--time", "0", "--all"])
        http.shutdown()
        podman.shutdown()
        podNetwork?.release()
        cpuModel?.registry.shutdown()
        etcd.shutdown()
        let held = holdsSlot.withLock { held -> Bool in
            defer { held = false }
            return held
        }
        if held { ClusterSlots.release() }
    }
}

/// The process's local-cluster slots (one): ``LocalCluster/start(binaries:gpus:tls:log:)`` takes
/// it, ``LocalCluster/shutdown()`` gives it back, waiters go first come first served.
enum ClusterSlots {
    private static let state = Locked<(free: Int, waiters: [CheckedContinuation<Void, Never>])>((1, []))

    static func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { s -> Bool in
                if s.free > 0 {
                    s.free -= 1
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    static func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.free += 1
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}
