import CurlHTTP
import Foundation
import GPUPlaneSystem

/// The whole control plane with every part replaceable, for the fault suite: a 3-member etcd,
/// several `gpuplane-api-server`s and `gpuplane-scheduler`s, and node-agents (fake NVML, one
/// podman) each talking to one of the api-servers. Every daemon is a process with a label
/// (`api-0`, `scheduler-1`, `agent-0`…) that a test kills, freezes and starts again with the
/// same arguments; etcd members through ``etcd``.
///
/// It holds the process's local-cluster slot (``ClusterSlots``) like ``LocalCluster``.
public final class FaultCluster: @unchecked Sendable {
    /// The etcd members.
    public let etcd: EtcdClusterFixture
    /// The podman service and its fake GPUs.
    public let podman: PodmanFixture
    /// Configuration and the daemons' logs.
    public let directory: URL
    /// The admin token.
    public let adminToken: String
    /// The api-servers' base URLs, by index.
    public let apiURLs: [String]
    /// The nodes' names, by agent index (`fault-node-0`…).
    public let nodeNames: [String]
    /// GPUs per node.
    public let gpusPerNode: Int

    private struct Daemon {
        var executable: String
        var arguments: [String]
        var environment: [String: String]
        var process: ChildProcess
        var starts: Int
    }
    private let lock = NSLock()
    private var daemons: [String: Daemon] = [:]
    private var order: [String] = []
    private let http = CurlHTTP.Client(name: "fault-cluster", maxConnections: 8)
    private var stopped = false

    private init(etcd: EtcdClusterFixture, podman: PodmanFixture, directory: URL, adminToken: String, apiURLs: [String], nodeNames: [String], gpusPerNode: Int) {
        self.etcd = etcd
        self.podman = podman
        self.directory = directory
        self.adminToken = adminToken
        self.apiURLs = apiURLs
        self.nodeNames = nodeNames
        self.gpusPerNode = gpusPerNode
    }

