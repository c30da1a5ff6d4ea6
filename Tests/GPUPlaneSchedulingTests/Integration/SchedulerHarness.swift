import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

@testable import GPUPlaneScheduling

/// A real etcd, the objects the api-server would write, and schedulers (in this process or
/// the real `gpuplane-scheduler` executable) against it. Everything is torn down at the end,
/// even when the body throws.
final class SchedulerHarness: @unchecked Sendable {
    let etcd: EtcdFixture
    let client: Etcd.Client
    let store: ResourceStore
    let heartbeatLease: Int64
    private var keepAlive: Task<Void, Never>?
    private var schedulers: [(Scheduler, Task<Void, any Error>)] = []
    private var processes: [ChildProcess] = []
    private let directory: URL

    static func with(_ body: (SchedulerHarness) async throws -> Void) async throws {
        let harness = try await SchedulerHarness()
        do {
            try await body(harness)
        } catch {
            await harness.tearDown(printLogs: true)
            throw error
        }
        await harness.tearDown(printLogs: false)
    }

    private init() async throws {
        etcd = try await EtcdFixture.start()
        client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(10)))
        store = ResourceStore(client: client)
        // Long: the nodes' shared heartbeat lease must outlast any stall of a loaded full run
        // (a 30 s one lapsed once, failing every harness test at once); tests about expiry use
        // short leases of their own.
        heartbeatLease = try await client.grantLease(ttl: 120).id
        directory = try TestEnvironment.temporaryDirectory(prefix: "sched")
        let client = self.client
        let lease = heartbeatLease
        keepAlive = Task {
            do { for try await _ in client.keepAlive(lease, ttl: 120) {} } catch {}
        }
    }

    private func tearDown(printLogs: Bool) async {
        for (scheduler, _) in schedulers { scheduler.shutdown() }
        for (_, task) in schedulers { _ = await task.result }
        for process in processes {
            if printLogs { print("--- \(process.logFile.lastPathComponent)\n\(process.logTail(bytes: 3000))") }
            process.kill9()
        }
        keepAlive?.cancel()
        etcd.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: Schedulers

    static let quietLogger: Logger = {
        var logger = Logger(label: "test.scheduler")
        logger.logLevel = .warning
        return logger
    }()

    /// A session configuration for tests: fast resync, 1 s meter unless told otherwise.
    static func sessionConfiguration(
        meterInterval: Duration = .seconds(3600), warmPool: [String: Int] = [:]
    ) -> LeaderSession.Configuration {
        LeaderSession.Configuration(
            resyncInterval: .milliseconds(200), batchWindow: .milliseconds(2),
            meter: .init(interval: meterInterval), warmPool: warmPool, idleServerGrace: .seconds(3600))
    }

    /// Starts a scheduler in this process. Its leader lease is long (10 s) so that a loaded
    /// machine's scheduling stalls do not end its term in tests that are not about failover
    /// (a 3 s lease went unrenewed for 6 s in a full run beside two busy loops).
    @discardableResult
    func startScheduler(
        identity: String = "s1", leaseTTL: Int64 = 10, session: LeaderSession.Configuration = sessionConfiguration()
    ) -> Scheduler {
        let scheduler = Scheduler(
            store: store, pipeline: Fixture.pipeline,
            configuration: .init(identity: identity, leaseTTL: leaseTTL, session: session),
            logger: Self.quietLogger)
        let task = Task { try await scheduler.run() }
        schedulers.append((scheduler, task))
        return scheduler
    }

    /// Waits until `scheduler` leads.
    func waitUntilLeading(_ scheduler: Scheduler, timeout: Double = 20) async throws {
        try await eventually("\(scheduler.configuration.identity) leads", timeout: timeout) { scheduler.isLeader }
    }

    /// The `gpuplane-scheduler` executable built next to the test bundle.
    static var executable: String {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidates = [bundleDirectory.appendingPathComponent("gpuplane-scheduler").path]
        // On Linux the xctest bundle is a file in .build/debug; on macOS a directory inside it.
        candidates.append(bundleDirectory.deletingLastPathComponent().appendingPathComponent("gpuplane-scheduler").path)
        if let dir = ProcessInfo.processInfo.environment["GPUPLANE_BUILD_DIR"] {
            candidates.insert(URL(fileURLWithPath: dir).appendingPathComponent("gpuplane-scheduler").path, at: 0)
        }
        candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/gpuplane-scheduler")
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    /// Starts the real executable.
    func startProcess(identity: String, leaseTTL: Int = 3, meterInterval: String = "1h", extra: [String] = []) throws -> ChildProcess {
        let path = Self.executable
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError("gpuplane-scheduler not built at \(path): run `swift build --product gpuplane-scheduler`")
        }
        let process = try ChildProcess(
            executable: path,
            arguments: [
                "--etcd.endpoints", etcd.endpoints.joined(separator: ","), "--identity", identity,
                "--lease-ttl", "\(leaseTTL)s", "--meter-interval", meterInterval, "--resync-interval", "200ms",
                "--log-destination", "stderr", "--log-level", "info", "--port", "0",
            ] + extra,
            environment: ["NOTIFY_SOCKET": "", "GPUPLANE_CONFIG": ""],
            logFile: directory.appendingPathComponent("\(identity).log"))
        processes.append(process)
        return process
    }

    /// The identity and create revision of the current leader, if any.
    func currentLeader() async throws -> (identity: String, revision: Int64)? {
        try await Self.currentLeader(client)
    }

    /// The identity and create revision of the leader elected through `client`'s etcd, if any.
    static func currentLeader(_ client: Etcd.Client) async throws -> (identity: String, revision: Int64)? {
        guard let kv = try await client.leader(Scheduler.defaultElectionName) else { return nil }
        return (String(decoding: kv.value, as: UTF8.self), kv.createRevision)
    }

    /// The revision at which the leader key created at `revision` was deleted (its lease
    /// expired or it resigned), read from etcd's history.
    func leadershipEnd(createdAt revision: Int64) async throws -> Int64 {
        try await leadership(createdAt: revision).end
    }

    /// Who held the election key created at `revision`, and the revision at which it was
    /// deleted, read from etcd's history.
    func leadership(createdAt revision: Int64) async throws -> (identity: String, end: Int64) {
        let keys = try await client.range(.prefix(Scheduler.defaultElectionName + "/"), revision: revision).kvs
        guard let kv = keys.first(where: { $0.createRevision == revision }) else {
            throw HarnessError("no leader key created at \(revision)")
        }
        for try await batch in client.watch(.key(kv.key), startRevision: revision + 1) {
            if let delete = batch.events.first(where: { $0.type == .delete }) {
                return (String(decoding: kv.value, as: UTF8.self), delete.revision)
            }
        }
        throw HarnessError("watch ended")
    }

    // MARK: Objects, as the api-server writes them

    /// Writes a node and, unless told otherwise, its heartbeat key on the shared long lease.
    @discardableResult
    func addNode(_ node: Node, heartbeat: Bool = true, lease: Int64? = nil) async throws -> Node {
        var node = node
        node.status.conditions = []
        let stored = try await store.create(node)
        if heartbeat {
            _ = try await client.put(NodeHeartbeat.key(node.metadata.name), "alive", lease: lease ?? heartbeatLease)
        }
        return stored
    }

    @discardableResult
    func addReplica(_ replica: Replica) async throws -> Replica {
        try await store.create(replica)
    }

    func replica(_ tenant: String, _ name: String) async throws -> Replica {
        try await store.get(Replica.self, tenant: tenant, name: name)
    }

    /// Waits until the replica is bound and returns it.
    @discardableResult
    func waitBound(_ tenant: String, _ name: String, timeout: Double = 20) async throws -> Replica {
        try await eventually("\(tenant)/\(name) bound", timeout: timeout) {
            try await self.replica(tenant, name).binding != nil
        }
        return try await replica(tenant, name)
    }

    /// Updates an object, retrying on conflicts (another writer, such as the scheduler).
    func modify<R: Resource>(_ type: R.Type, tenant: String = ObjectMeta.clusterTenant, name: String, _ change: (inout R) -> Void) async throws {
        for _ in 0..<50 {
            var object = try await store.get(R.self, tenant: tenant, name: name)
            change(&object)
            do {
                _ = try await store.update(object)
                return
            } catch let error as StoreError where error.code == .conflict {
                continue
            }
        }
        throw HarnessError("could not update \(name)")
    }

    func events(about name: String) async throws -> [Event] {
        try await store.list(Event.self).items.filter { $0.spec.involved.name == name }
    }
}

struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A pending replica as the api-server writes it.
func pendingReplica(
    _ name: String, tenant: String = "acme", mode: GPUMode = .dedicated, slug: String? = nil, gpus: Int = 1,
    vramGB: Int = 80, priority: GPUPriority = .inference, owner: OwnerReference? = nil
) -> Replica {
    Replica(
        metadata: ObjectMeta(name: name, tenant: tenant),
        spec: ReplicaSpec(
            owner: owner ?? OwnerReference(kind: .application, name: name, uid: "app-\(name)"), role: "main",
            mode: mode, modelSlug: slug, gpus: gpus, vramGB: vramGB, machineTypes: [], priority: priority,
            image: "img"))
}
