import CurlHTTP
import Foundation
import GPUPlaneCore
import GPUPlaneSystem
#if canImport(Glibc)
import Glibc
#endif

/// The whole control plane with every part replaceable, for the fault suite: a 3-member etcd,
/// several `gpuplane-api-server`s and `gpuplane-scheduler`s, and node-agents (fake NVML, one
/// podman) each talking to one of the api-servers. Every daemon is a process with a label
/// (`api-0`, `scheduler-1`, `agent-0`…) that a test kills, freezes, cuts off (``partition(_:)``,
/// schedulers) and starts again with the same arguments; etcd members through ``etcd`` (one cut
/// off from the others by ``partitionEtcdMember(_:)``), podman's service through ``podman``. A
/// shared node's agent keeps its weights cache on a small disk of its own (``weightsDisk``) and
/// `agent-1`'s clock runs ahead (``skewedAgent``).
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
    /// The node whose agent's weights cache lies on a small file system of its own, for the
    /// disk-full fault (``WeightsDisk``); nil when the registry is not installed.
    public private(set) var weightsDisk: WeightsDisk?
    /// The label of the agent whose clock runs ahead (`agent-1`, through libfaketime) and by
    /// how much, seconds; nil when libfaketime is not installed.
    public private(set) var skewedAgent: (label: String, seconds: Int)?

    /// The catalog slug served with weights from ``WeightsDisk/registry`` (Mode 3, on the
    /// shared node ``WeightsDisk/node``).
    public static let weightsModelSlug = "fault-weights"
    /// The repository and tag the weights of ``weightsModelSlug`` are pushed as.
    public static let weightsRepository = "fault/weights:v1"
    /// The file of those weights the catalog names.
    public static let weightsFileName = "w.bin"

    /// libfaketime's preload library (Debian's `faketime`), when installed.
    public static var fakeTimeLibrary: String? {
        ["/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1"]
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The weights cache of the shared node's agent, on a tmpfs mounted for it whose size the
    /// test sets (``resize(bytes:)``), and the registry its weights come from.
    public final class WeightsDisk: @unchecked Sendable {
        /// The node (`fault-node-shared`, `gpu-mode=shared`).
        public let node: String
        /// The agent's label.
        public let agent: String
        /// The cache's directory: the tmpfs's mount point.
        public let directory: URL
        /// The registry on loopback.
        public let registry: RegistryFixture
        private let lock = NSLock()
        private var mounted = false

        init(node: String, agent: String, directory: URL, registry: RegistryFixture) {
            self.node = node
            self.agent = agent
            self.directory = directory
            self.registry = registry
        }

        /// Mounts the tmpfs (`bytes` big).
        func mount(bytes: Int) throws {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            guard Glibc.mount("tmpfs", directory.path, "tmpfs", 0, "size=\(bytes),mode=0755") == 0 else {
                throw LocalCluster.Failure(description: "cannot mount a tmpfs on \(directory.path): \(String(cString: strerror(errno)))")
            }
            lock.withLock { mounted = true }
            WeightsDisk.mountedPaths.withLock { $0.insert(directory.path) }
            WeightsDisk.unmountAtExit()
        }

        /// Makes the file system `bytes` big, keeping what it holds (it may not shrink below that).
        public func resize(bytes: Int) throws {
            guard Glibc.mount("tmpfs", directory.path, "tmpfs", UInt(MS_REMOUNT), "size=\(bytes),mode=0755") == 0 else {
                throw LocalCluster.Failure(description: "cannot resize the tmpfs on \(directory.path) to \(bytes) bytes: \(String(cString: strerror(errno)))")
            }
        }

        /// Bytes used on the file system.
        public var usedBytes: Int {
            var info = statvfs()
            guard statvfs(directory.path, &info) == 0 else { return 0 }
            return Int(info.f_blocks - info.f_bfree) * Int(info.f_frsize)
        }

        /// Bytes free on the file system.
        public var freeBytes: Int {
            var info = statvfs()
            guard statvfs(directory.path, &info) == 0 else { return 0 }
            return Int(info.f_bavail) * Int(info.f_frsize)
        }

        /// The names in the cache's `sub` folder (`entries`, `partial`).
        public func list(_ sub: String) -> [String] {
            (try? FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent(sub).path))?.sorted() ?? []
        }

        /// Unmounts (lazily: the agent may still hold files) and stops the registry. Idempotent.
        func shutdown() {
            let was = lock.withLock { () -> Bool in
                defer { mounted = false }
                return mounted
            }
            if was {
                _ = umount2(directory.path, Int32(MNT_DETACH))
                WeightsDisk.mountedPaths.withLock { _ = $0.remove(directory.path) }
            }
            registry.shutdown()
        }

        private static let mountedPaths = Locked<Set<String>>([])
        private static let atExitInstalled = Locked(false)

        /// Whatever a crashed run left mounted is unmounted when the process exits.
        private static func unmountAtExit() {
            let first = atExitInstalled.withLock { installed -> Bool in
                defer { installed = true }
                return !installed
            }
            guard first else { return }
            atexit {
                for path in WeightsDisk.mountedPaths.withLock({ $0 }) { _ = umount2(path, Int32(MNT_DETACH)) }
            }
        }
    }

    private struct Daemon {
        var executable: String
        var arguments: [String]
        var environment: [String: String]
        var process: ChildProcess
        var starts: Int
        /// The user it runs as when not root (``partition(_:)``).
        var uid: UInt32? = nil
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
    ///
    /// Besides the `agents` dedicated nodes, when the registry is installed: a shared node
    /// (`fault-node-shared`, 2 GPUs, ``weightsDisk``) whose agent's weights cache lies on a
    /// tmpfs of its own, serving the catalog model ``weightsModelSlug`` from the registry. When
    /// libfaketime is installed, `agent-1`'s clock runs `skewSeconds` ahead (``skewedAgent``).
    public static func start(
        binaries: URL, apiServers: Int = 2, schedulers: Int = 2, agents: Int = 2, gpusPerNode: Int = 4, skewSeconds: Int = 90,
        log: (String) -> Void = { _ in }
    ) async throws -> FaultCluster {
        await ClusterSlots.acquire()
        let directory = try TestEnvironment.temporaryDirectory(prefix: "fault-cluster", keep: true)
        log("etcd, 3 members…")
        let etcd: EtcdClusterFixture
        // Members run as users of their own when they can be, so that one member's peer
        // traffic can be cut: ``partitionEtcdMember(_:)``.
        let etcdUsers = canPartition ? (0..<3).map { etcdUIDBase + UInt32($0) } : nil
        do { etcd = try await EtcdClusterFixture.start(size: 3, users: etcdUsers) } catch {
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
            // The weights: a registry on loopback, its login for the agents, and the catalog
            // (the bundled one on the stand-in image, plus the model served from the registry).
            var weightsDisk: WeightsDisk?
            var catalogEntries: [CatalogModel] = []
            if RegistryFixture.isAvailable {
                let password = UUID().uuidString.lowercased()
                let registry = try await RegistryFixture.start(users: ["fault": password])
                let disk = WeightsDisk(
                    node: "fault-node-shared", agent: "agent-shared", directory: directory.appendingPathComponent("shared.weights"),
                    registry: registry)
                weightsDisk = disk
                cluster.weightsDisk = disk
                try disk.mount(bytes: 64 << 20)
                let auth = Data("fault:\(password)".utf8).base64EncodedString()
                let object = ["auths": Dictionary(uniqueKeysWithValues: registry.locations.map { ($0, ["auth": auth]) })]
                try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                    .write(to: directory.appendingPathComponent("weights-registry-auth.json"))
                catalogEntries.append(CatalogModel(
                    slug: weightsModelSlug, mode: .sharedPinned, size: .small, vramGB: 1, image: podman.standInModelServerImage,
                    useCase: "the fault suite's weights, fetched into a small disk", task: .chat,
                    weights: "oci://\(registry.address)/\(weightsRepository)", weightsFile: weightsFileName))
            }
            let catalogFile = directory.appendingPathComponent("catalog.json")
            try LocalCluster.standInCatalog(image: podman.standInModelServerImage, adding: catalogEntries).write(to: catalogFile)
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
                        "--deployment-image", podman.standInModelServerImage, "--catalog-file", catalogFile.path,
                    ], environment: environment)
            }
            for i in 0..<schedulers {
                log("gpuplane-scheduler \(i)…")
                // A user of its own when it can be (root, setpriv, iptables), so that its packets,
                // and only its, can be dropped: ``partition(_:)``.
                let uid = canPartition ? partitionUIDBase + UInt32(i) : nil
                try cluster.launch(
                    "scheduler-\(i)", binaries.appendingPathComponent("gpuplane-scheduler").path,
                    wrapper: uid.map(TestEnvironment.asUser) ?? [], uid: uid,
                    etcdFlags + [
                        "--identity", "scheduler-\(i)", "--lease-ttl", "3s", "--meter-interval", "2s", "--port", "0",
                        "--log-destination", "stderr", "--log-level", "notice", "--catalog-file", catalogFile.path,
                        "--idle-server-grace", "5s",
                    ], environment: environment)
            }
            for i in 0..<apiServers {
                try await eventually("api-server \(i) answers", timeout: 60) { try await cluster.call("GET", "/readyz", via: i).status == 200 }
            }
            var nodes = cluster.nodeNames.enumerated().map { (label: "agent-\($0.offset)", name: $0.element, mode: "dedicated", gpus: gpusPerNode) }
            if let weightsDisk { nodes.append((weightsDisk.agent, weightsDisk.node, "shared", 2)) }
            for (i, node) in nodes.enumerated() {
                let token = try await cluster.json("POST", "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node.name)"}"#)["token"] as? String
                guard let token else { throw LocalCluster.Failure(description: "the api-server issued no node token") }
                let tokenFile = directory.appendingPathComponent("\(node.name).token")
                try token.write(to: tokenFile, atomically: true, encoding: .utf8)
                let nvml = try FakeNVMLFiles.write(
                    gpus: (0..<node.gpus).map { g in
                        PodmanFixture.FakeGPU(index: g, uuid: "GPU-fa17\(String(format: "%02x%02x", i, g))-0000-4000-8000-\(String(format: "%012x", i * 16 + g))")
                    },
                    in: directory, name: node.name)
                var agentEnvironment = environment.merging(nvml.environment) { a, _ in a }
                var skew = ""
                if node.label == "agent-1", let library = fakeTimeLibrary {
                    // Its wall clock runs ahead, what a node whose NTP is off sees; its monotonic
                    // clock stays true, as it does on such a node (faked, it would put every
                    // sleep's deadline 90 s late: the agent's heartbeats stopped).
                    agentEnvironment["LD_PRELOAD"] = library
                    agentEnvironment["FAKETIME"] = "+\(skewSeconds)s"
                    agentEnvironment["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
                    cluster.skewedAgent = (node.label, skewSeconds)
                    skew = ", its clock \(skewSeconds) s ahead"
                }
                let weights: [String]
                if let weightsDisk, node.name == weightsDisk.node {
                    weights = [
                        "--weights-cache", weightsDisk.directory.path, "--weights-cache-size", "1MB",
                        "--weights-registry-auth-file", directory.appendingPathComponent("weights-registry-auth.json").path,
                    ]
                } else {
                    weights = ["--weights-cache", directory.appendingPathComponent("\(node.name).weights").path]
                }
                log("gpuplane-node-agent \(node.name) (\(node.mode)) via api-server \(i % apiServers)\(skew)…")
                let arguments = [
                        "--api-server", cluster.apiURLs[i % apiServers], "--node-token-file", tokenFile.path, "--node-name", node.name,
                        "--gpu-mode", node.mode, "--engine-socket", podman.socketPath, "--cdi-gpu-kind", podman.cdiKind,
                        "--nvml-library", binaries.appendingPathComponent("libFakeNVML.so").path, "--stop-grace-period", "2s",
                        "--log-level", "info", "--log-destination", "stderr",
                        "--allocatable-cpu", "\(node.gpus * 12 + 2)", "--allocatable-memory", "\(node.gpus * 112 + 4)Gi",
                        "--listen", "127.0.0.1", "--port", "\(TestEnvironment.freePort())",
                        "--model-server-ports", "\(21000 + i * 100)-\(21000 + i * 100 + 99)",
                    ] + weights
                if agentEnvironment["LD_PRELOAD"] != nil {
                    // Under libfaketime's preload a Swift program gets no arguments (its
                    // CommandLine.arguments is empty): the settings go by environment instead.
                    for pair in stride(from: 0, to: arguments.count - 1, by: 2) where arguments[pair].hasPrefix("--") {
                        let key = arguments[pair].dropFirst(2).uppercased().replacingOccurrences(of: "-", with: "_")
                        agentEnvironment["GPUPLANE_" + key] = arguments[pair + 1]
                    }
                    try cluster.launch(node.label, binaries.appendingPathComponent("gpuplane-node-agent").path, [], environment: agentEnvironment)
                } else {
                    try cluster.launch(node.label, binaries.appendingPathComponent("gpuplane-node-agent").path, arguments, environment: agentEnvironment)
                }
            }
            for node in nodes.map(\.name) {
                try await eventually("node \(node) registers and is Ready", timeout: 90) { try await cluster.isReady(node) }
            }
            return cluster
        } catch {
            let tails = cluster.logTails(bytes: 2000)
            cluster.shutdown()
            throw LocalCluster.Failure(description: "\(error)\n\(tails)")
        }
    }

    private func launch(
        _ label: String, _ executable: String, wrapper: [String] = [], uid: UInt32? = nil, _ arguments: [String], environment: [String: String]
    ) throws {
        let (executable, arguments) = wrapper.isEmpty ? (executable, arguments) : (wrapper[0], Array(wrapper.dropFirst()) + [executable] + arguments)
        let process = try ChildProcess(
            executable: executable, arguments: arguments, environment: environment,
            logFile: directory.appendingPathComponent("\(label)-1.log"))
        lock.withLock {
            daemons[label] = Daemon(executable: executable, arguments: arguments, environment: environment, process: process, starts: 1, uid: uid)
            order.append(label)
        }
    }

    // MARK: Partitions

    /// The first user id the schedulers run as (`scheduler-i` as this plus i).
    static let partitionUIDBase: UInt32 = 64_990
    /// The first user id the etcd members run as (member i as this plus i).
    static let etcdUIDBase: UInt32 = 64_980
    static let iptables = "/usr/sbin/iptables"

    /// Whether daemons can be cut off: root, `setpriv` and `iptables` with its owner match.
    public static var canPartition: Bool {
        getuid() == 0 && TestEnvironment.hasExecutable("/usr/bin/setpriv") && TestEnvironment.hasExecutable(iptables)
    }

    /// An iptables rule in the `OUTPUT` chain of `table`: its match and target.
    struct Rule: Hashable {
        var table = "filter"
        var spec: [String]

        /// Drops what `match` matches.
        static func drop(_ match: [String]) -> Rule { Rule(spec: match + ["-j", "DROP"]) }
    }

    /// The rules in force, by what they cut (a daemon's label, `etcd-<i>`).
    private var cut: [String: [Rule]] = [:]

    /// Whether daemon `label` runs as a user of its own, so ``partition(_:)`` can cut it off.
    public func canPartition(_ label: String) -> Bool { lock.withLock { daemons[label]?.uid != nil } }

    /// Cuts daemon `label` off the network: every packet it sends (to etcd, on loopback
    /// included) is dropped by an iptables rule on its user (`OUTPUT -m owner --uid-owner`), so
    /// its connections stall as across a partition, while it keeps running. ``heal(_:)`` ends it.
    public func partition(_ label: String) throws {
        guard let uid = lock.withLock({ daemons[label]?.uid }) else { throw LocalCluster.Failure(description: "\(label) runs as no user of its own") }
        try insert([.drop(["-m", "owner", "--uid-owner", "\(uid)"])], as: label)
    }

    /// Ends ``partition(_:)`` of daemon `label`.
    public func heal(_ label: String) throws { try remove(label) }

    /// Whether the etcd members run as users of their own, so ``partitionEtcdMember(_:)`` can
    /// cut one off.
    public var canPartitionEtcd: Bool { etcd.members.allSatisfy { $0.uid != nil } }

    /// Cuts etcd member `index` off the other members, and only them: every packet of a
    /// connection between its peer URL and theirs is dropped, both ways, while clients still
    /// reach its client URL. A minority of one, it must neither commit a write nor answer a
    /// linearizable read. ``healEtcdMember(_:)`` ends it.
    ///
    /// Members talk over connections each side opens (raft's streams are read by the member
    /// that dialled, pipelines written by it), so dropping one side's packets to the other's
    /// port is not enough: a receiver takes data whose acknowledgements are dropped. Hence
    /// (in `OUTPUT`, where the owner match works): everything to or from its peer port (only
    /// members use it), and every packet of a connection it opened to another's peer port:
    /// its user's packets to those ports mark their connection (`CONNMARK`, in `mangle`,
    /// before `filter`), and any packet of a marked connection, the answers included, is
    /// dropped.
    public func partitionEtcdMember(_ index: Int) throws {
        guard etcd.members.indices.contains(index), let uid = etcd.members[index].uid else {
            throw LocalCluster.Failure(description: "etcd member \(index) runs as no user of its own")
        }
        let own = etcd.members[index].peerPort
        let others = etcd.members.enumerated().filter { $0.offset != index }.map { "\($0.element.peerPort)" }
        let mark = "0x\(String(index + 1, radix: 16))00000/0xf00000"
        try insert([
            .drop(["-p", "tcp", "--dport", "\(own)"]),
            .drop(["-p", "tcp", "--sport", "\(own)"]),
            Rule(table: "mangle", spec: [
                "-p", "tcp", "-m", "owner", "--uid-owner", "\(uid)", "-m", "multiport", "--dports", others.joined(separator: ","),
                "-j", "CONNMARK", "--set-xmark", mark,
            ]),
            .drop(["-m", "connmark", "--mark", mark]),
        ], as: "etcd-\(index)")
    }

    /// Ends ``partitionEtcdMember(_:)`` of member `index`.
    public func healEtcdMember(_ index: Int) throws { try remove("etcd-\(index)") }

    /// Inserts `rules` (all or none) under `key`, unless rules are there under it already.
    private func insert(_ rules: [Rule], as key: String) throws {
        try lock.withLock {
            guard cut[key] == nil else { return }
            var done: [Rule] = []
            do {
                for rule in rules {
                    Self.dropRulesAtExit(rule)
                    try Self.rule("-I", rule)
                    done.append(rule)
                }
            } catch {
                for rule in done { try? Self.rule("-D", rule) }
                throw error
            }
            cut[key] = rules
        }
    }

    /// Removes the rules under `key`.
    private func remove(_ key: String) throws {
        try lock.withLock {
            guard let rules = cut[key] else { return }
            for rule in rules { try Self.rule("-D", rule) }
            cut[key] = nil
        }
    }

    private static func rule(_ action: String, _ rule: Rule) throws {
        let result = try Command.run(iptables, ["-w", "5", "-t", rule.table, action, "OUTPUT"] + rule.spec, timeout: .seconds(20))
        guard result.status == 0 else {
            throw LocalCluster.Failure(description: "iptables -t \(rule.table) \(action) OUTPUT \(rule.spec.joined(separator: " ")): \(result.output)")
        }
    }

    private static let rulesLeft = Locked<Set<Rule>>([])
    private static let rulesAtExit = Locked(false)

    /// A rule a crashed run left is removed when the process exits.
    private static func dropRulesAtExit(_ rule: Rule) {
        rulesLeft.withLock { _ = $0.insert(rule) }
        let first = rulesAtExit.withLock { installed -> Bool in
            defer { installed = true }
            return !installed
        }
        guard first else { return }
        atexit {
            for rule in FaultCluster.rulesLeft.withLock({ $0 }) {
                _ = system("\(FaultCluster.iptables) -w 5 -t \(rule.table) -D OUTPUT \(rule.spec.joined(separator: " ")) >/dev/null 2>&1")
            }
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
        let response = try await http.perform(.api(method, apiURLs[via] + path, token: token, body: body.map { Data($0.utf8) }, timeout: timeout))
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
        for rule in lock.withLock({ cut.values.flatMap { $0 } }) { try? Self.rule("-D", rule) }
        lock.withLock { cut.removeAll() }
        for process in all {
            process.signal(SIGCONT)
            process.stop(timeout: 5)
        }
        podman.shutdown()
        weightsDisk?.shutdown()
        etcd.shutdown()
        http.shutdown()
        ClusterSlots.release()
    }
}
