import ArgumentParser
import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import GPUPlaneSystem

/// `gpuplane-bench scheduler`: hollow nodes written straight to etcd, pending replicas written
/// as the api-server would, the scheduler binding them; placements per second end to end
/// (pending in etcd → bound in etcd), pending→bound latency, etcd's own txn rate in the same
/// run, and failover times with the real `gpuplane-scheduler` executable.
struct SchedulerBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scheduler",
        abstract: "Starts its own etcd per fleet size; measures end-to-end placements/s, latency and failover.")

    @Option(parsing: .upToNextOption, help: "Fleet sizes (nodes), one run each.")
    var nodes: [Int] = [1000, 5000]

    @Option(help: "GPUs per node.")
    var gpus = 8

    @Option(help: "Pending replicas written per run.")
    var replicas = 10_000

    @Option(help: "Seconds the placement phase may take at most.")
    var timeout = 180.0

    @Option(help: "Seconds of the etcd txn-rate phase.")
    var txnSeconds = 3.0

    @Flag(help: "Skip the failover phases.")
    var skipFailover = false

    func run() async throws {
        var logger = Logger(label: "bench.scheduler")
        logger.logLevel = .warning
        print("| nodes × GPUs | replicas | bound | placements/s | pending→bound p50 | p99 | etcd txn/s (16 conc.) | bind txns | term startup: won again / fresh caches | crash failover | graceful handover |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for count in nodes {
            let row = try await runOnce(nodes: count, logger: logger)
            print(row)
        }
    }

    private func runOnce(nodes nodeCount: Int, logger: Logger) async throws -> String {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(30)))
        let store = ResourceStore(client: client)

        // Hollow nodes: dedicated H100s, heartbeat keys on one lease kept alive by the bench.
        let lease = try await client.grantLease(ttl: 60).id
        let keeper = Task { do { for try await _ in client.keepAlive(lease, ttl: 60) {} } catch {} }
        defer { keeper.cancel() }
        for start in stride(from: 0, to: nodeCount, by: 100) {
            var txn = StoreTransaction()
            var heartbeats: [Etcd.RequestOp] = []
            for i in start..<min(start + 100, nodeCount) {
                try txn.create(hollowNode(i))
                heartbeats.append(.put(Etcd.PutRequest(key: Data(NodeHeartbeat.key("node-\(i)").utf8), value: Data("1".utf8), lease: lease)))
            }
            _ = try await store.commit(txn)
            _ = try await client.txn(compare: [], success: heartbeats)
        }

        // etcd's own rate for the store's kind of write, same etcd, same run.
        let txnRate = try await etcdTxnRate(client)

        // The scheduler, in this process.
        var session = LeaderSession.Configuration(resyncInterval: .seconds(1), batchWindow: .milliseconds(5))
        session.meter.interval = .seconds(3600)
        let scheduler = Scheduler(
            store: store, pipeline: Pipeline(catalog: try Catalog.standard()),
            configuration: .init(identity: "bench", leaseTTL: 3, session: session), logger: logger)
        let schedulerTask = Task { try await scheduler.run() }
        try await waitFor("leading with synced informers", seconds: 60) {
            (scheduler.currentSession?.statistics.passes ?? 0) > 0
        }

        // Watch bindings: the first time each replica is seen bound.
        let created = Locked([String: ContinuousClock.Instant]())
        let bound = Locked([String: ContinuousClock.Instant]())
        let from = try await client.range(.key("/"), countOnly: true).header.revision + 1
        let watcher = Task {
            do {
                for try await batch in client.watch(.prefix(Replica.storagePrefix(tenant: nil)), startRevision: from) {
                    let now = ContinuousClock.now
                    for event in batch.events where event.type == .put {
                        guard let replica = try? ResourceStore.decode(Replica.self, event.kv), replica.binding != nil else { continue }
                        let key = "\(replica.metadata.tenant)/\(replica.metadata.name)"
                        bound.withLock { if $0[key] == nil { $0[key] = now } }
                    }
                }
            } catch {}
        }
        defer { watcher.cancel() }

        // Pending replicas as the api-server writes them: 100 per transaction, 4 per tenant.
        let start = ContinuousClock.now
        let writer = Task {
            for chunk in stride(from: 0, to: replicas, by: 100) {
                var txn = StoreTransaction()
                var names: [String] = []
                for i in chunk..<min(chunk + 100, replicas) {
                    let tenant = "t\(i / 4)"
                    try txn.create(Replica(
                        metadata: ObjectMeta(name: "r\(i)", tenant: tenant),
                        spec: ReplicaSpec(
                            owner: OwnerReference(kind: .application, name: "app\(i / 4)", uid: "u\(i / 4)"), role: "main",
                            mode: .dedicated, modelSlug: nil, gpus: 1, vramGB: 80, machineTypes: [], priority: .inference,
                            image: "bench")))
                    names.append("\(tenant)/r\(i)")
                }
                _ = try await store.commit(txn)
                let now = ContinuousClock.now
                created.withLock { for name in names { $0[name] = now } }
            }
        }
        try await writer.value
        let expected = min(replicas, nodeCount * gpus)
        try await waitFor("\(expected) bound", seconds: timeout) { bound.withLock { $0.count } >= expected }
        let lastBound = bound.withLock { $0.values.max() } ?? .now
        let elapsed = (lastBound - start).seconds
        let latencies = bound.withLock { b in created.withLock { c in b.compactMap { k, t in c[k].map { (t - $0).seconds * 1000 } } } }.sorted()
        func pct(_ p: Double) -> Double { latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        let stats = scheduler.currentSession?.statistics
        let boundCount = bound.withLock { $0.count }
        print(String(
            format: "# %d nodes: %d bound in %.2f s (%.0f/s), p50 %.0f ms, p99 %.0f ms, etcd txn %.0f/s, %d bind txns, %d passes",
            nodeCount, boundCount, elapsed, Double(boundCount) / elapsed, pct(0.5), pct(0.99), txnRate,
            stats?.transactions ?? 0, stats?.passes ?? 0))

        // A term won again (its lease revoked from outside: the caches are kept) beside a term on
        // fresh caches (a new scheduler, as a restarted process), over the same objects: each
        // from the election won until its caches are synced and its first pass can begin.
        let wonAgain = try await termWonAgain(scheduler, client)
        scheduler.shutdown()
        _ = await schedulerTask.result
        let fresh = try await freshTerm(store: store, session: session, logger: logger)
        let startups = String(
            format: "%.0f ms / %.0f ms (%.2f)", wonAgain.seconds * 1000, fresh.seconds * 1000, wonAgain.seconds / fresh.seconds)
        print("# \(nodeCount) nodes: term startup, won again / fresh caches: \(startups)")

        // Hand over to the real executable for the failover phases.
        var crash = "—", graceful = "—"
        if !skipFailover {
            (crash, graceful) = try await failover(etcd: etcd, store: store, client: client, bound: bound, nodeCount: nodeCount)
        }
        return String(
            format: "| %d × %d | %d | %d | %.0f | %.0f ms | %.0f ms | %.0f | %d | %@ | %@ | %@ |",
            nodeCount, gpus, replicas, boundCount, Double(boundCount) / elapsed, pct(0.5), pct(0.99), txnRate,
            stats?.transactions ?? 0, startups, crash, graceful)
    }

    /// Revokes the leading `scheduler`'s lease and waits for the term it wins again to have its
    /// caches synced; that term's startup.
    private func termWonAgain(_ scheduler: Scheduler, _ client: Etcd.Client) async throws -> Duration {
        let old = scheduler.currentSession
        guard let key = try await client.leader(Scheduler.defaultElectionName) else {
            throw ValidationError("no leader key to revoke the lease of")
        }
        try await client.revokeLease(key.lease)
        var startup: Duration?
        try await waitFor("a term won again, its caches synced", seconds: 120) {
            guard let session = scheduler.currentSession, session !== old else { return false }
            startup = session.statistics.startup
            return startup != nil
        }
        return startup ?? .zero
    }

    /// Starts a new scheduler (no caches yet), waits for its first term's caches to sync and
    /// stops it; that term's startup.
    private func freshTerm(store: ResourceStore, session: LeaderSession.Configuration, logger: Logger) async throws -> Duration {
        let scheduler = Scheduler(
            store: store, pipeline: Pipeline(catalog: try Catalog.standard()),
            configuration: .init(identity: "bench-fresh", leaseTTL: 3, session: session), logger: logger)
        let task = Task { try await scheduler.run() }
        defer { scheduler.shutdown() }
        var startup: Duration?
        try await waitFor("a fresh scheduler's caches synced", seconds: 120) {
            startup = scheduler.currentSession?.statistics.startup
            return startup != nil
        }
        scheduler.shutdown()
        _ = await task.result
        return startup ?? .zero
    }

    /// kill -9 of the leader → first placement by the new one; SIGTERM of the leader → first
    /// placement by the next. A replica is freed and a new pending one written at the signal.
    private func failover(
        etcd: EtcdFixture, store: ResourceStore, client: Etcd.Client, bound: Locked<[String: ContinuousClock.Instant]>,
        nodeCount: Int
    ) async throws -> (String, String) {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("gpuplane-scheduler").path
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            return ("(build gpuplane-scheduler)", "(build gpuplane-scheduler)")
        }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "bench-sched")
        defer { try? FileManager.default.removeItem(at: directory) }
        func start(_ identity: String) throws -> ChildProcess {
            try ChildProcess(
                executable: executable,
                arguments: [
                    "--etcd.endpoints", etcd.endpoints[0], "--identity", identity, "--lease-ttl", "3s",
                    "--meter-interval", "1h", "--log-destination", "stderr", "--log-level", "warning",
                ],
                environment: ["NOTIFY_SOCKET": "", "GPUPLANE_CONFIG": ""],
                logFile: directory.appendingPathComponent("\(identity).log"))
        }
        func leader() async throws -> String? {
            try await client.leader(Scheduler.defaultElectionName).map { String(decoding: $0.value, as: UTF8.self) }
        }
        // Drop the replicas left pending (no room) and free three GPUs, so each probe has a place.
        let all = try await store.list(Replica.self).items
        let drop = all.filter { $0.binding == nil } + all.filter { $0.binding != nil }.prefix(3)
        for start in stride(from: 0, to: drop.count, by: 100) {
            var txn = StoreTransaction()
            for r in drop[start..<min(start + 100, drop.count)] {
                txn.delete(Replica.self, tenant: r.metadata.tenant, name: r.metadata.name)
            }
            _ = try await store.commit(txn)
        }
        let a = try start("a")
        try await waitFor("a leads", seconds: 60) { try await leader() == "a" }
        // a is ready once it has synced (its first placement pass ran): give it a probe to place.
        try await placeOne(store, "probe-a", bound: bound, seconds: 120)
        let b = try start("b")
        try await Task.sleep(for: .seconds(2))  // b's informers are idle while standing by; campaign is open
        let t0 = ContinuousClock.now
        a.kill9()
        let crash = try await placeOne(store, "after-crash", bound: bound, seconds: 60, since: t0)
        let c = try start("c")
        try await Task.sleep(for: .seconds(2))
        let t1 = ContinuousClock.now
        b.signal(SIGTERM)
        let handover = try await placeOne(store, "after-sigterm", bound: bound, seconds: 60, since: t1)
        b.stop()
        c.stop()
        return (String(format: "%.2f s", crash), String(format: "%.2f s", handover))
    }

    /// Writes one pending replica and waits for its binding; seconds since `since` (or its write).
    @discardableResult
    private func placeOne(
        _ store: ResourceStore, _ name: String, bound: Locked<[String: ContinuousClock.Instant]>, seconds limit: Double,
        since: ContinuousClock.Instant? = nil
    ) async throws -> Double {
        let t0 = since ?? .now
        _ = try await store.create(Replica(
            metadata: ObjectMeta(name: name, tenant: "failover"),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: name, uid: name), role: "main", mode: .dedicated,
                modelSlug: nil, gpus: 1, vramGB: 80, machineTypes: [], priority: .inference, image: "bench")))
        try await waitFor("\(name) bound", seconds: limit) { bound.withLock { $0["failover/\(name)"] != nil } }
        return ((bound.withLock { $0["failover/\(name)"] } ?? .now) - t0).seconds
    }

    private func etcdTxnRate(_ client: Etcd.Client) async throws -> Double {
        let deadline = ContinuousClock.now + .milliseconds(Int(txnSeconds * 1000))
        let start = ContinuousClock.now
        let value = String(repeating: "x", count: 600)
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<16 {
                group.addTask {
                    var i = 0
                    while ContinuousClock.now < deadline {
                        let key = "/bench/txn/\(w)/\(i)"
                        _ = try await client.txn(
                            compare: [.createRevision(key, .equal, 0)], success: [.put(.init(key, value))],
                            failure: [.range(.init(.key(key), keysOnly: true))])
                        i += 1
                    }
                    return i
                }
            }
            return try await group.reduce(0, +)
        }
        _ = try await client.delete(.prefix("/bench/txn/"))
        return Double(total) / (ContinuousClock.now - start).seconds
    }

    private func hollowNode(_ i: Int) -> Node {
        let devices = (0..<gpus).map {
            GPUDevice(index: $0, uuid: "GPU-\(i)-\($0)", product: "NVIDIA H100 80GB HBM3", memoryMiB: 81_559)
        }
        return Node(
            metadata: ObjectMeta(
                name: "node-\(i)", labels: [Node.gpuModeLabel: "dedicated", Node.machineTypeLabel: "GPU-H100"]),
            spec: NodeSpec(machineType: "GPU-H100", gpus: devices))
    }

    private func waitFor(_ what: String, seconds limit: Double, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(limit * 1000))
        while ContinuousClock.now < deadline {
            if (try? await condition()) == true { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw ValidationError("timed out after \(limit) s waiting for \(what)")
    }
}
