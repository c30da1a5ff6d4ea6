import CurlHTTP
import Foundation

/// A gpuplane of several hosts on one machine: etcd, the real `gpuplane-api-server` and
/// `gpuplane-scheduler` in the root network namespace (the api-server listening on the
/// ``NetnsLAN``'s bridge address), and per host a ``NetnsHost`` (its own network namespace,
/// address and podman) running the real `gpuplane-node-agent` inside it, with the fake NVML,
/// `gpus` fake GPUs and the pod network on (`--pod-subnet 10.251.<n>.0/24`).
///
/// Traffic goes only to loopback, the LAN's bridge and the namespaces it made.
public final class NetnsCluster: @unchecked Sendable {
    /// The api-server's base URL, on the LAN's bridge address.
    public let apiURL: String
    /// The admin token.
    public let adminToken: String
    /// The LAN.
    public let lan: NetnsLAN
    /// The hosts, in order: node `net-<n>` runs on `hosts[n-1]`.
    public let hosts: [NetnsHost]
    /// Where configuration and the daemons' logs are.
    public let directory: URL
    private let etcd: EtcdFixture
    private let daemons: [(name: String, process: ChildProcess)]
    private let http = CurlHTTP.Client(name: "netns-cluster", maxConnections: 8)

    /// The cluster's pod range.
    public static let podCIDR = "10.251.0.0/16"

    /// The node name of host `index` (from 1).
    public static func nodeName(_ index: Int) -> String { "net-\(index)" }

    /// Whether it can run here.
    public static var isAvailable: Bool { NetnsLAN.isAvailable && PodmanFixture.isAvailable && EtcdFixture.isAvailable }

    private init(
        apiURL: String, adminToken: String, lan: NetnsLAN, hosts: [NetnsHost], directory: URL, etcd: EtcdFixture,
        daemons: [(name: String, process: ChildProcess)]
    ) {
        self.apiURL = apiURL
        self.adminToken = adminToken
        self.lan = lan
        self.hosts = hosts
        self.directory = directory
        self.etcd = etcd
        self.daemons = daemons
    }