    /// Starts everything (`binaries` holds the built executables and `libFakeNVML.so`) and
    /// waits until every node is Ready. Schedulers run with a 3 s lease and a 2 s meter.
    public static func start(
        binaries: URL, apiServers: Int = 2, schedulers: Int = 2, agents: Int = 2, gpusPerNode: Int = 4,
        log: (String) -> Void = { _ in }
    ) async throws -> FaultCluster {
        await ClusterSlots.acquire()
        let directory = try TestEnvironment.temporaryDirectory(prefix: "fault-cluster", keep: true)
        log("etcd, 3 members…")
        let etcd: EtcdClusterFixture
        do { etcd = try await EtcdClusterFixture.start(size: 3) } catch {
            ClusterSlots.release()
            throw error
        }
        let podman: PodmanFixture
        do { podman = try await PodmanFixture.start() } catch {
            etcd.shutdown()
            ClusterSlots.release()
            throw error
        }
        let admin = "gp_fault_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
        let apiPorts = (0..<apiServers).map { _ in TestEnvironment.freePort() }
        let cluster = FaultCluster(
            etcd: etcd, podman: podman, directory: directory, adminToken: admin,
            apiURLs: apiPorts.map { "http://127.0.0.1:\($0)" },
            nodeNames: (0..<agents).map { "fault-node-\($0)" }, gpusPerNode: gpusPerNode)
        do {
            let emptyConfig = directory.appendingPathComponent("empty.conf")
            try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
            let adminFile = directory.appendingPathComponent("admin-token")
            try admin.write(to: adminFile, atomically: true, encoding: .utf8)
            let secretKeyFile = try SecretKeyFile.create(in: directory)
            let etcdFlags = ["--etcd.endpoints", etcd.endpoints.joined(separator: ",")]
            let environment = ["GPUPLANE_CONFIG": emptyConfig.path, "NOTIFY_SOCKET": ""]
            for (i, port) in apiPorts.enumerated() {
                log("gpuplane-api-server \(i) on 127.0.0.1:\(port)…")
                try cluster.launch(
                    "api-\(i)", binaries.appendingPathComponent("gpuplane-api-server").path,
                    etcdFlags + [
                        "--port", "\(port)", "--secret-key-file", secretKeyFile.path, "--admin-token-file", adminFile.path,
                        "--heartbeat-ttl", "5", "--log-level", "notice", "--log-destination", "stderr",
                        "--deployment-image", podman.standInModelServerImage,
                    ], environment: environment)
            }
            for i in 0..<schedulers {
                log("gpuplane-scheduler \(i)…")
                try cluster.launch(
                    "scheduler-\(i)", binaries.appendingPathComponent("gpuplane-scheduler").path,
                    etcdFlags + [
                        "--identity", "scheduler-\(i)", "--lease-ttl", "3s", "--meter-interval", "2s", "--port", "0",
                        "--log-destination", "stderr", "--log-level", "notice",
                    ], environment: environment)
            }
            for i in 0..<apiServers {
                try await eventually("api-server \(i) answers", timeout: 60) { try await cluster.call("GET", "/readyz", via: i).status == 200 }
            }
            for (i, node) in cluster.nodeNames.enumerated() {
                let token = try await cluster.json("POST", "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)["token"] as? String
                guard let token else { throw LocalCluster.Failure(description: "the api-server issued no node token") }
                let tokenFile = directory.appendingPathComponent("\(node).token")
                try token.write(to: tokenFile, atomically: true, encoding: .utf8)
                let nvml = try FakeNVMLFiles.write(
                    gpus: (0..<gpusPerNode).map { g in
                        PodmanFixture.FakeGPU(index: g, uuid: "GPU-fa17\(String(format: "%02x%02x", i, g))-0000-4000-8000-\(String(format: "%012x", i * 16 + g))")
                    },
                    in: directory, name: node)
                log("gpuplane-node-agent \(node) via api-server \(i % apiServers)…")
                try cluster.launch(
                    "agent-\(i)", binaries.appendingPathComponent("gpuplane-node-agent").path,
                    [
                        "--api-server", cluster.apiURLs[i % apiServers], "--node-token-file", tokenFile.path, "--node-name", node,
                        "--gpu-mode", "dedicated", "--engine-socket", podman.socketPath, "--cdi-gpu-kind", podman.cdiKind,
                        "--nvml-library", binaries.appendingPathComponent("libFakeNVML.so").path, "--stop-grace-period", "2s",
                        "--log-level", "info", "--log-destination", "stderr",
                        "--allocatable-cpu", "\(gpusPerNode * 12 + 2)", "--allocatable-memory", "\(gpusPerNode * 112 + 4)Gi",
                        "--listen", "127.0.0.1", "--port", "\(TestEnvironment.freePort())",
                        "--model-server-ports", "\(21000 + i * 100)-\(21000 + i * 100 + 99)",
                    ],
                    environment: environment.merging(nvml.environment) { a, _ in a })
            }
            for node in cluster.nodeNames {
                try await eventually("node \(node) registers and is Ready", timeout: 90) { try await cluster.isReady(node) }
            }
            return cluster
        } catch {
            let tails = cluster.logTails(bytes: 2000)
            cluster.shutdown()
            throw LocalCluster.Failure(description: "\(error)\n\(tails)")
        }
    }

    private func launch(_ label: String, _ executable: String, _ arguments: [String], environment: [String: String]) throws {
        let process = try ChildProcess(
            executable: executable, arguments: arguments, environment: environment,
            logFile: directory.appendingPathComponent("\(label)-1.log"))
        lock.withLock {
            daemons[label] = Daemon(executable: executable, arguments: arguments, environment: environment, process: process, starts: 1)
            order.append(label)
        }
    }

    /// The process of daemon `label` (`api-0`, `scheduler-1`, `agent-0`).
    public func process(_ label: String) -> ChildProcess? { lock.withLock { daemons[label]?.process } }

    /// Kills daemon `label` with SIGKILL, as a crash would.
    public func kill9(_ label: String) { process(label)?.kill9() }

    /// Starts daemon `label` again with the same arguments (a new log file), unless it runs.
    public func restart(_ label: String) throws {
        try lock.withLock {
            guard var daemon = daemons[label], !daemon.process.isRunning, !stopped else { return }
            daemon.starts += 1
            daemon.process = try ChildProcess(
                executable: daemon.executable, arguments: daemon.arguments, environment: daemon.environment,
                logFile: directory.appendingPathComponent("\(label)-\(daemon.starts).log"))
            daemons[label] = daemon
        }
    }

    /// Whether node `name` is Ready as the first api-server that answers says.
    public func isReady(_ name: String) async throws -> Bool {
        let object = try await json("GET", "/v1/nodes/\(name)", token: adminToken)
        let conditions = (object["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
        return conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? Bool == true }
    }

    /// One call to api-server `via`.
    public func call(
        _ method: String, _ path: String, token: String? = nil, body: String? = nil, via: Int = 0, timeout: Duration = .seconds(10)
    ) async throws -> (status: Int, body: Data) {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        let response = try await http.perform(
            CurlHTTP.Request(
                method: CurlHTTP.Method(method), url: apiURLs[via] + path, headers: headers, body: body.map { Data($0.utf8) },
                timeout: timeout))
        return (response.status, response.body)
    }

    /// A call answered with a JSON object, by the first api-server that answers.
    public func json(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> [String: Any] {
        var last: (any Error)?
        for via in apiURLs.indices {
            do {
                let (status, data) = try await call(method, path, token: token, body: body, via: via)
                if status >= 500 { throw LocalCluster.Failure(description: "\(method) \(path): \(status) \(String(decoding: data, as: UTF8.self))") }
                guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                    throw LocalCluster.Failure(description: "\(method) \(path): \(status) \(String(decoding: data, as: UTF8.self))")
                }
                return object
            } catch {
                last = error
            }
        }
        throw last ?? LocalCluster.Failure(description: "no api-server")
    }

    /// A tenant on `plan` (with `gpuLimit` GPUs at most, else the plan's) and a user token for it.
    public func tenant(_ name: String, plan: String, gpuLimit: Int? = nil) async throws -> String {
        let limit = gpuLimit.map { #", "gpu_limit": \#($0)"# } ?? ""
        let created = try await call("POST", "/v1/tenants", token: adminToken, body: #"{"name": "\#(name)", "plan": "\#(plan)"\#(limit)}"#)
        guard created.status == 201 || created.status == 409 else {
            throw LocalCluster.Failure(description: "creating tenant \(name): \(created.status) \(String(decoding: created.body, as: UTF8.self))")
        }
        guard let token = try await json("POST", "/v1/tokens", token: adminToken, body: #"{"tenant": "\#(name)", "role": "user"}"#)["token"] as? String else {
            throw LocalCluster.Failure(description: "no token for tenant \(name)")
        }
        return token
    }

    /// The last lines of every daemon's log, for failure reports.
    public func logTails(bytes: Int = 3000) -> String {
        let all = lock.withLock { order.compactMap { label in daemons[label].map { (label, $0.process) } } }
        return all.map { "--- \($0.0) (running: \($0.1.isRunning)) ---\n\($0.1.logTail(bytes: bytes))" }.joined(separator: "\n")
    }

    /// Stops every daemon (agents first), removes the containers, podman and etcd; gives back
    /// the slot. Idempotent.
    public func shutdown() {
        let all: [ChildProcess]? = lock.withLock {
            guard !stopped else { return nil }
            stopped = true
            return order.reversed().compactMap { daemons[$0]?.process }
        }
        guard let all else { return }
        for process in all {
            process.signal(SIGCONT)
            process.stop(timeout: 5)
        }
        podman.shutdown()
        etcd.shutdown()
        http.shutdown()
        ClusterSlots.release()
    }
}