    /// Starts everything with `binaries` holding the built executables and `libFakeNVML.so`,
    /// `gpus[i]` fake GPUs on host i+1 (and `agentArguments[i]`, when given, added to its
    /// agent's command line), and waits until every node is registered with its pod subnet.
    public static func start(
        binaries: URL, gpus: [Int], agentArguments: [[String]] = [], log: (String) -> Void = { _ in }
    ) async throws -> NetnsCluster {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "netns-cluster", keep: true)
        let etcd = try await EtcdFixture.start()
        let lan = try NetnsLAN.create()
        var daemons: [(String, ChildProcess)] = []
        var hosts: [NetnsHost] = []
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        func launch(_ executable: String, _ arguments: [String], environment: [String: String] = [:], label: String) throws {
            let process = try ChildProcess(
                executable: executable, arguments: arguments,
                environment: environment.merging(["GPUPLANE_CONFIG": emptyConfig.path]) { a, _ in a },
                logFile: directory.appendingPathComponent("\(label).log"))
            daemons.append((label, process))
            // Killed by the next run if this process dies without stopping it.
            lan.adopt(pid: process.pid, commandLineHolds: directory.path)
        }
        do {
            for _ in gpus {
                log("host \(hosts.count + 1): namespace and podman…")
                hosts.append(try await lan.addHost())
            }
            let image = hosts[0].podman.standInModelServerImage
            let catalogFile = directory.appendingPathComponent("catalog.json")
            try LocalCluster.standInCatalog(image: image).write(to: catalogFile)
            let admin = "gp_netns_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
            let adminFile = directory.appendingPathComponent("admin-token")
            try admin.write(to: adminFile, atomically: true, encoding: .utf8)
            let port = TestEnvironment.freePort()
            let apiURL = "http://\(lan.gatewayAddress):\(port)"
            let secretKeyFile = try SecretKeyFile.create(in: directory)
            log("gpuplane-api-server on \(apiURL)…")
            try launch(binaries.appendingPathComponent("gpuplane-api-server").path, [
                "--listen", lan.gatewayAddress, "--port", "\(port)", "--etcd.endpoints", etcd.endpoints.joined(separator: ","),
                "--secret-key-file", secretKeyFile.path, "--admin-token-file", adminFile.path, "--heartbeat-ttl", "5",
                "--log-level", "notice", "--log-destination", "stderr", "--catalog-file", catalogFile.path,
                "--deployment-image", image,
            ], label: "gpuplane-api-server")
            try launch(binaries.appendingPathComponent("gpuplane-scheduler").path, [
                "--etcd.endpoints", etcd.endpoints.joined(separator: ","), "--meter-interval", "60s",
                "--log-destination", "stderr", "--log-level", "notice", "--catalog-file", catalogFile.path,
            ], label: "gpuplane-scheduler")
            let probe = NetnsCluster(
                apiURL: apiURL, adminToken: admin, lan: lan, hosts: hosts, directory: directory, etcd: etcd, daemons: [])
            try await eventually("the api-server answers", timeout: 60) { try await probe.call("GET", "/readyz").status == 200 }
            for (offset, host) in hosts.enumerated() {
                let node = nodeName(offset + 1)
                let token = try await probe.json("POST", "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)["token"] as? String
                guard let token else { throw LocalCluster.Failure(description: "the api-server issued no node token") }
                let tokenFile = directory.appendingPathComponent("\(node).token")
                try token.write(to: tokenFile, atomically: true, encoding: .utf8)
                let nvml = try FakeNVMLFiles.write(
                    gpus: host.podman.fakeGPUs.prefix(gpus[offset]).map {
                        PodmanFixture.FakeGPU(index: $0.index, uuid: "GPU-\(offset + 1)\($0.uuid.dropFirst(5))")
                    },
                    in: directory, name: node)
                log("gpuplane-node-agent \(node) in \(host.name) at \(host.address)…")
                try launch(
                    NetnsLAN.nsenter,
                    [
                        "--net=/var/run/netns/\(host.name)", binaries.appendingPathComponent("gpuplane-node-agent").path,
                        "--api-server", apiURL, "--node-token-file", tokenFile.path, "--node-name", node,
                        "--gpu-mode", "dedicated", "--engine-socket", host.podman.socketPath, "--cdi-gpu-kind", host.podman.cdiKind,
                        "--nvml-library", binaries.appendingPathComponent("libFakeNVML.so").path, "--stop-grace-period", "2s",
                        "--address", host.address, "--pod-subnet", "10.251.\(offset + 1).0/24", "--pod-cidr", podCIDR,
                        "--gateway-url", apiURL, "--log-level", "info", "--log-destination", "stderr",
                        "--weights-cache", directory.appendingPathComponent("\(node).weights").path,
                    ] + (offset < agentArguments.count ? agentArguments[offset] : []),
                    environment: nvml.environment,
                    label: "gpuplane-node-agent-\(node)")
            }
            let cluster = NetnsCluster(
                apiURL: apiURL, adminToken: admin, lan: lan, hosts: hosts, directory: directory, etcd: etcd, daemons: daemons)
            for index in hosts.indices {
                let node = nodeName(index + 1)
                try await eventually("node \(node) registers with its pod subnet and is Ready", timeout: 90) {
                    let object = try await cluster.json("GET", "/v1/nodes/\(node)", token: admin)
                    let conditions = (object["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
                    let subnet = (object["spec"] as? [String: Any])?["podSubnet"] as? String
                    return subnet != nil && conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? Bool == true }
                }
            }
            return cluster
        } catch {
            let logs = daemons.map { "--- \($0.0) ---\n\($0.1.logTail(bytes: 2000))" }.joined(separator: "\n")
            for (_, process) in daemons.reversed() { process.stop(timeout: 5) }
            lan.shutdown()
            etcd.shutdown()
            throw LocalCluster.Failure(description: "\(error)\n\(logs)")
        }
    }

    /// One HTTP call to the api-server.
    public func call(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> (status: Int, body: Data) {
        let response = try await http.perform(.api(method, apiURL + path, token: token, body: body.map { Data($0.utf8) }, timeout: .seconds(10)))
        return (response.status, response.body)
    }

    /// A plain GET of any URL on the LAN, with its status.
    public func get(_ url: String) async throws -> (status: Int, body: String) {
        let response = try await http.perform(CurlHTTP.Request(url: url, timeout: .seconds(10)))
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// One call whose answer is a JSON object.
    public func json(_ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> [String: Any] {
        let (status, data) = try await call(method, path, token: token, body: body)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LocalCluster.Failure(description: "\(method) \(path): \(status) \(String(decoding: data, as: UTF8.self))")
        }
        return object
    }

    /// A tenant on `plan` and a user token for it.
    public func tenant(_ name: String, plan: String) async throws -> String {
        let created = try await call("POST", "/v1/tenants", token: adminToken, body: #"{"name": "\#(name)", "plan": "\#(plan)"}"#)
        guard created.status == 201 || created.status == 409 else {
            throw LocalCluster.Failure(description: "creating tenant \(name): \(created.status) \(String(decoding: created.body, as: UTF8.self))")
        }
        guard let token = try await json("POST", "/v1/tokens", token: adminToken, body: #"{"tenant": "\#(name)", "role": "user"}"#)["token"] as? String else {
            throw LocalCluster.Failure(description: "no token for tenant \(name)")
        }
        return token
    }

    /// The host node `node` runs on.
    public func host(ofNode node: String) -> NetnsHost? {
        hosts.indices.first { Self.nodeName($0 + 1) == node }.map { hosts[$0] }
    }

    /// The last lines each daemon wrote, for failure reports.
    public func logTails(bytes: Int = 3000) -> String {
        daemons.map { "--- \($0.name) ---\n\($0.process.logTail(bytes: bytes))" }.joined(separator: "\n")
    }

    /// Stops the daemons (the agents first), the hosts (their podman and namespaces) and etcd,
    /// and removes the folder (print ``logTails(bytes:)`` first to keep what they said).
    public func shutdown() {
        for (_, process) in daemons.reversed() { process.stop(timeout: 15) }
        http.shutdown()
        lan.shutdown()
        etcd.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}
