import ArgumentParser
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport

/// `gpuplane-bench fleet`: the whole system at fleet scale, every part its own process: etcd,
/// two `gpuplane-api-server`s, two `gpuplane-scheduler`s and `gpuplane-hollow-nodes` (simulated
/// node-agents that register, beat and watch through the api-servers). Applications (and a few
/// deployments) are applied through the api-servers at a chosen rate; the report is one table per
/// fleet size, each throughput beside raw etcd puts and txns measured in the same run.
struct FleetBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Whole-system scale with hollow nodes: apply→bound/running, placements/s, heartbeat cost, failovers, RSS and CPU.")

    @Option(help: "Fleet sizes, comma-separated or repeated (one run each).")
    var nodes: [String] = ["100", "1000"]

    @Option(help: "Applications applied per node (one GPU pod each; every tenth a CPU pod).")
    var appsPerNode = 1.0

    @Option(help: "Applications per tenant (at least 16 tenants): applies of one tenant take turns.")
    var appsPerTenant = 25

    @Option(help: "Deployments per 100 nodes (min_instances 1).")
    var deploymentsPer100 = 1

    @Option(help: "Applies per second.")
    var rate = 50.0

    @Option(help: "Seconds from a binding seen to the replica reported running (hollow nodes).")
    var runDelay = 1.0

    @Option(help: "The api-servers' heartbeat TTL, seconds.")
    var heartbeatTTL = 5

    @Option(help: "Seconds of each steady-state measurement (heartbeat cost, raw etcd rates).")
    var steadySeconds = 10.0

    @Option(help: "Seconds of rest after everything else before the last RSS sample (longer than the api-servers' keep-alive-timeout, 60 s, after the last nodes went home, so their idle connections are closed, and than the daemons' memory-trim-interval, 30 s, so a burst's freed memory has gone back).")
    var restSeconds = 120.0

    @Option(help: "Seconds each waiting phase may take at most.")
    var timeout = 300.0

    @Option(help: "Hollow nodes started per second.")
    var startRate = 200

    @Flag(help: "Skip the failover phases (silent node, scheduler and api-server kill -9).")
    var skipFailover = false

    @Option(help: "Also write each fleet size's figures as one JSON object per line here.")
    var json: String?

    @Option(help: "Log level of the api-servers, schedulers and hollow nodes (notice shows each node marked silent and each move between api-servers).")
    var logLevel = "warning"

    @Option(help: "Folder holding gpuplane-api-server, gpuplane-scheduler and gpuplane-hollow-nodes (default: this executable's).")
    var binaries: String?

    func run() async throws {
        // A run killed part way (a melted machine, a timeout) keeps what it printed.
        StandardOutput.lineBuffered()
        let sizes = nodes.flatMap { $0.split(separator: ",") }.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= 2 }) else { throw ValidationError("--nodes needs sizes of 2 or more, e.g. 100,1000") }
        // Each is slept as whole milliseconds: NaN, infinity or a day and more would trap there.
        for (flag, seconds) in [("--steady-seconds", steadySeconds), ("--rest-seconds", restSeconds)] where !(0...86_400).contains(seconds) {
            throw ValidationError("\(flag) must be 0 to 86400 seconds, not \(seconds)")
        }
        let folder = URL(fileURLWithPath: binaries ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path)
        for name in ["gpuplane-api-server", "gpuplane-scheduler", "gpuplane-hollow-nodes"] {
            guard FileManager.default.isExecutableFile(atPath: folder.appendingPathComponent(name).path) else {
                throw ValidationError("\(name) is not in \(folder.path): build it (swift build -c release) or pass --binaries")
            }
        }
        _ = FileLimit.raiseToHardLimit()
        if let json, !FileManager.default.createFile(atPath: json, contents: nil) {
            throw ValidationError("--json: cannot create '\(json)'")
        }
        print("machine: \(ProcessInfo.processInfo.activeProcessorCount) CPUs, \(ProcessInfo.processInfo.physicalMemory / 1_048_576) MiB; heartbeat 1 s, TTL \(heartbeatTTL) s, run delay \(runDelay) s, \(rate) applies/s")
        for size in sizes {
            let run = FleetRun(bench: self, nodes: size, binaries: folder)
            let result = try await run.execute()
            print("")
            print(result.table())
            // A figure with no samples is NaN: written as the string "nan" rather than
            // losing the whole line (JSONEncoder refuses NaN).
            let encoder = JSONEncoder()
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            if let json, let line = try? encoder.encode(result) {
                let handle = FileHandle(forWritingAtPath: json)
                handle?.seekToEndOfFile()
                handle?.write(line + Data("\n".utf8))
                try? handle?.close()
            }
        }
    }
}

/// The figures of one fleet size.
struct FleetResult: Codable {
    var nodes: Int
    var victims: Int
    var nodesReady: Int
    var registerSeconds: Double
    var applications: Int
    var deployments: Int
    var replicas: Int
    var bound: Int
    var running: Int
    var applyErrors: Int
    var applyAnsweredP50: Double
    var applyAnsweredP99: Double
    var conflictRetries: Int
    var applyToBoundP50: Double
    var applyToBoundP99: Double
    var applyToRunningP50: Double
    var applyToRunningP99: Double
    var placementsPerSecond: Double
    var pipelinePlacementsPerSecond: Double
    var fanoutP50: Double
    var fanoutP99: Double
    var fanoutSamples: Int
    var rawPutsPerSecond: Double
    var rawTxnsPerSecond: Double
    var rawTxnP99: Double
    var steadyProposalsPerSecond: Double
    var steadyPutsPerSecond: Double
    var steadyRangesPerSecond: Double
    var steadyLeaseRenewsPerSecond: Double
    var loadProposalsPerSecond: Double
    var etcdWatchers: Int
    /// The api-servers' watches at steady state served by their caches, and by etcd watches
    /// of their own (`gpuplane_api_watches`).
    var watchesFromCaches: Int?
    var watchesOnEtcd: Int?
    /// etcd's watchers and the api-servers' own etcd watches once the restarted api-server's
    /// nodes beat again (two TTLs after it answers).
    var etcdWatchersAfterRestart: Int?
    var watchesOnEtcdAfterRestart: Int?
    var silentToNotReady: Double?
    var silentToRescheduled: Double?
    var victimReplicas: Int
    var schedulerFailover: Double?
    var apiServerRestartNotReady: Int?
    var apiServerRestartSeconds: Double?
    /// After the restart, when the restarted api-server held at least 40 % of the nodes'
    /// watches again and the other no more than its nodes' (its nodes came back with their
    /// watches: `api-server-return-after`), seconds after the kill, and each api-server's
    /// watches then (`gpuplane_api_watches`, both kinds of serving).
    var nodesBackSeconds: Double?
    var watchesPerAPIServerAfterReturn: [Int]?
    /// The other api-server stopped with SIGTERM (a rolling restart) once the first one's
    /// nodes were back: seconds until it exited (nil: it did not within 60 s and was killed),
    /// and the nodes that went NotReady from the signal until two TTLs after it answered again.
    var apiServerStopSeconds: Double?
    var apiServerGracefulRestartNotReady: Int?
    var spuriousNotReady: Int
    /// Heartbeats the hollow nodes had answered after more than their interval, the slowest
    /// (seconds), and how many spurious NotReady followed such a beat of their node (within
    /// six seconds before): a slow answer, rather than a node that sent late.
    var slowBeats = 0
    var slowestBeat: Double?
    var spuriousAfterSlowBeat = 0
    var scheduler: SchedulerFigures
    var processes: [ProcessFigures]

    /// The schedulers' own counters over the workload (both summed: only the leader's move).
    struct SchedulerFigures: Codable {
        var passes: Int
        var transactions: Int
        var bindings: Int
        var conflicts: Int
        var meanPassMS: Double
        /// Step of the pass (`gpuplane_scheduler_step_duration_seconds`) → its time over the
        /// workload divided by the passes, ms.
        var stepMS: [String: Double] = [:]
    }

    struct ProcessFigures: Codable {
        var name: String
        var rssMiB: Double
        /// The anonymous part of the peak RSS (heap, stacks): RSS less the mapped binary and
        /// libraries, which are file pages shared with every process that maps them.
        var anonMiB: Double?
        var cpuLoad: Double
        var cpuSteady: Double
        /// RSS and its anonymous part at the end, after `--rest-seconds` of rest.
        var restRSSMiB: Double?
        var restAnonMiB: Double?
        /// The live allocations of its heap at the end (`gpuplane_process_heap_in_use_bytes`;
        /// the daemons that serve it: api-servers and schedulers).
        var restHeapMiB: Double?
    }

    func table() -> String {
        func ms(_ x: Double) -> String { x.isNaN ? "—" : String(format: "%.0f ms", x) }
        func s(_ x: Double?) -> String { x.map { String(format: "%.2f s", $0) } ?? "—" }
        var lines = [
            "### \(nodes) hollow nodes (\(victims) of them in a second process, killed for the silent-node phase)",
            "",
            "| measure | value | beside |",
            "| --- | ---: | --- |",
            "| nodes registered and Ready | \(nodesReady) / \(nodes) in \(String(format: "%.1f", registerSeconds)) s | |",
            "| applied | \(applications) applications, \(deployments) deployments (\(applyErrors) refused) | |",
            "| replicas bound / running | \(bound) / \(running) of \(replicas) | |",
            "| apply answered p50 / p99 | \(ms(applyAnsweredP50)) / \(ms(applyAnsweredP99)) | request sent → 201, \(conflictRetries) answers 409 sent again |",
            "| scheduler over the workload: passes, transactions, bindings, conflicts | \(scheduler.passes), \(scheduler.transactions), \(scheduler.bindings), \(scheduler.conflicts) | mean pass \(ms(scheduler.meanPassMS)) |",
            "| scheduler pass by step, ms per pass | \(scheduler.stepMS.filter { $0.value >= 0.5 }.sorted { $0.value > $1.value }.map { "\($0.key) \(String(format: "%.0f", $0.value))" }.joined(separator: ", ")) | read, decide and commit of each step |",
            "| apply → bound p50 / p99 | \(ms(applyToBoundP50)) / \(ms(applyToBoundP99)) | etcd txn p99 \(ms(rawTxnP99)) (16 concurrent, same run) |",
            "| apply → running p50 / p99 | \(ms(applyToRunningP50)) / \(ms(applyToRunningP99)) | run delay included |",
            "| placements/s | \(String(format: "%.0f", placementsPerSecond)) | etcd raw put \(String(format: "%.0f", rawPutsPerSecond))/s, txn \(String(format: "%.0f", rawTxnsPerSecond))/s (16 concurrent, same run); placement pipeline alone \(String(format: "%.0f", pipelinePlacementsPerSecond))/s (ratio \(String(format: "%.3f", placementsPerSecond / pipelinePlacementsPerSecond))) |",
            "| watch fan-out (bound in etcd → seen by its node) p50 / p99 | \(ms(fanoutP50)) / \(ms(fanoutP99)) | \(fanoutSamples) samples |",
            "| etcd at steady state: writes (raft proposals)/s | \(String(format: "%.1f", steadyProposalsPerSecond)) | \(String(format: "%.2f", steadyProposalsPerSecond / Double(max(nodes, 1)) * 100)) % of node count |",
            "| etcd at steady state: puts/s, ranges/s, lease renewals/s | \(String(format: "%.1f", steadyPutsPerSecond)), \(String(format: "%.0f", steadyRangesPerSecond)), \(String(format: "%.0f", steadyLeaseRenewsPerSecond)) | |",
            "| etcd writes (raft proposals)/s while applying and running | \(String(format: "%.0f", loadProposalsPerSecond)) | |",
            "| etcd watchers | \(etcdWatchers) | etcd_debugging_mvcc_watcher_total; the api-servers' watches: \(watchesFromCaches.map(String.init) ?? "—") from their caches, \(watchesOnEtcd.map(String.init) ?? "—") on etcd directly |",
            "| etcd watchers after the api-server restart | \(etcdWatchersAfterRestart.map(String.init) ?? "—") | \(watchesOnEtcdAfterRestart.map { "\($0) watches on etcd directly" } ?? "") |",
            "| node silent (kill -9) → NotReady | \(s(silentToNotReady)) | |",
            "| node silent → its \(victimReplicas) replicas bound elsewhere | \(s(silentToRescheduled)) | |",
            "| scheduler leader kill -9 → next placement | \(s(schedulerFailover)) | |",
            "| api-server kill -9 + restart → its nodes beating again | \(s(apiServerRestartSeconds)) | \(apiServerRestartNotReady.map { "\($0) nodes NotReady meanwhile" } ?? "—") |",
            "| api-server kill -9 → its nodes back on it (≥ 40 % of the watches, none left behind) | \(s(nodesBackSeconds)) | \(watchesPerAPIServerAfterReturn.map { "watches per api-server then: " + $0.map(String.init).joined(separator: " + ") } ?? "—") |",
            "| api-server SIGTERM → exited (rolling restart; started again at once) | \(s(apiServerStopSeconds)) | \(apiServerGracefulRestartNotReady.map { "\($0) nodes NotReady from the signal to two TTLs after it answered" } ?? "—") |",
            "| spurious NotReady (nodes never silenced) | \(spuriousNotReady) | \(spuriousAfterSlowBeat) after a heartbeat of theirs answered late |",
            "| heartbeats answered after more than an interval (1 s) | \(slowBeats) | slowest \(s(slowestBeat)) |",
            "",
            "| process | RSS MiB (peak) | of it anonymous (heap, stacks) | at rest at the end: RSS (anonymous) MiB | of it live heap MiB | CPU % under load | CPU % steady |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in processes {
            lines.append(String(
                format: "| %@ | %.0f | %.0f | %.0f (%.0f) | %@ | %.0f | %.0f |", p.name, p.rssMiB, p.anonMiB ?? .nan, p.restRSSMiB ?? .nan,
                p.restAnonMiB ?? .nan, p.restHeapMiB.map { String(format: "%.0f", $0) } ?? "—", p.cpuLoad, p.cpuSteady))
        }
        return lines.joined(separator: "\n")
    }
}

/// One fleet size, from a fresh etcd to the last process stopped.
final class FleetRun: @unchecked Sendable {
    let bench: FleetBench
    let nodes: Int
    let victims: Int
    let binaries: URL
    let directory: URL
    let http = CurlHTTP.Client(name: "bench-fleet", maxConnections: 64)
    let empty: URL
    /// The child processes by role (a restarted one's old process as `<role>-old`).
    let procs = Locked([String: ChildProcess]())
    var etcdPID: Int32 = 0

    /// How many times each label was launched.
    private let launches = Locked([String: Int]())

    func adopt(_ name: String, _ process: ChildProcess) { procs.withLock { $0[name] = process } }

    /// The live processes' ids by role, etcd's included.
    func pids() -> [String: Int32] {
        var result = procs.withLock { $0.filter { !$0.key.hasSuffix("-old") && $0.value.isRunning }.mapValues(\.pid) }
        if etcdPID > 0 { result["etcd"] = etcdPID }
        return result
    }

    /// When each owner (application or deployment) was applied, and when each replica was first
    /// seen bound and running (wall clock, ms since 1970: the hollow nodes' journal is too).
    let applied = Locked([String: Double]())
    /// Each application apply's latency, sent → its final answer, 409 retries included (ms).
    let answered = Locked([Double]())
    /// Applies answered 409 and sent again.
    let conflictRetries = Locked(0)
    let bound = Locked([String: (owner: String, ms: Double, node: String)]())
    let running = Locked([String: Double]())
    /// The latest binding node of each replica.
    let placement = Locked([String: String]())
    /// Each node's Ready, and the nodes that went NotReady (name → wall ms).
    let ready = Locked([String: Bool]())
    let wentNotReady = Locked([(String, Double)]())

    init(bench: FleetBench, nodes: Int, binaries: URL) {
        self.bench = bench
        self.nodes = nodes
        self.victims = max(2, nodes / 100)
        self.binaries = binaries
        self.directory = (try? TestEnvironment.temporaryDirectory(prefix: "bench-fleet-\(nodes)", keep: true))
            ?? URL(fileURLWithPath: NSTemporaryDirectory())
        self.empty = directory.appendingPathComponent("empty.conf")
    }

    static func nowMS() -> Double { Date().timeIntervalSince1970 * 1000 }

    func launch(_ name: String, _ label: String, _ arguments: [String]) throws -> ChildProcess {
        // A restarted process logs to a file of its own (api-server-0.2.log).
        let starts = launches.withLock { $0[label, default: 0] += 1; return $0[label] ?? 1 }
        return try ChildProcess(
            executable: binaries.appendingPathComponent(name).path, arguments: arguments,
            environment: ["GPUPLANE_CONFIG": empty.path, "NOTIFY_SOCKET": ""],
            logFile: directory.appendingPathComponent(starts == 1 ? "\(label).log" : "\(label).\(starts).log"))
    }

    func execute() async throws -> FleetResult {
        try "".write(to: empty, atomically: true, encoding: .utf8)
        print("# \(nodes) nodes: logs in \(directory.path)")
        let etcd = try await EtcdFixture.start(extraArguments: ["--quota-backend-bytes", "8589934592"])
        defer {
            for (_, child) in procs.withLock({ $0 }) { child.stop(timeout: 5) }
            etcd.shutdown()
        }
        etcdPID = etcd.member.pid ?? 0
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(30)))
        let etcdFlags = ["--etcd.endpoints", etcd.endpoints[0]]
        let admin = "gp_bench_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
        let adminFile = directory.appendingPathComponent("admin-token")
        try admin.write(to: adminFile, atomically: true, encoding: .utf8)
        let secretKeyFile = try SecretKeyFile.create(in: directory)
        let ports = [TestEnvironment.freePort(), TestEnvironment.freePort()]
        let apiURLs = ports.map { "http://127.0.0.1:\($0)" }
        func startAPIServer(_ i: Int) throws -> ChildProcess {
            try launch("gpuplane-api-server", "api-server-\(i)", etcdFlags + [
                "--port", "\(ports[i])", "--secret-key-file", secretKeyFile.path, "--admin-token-file", adminFile.path,
                "--heartbeat-ttl", "\(bench.heartbeatTTL)", "--log-level", bench.logLevel, "--log-destination", "stderr",
                "--max-connections-per-source", "0", "--auth-failure-limit", "0",
            ])
        }
        // Each scheduler serves /metrics on a port of its own (the same one after a restart).
        let schedulerPorts = ["a": TestEnvironment.freePort(), "b": TestEnvironment.freePort()]
        func startScheduler(_ identity: String) throws -> ChildProcess {
            try launch("gpuplane-scheduler", "scheduler-\(identity)", etcdFlags + [
                "--identity", identity, "--lease-ttl", "3s", "--meter-interval", "1h",
                "--listen", "127.0.0.1", "--port", "\(schedulerPorts[identity] ?? 0)",
                "--log-destination", "stderr", "--log-level", bench.logLevel,
            ])
        }
        adopt("api-server-0", try startAPIServer(0))
        adopt("api-server-1", try startAPIServer(1))
        adopt("scheduler-a", try startScheduler("a"))
        adopt("scheduler-b", try startScheduler("b"))
        for url in apiURLs {
            try await eventually("\(url) answers", timeout: 60) { try await self.call("GET", url + "/readyz").status == 200 }
        }

        // Watches of the nodes and replicas in etcd, the bench's own view (wall clock).
        let watchers = startWatches(client)
        defer { watchers.forEach { $0.cancel() } }

        // The fleet: the main process and a small second one (the victims).
        let registerStart = ContinuousClock.now
        let journal = directory.appendingPathComponent("journal")
        func hollow(_ label: String, prefix: String, count: Int, extra: [String] = []) throws -> ChildProcess {
            try launch("gpuplane-hollow-nodes", label, extra + [
                "--api-server", apiURLs.joined(separator: ","), "--nodes", "\(count)", "--name-prefix", prefix,
                "--admin-token-file", adminFile.path, "--token-file", directory.appendingPathComponent("\(label).tokens").path,
                "--run-delay", "\(Int(bench.runDelay * 1000))ms", "--start-rate", "\(bench.startRate)",
                "--journal-file", journal.path + "-" + label, "--log-level", bench.logLevel,
            ])
        }
        adopt("hollow", try hollow("hollow", prefix: "hollow", count: nodes - victims))
        // The victims are the only H200 hosts: the probe applications ask for GPU-H200 first
        // (H100 next), so the silent-node phase has replicas to move.
        adopt("victims", try hollow("victims", prefix: "victim", count: victims, extra: ["--machine-type", "GPU-H200"]))
        try await wait("\(nodes) nodes Ready", self.bench.timeout) { self.ready.withLock { $0.values.filter { $0 }.count } >= self.nodes }
        let registerSeconds = (ContinuousClock.now - registerStart).seconds
        let nodesReady = ready.withLock { $0.values.filter { $0 }.count }
        print("  \(nodesReady) nodes Ready after \(String(format: "%.1f", registerSeconds)) s")

        // Steady state: what the heartbeats alone cost etcd, and the processes' CPU.
        let metrics = PrometheusMetrics(url: etcd.endpoints[0] + "/metrics", http: http)
        try await Task.sleep(for: .seconds(2))
        let cpuSteadyStart = ProcessSampler(pids())
        let before = (try? await metrics.read()) ?? PrometheusMetrics.Values(values: [:])
        try await Task.sleep(for: .milliseconds(Int(bench.steadySeconds * 1000)))
        let after = (try? await metrics.read()) ?? PrometheusMetrics.Values(values: [:])
        let cpuSteady = cpuSteadyStart.cpuPercent(pids())
        let window = bench.steadySeconds
        let steadyProposals = (after["etcd_server_proposals_committed_total"] - before["etcd_server_proposals_committed_total"]) / window
        let steadyPuts = (after["etcd_mvcc_put_total"] - before["etcd_mvcc_put_total"]) / window
        let steadyRanges = (after["etcd_mvcc_range_total"] - before["etcd_mvcc_range_total"]) / window
        let steadyRenews = (after["etcd_debugging_lease_renewed_total"] - before["etcd_debugging_lease_renewed_total"]) / window
        let watcherCount = Int(after["etcd_debugging_mvcc_watcher_total"])
        let steadyWatches = await apiWatches(apiURLs)
        print(String(format: "  steady: %.1f proposals/s, %.1f puts/s, %.0f ranges/s, %.0f lease renewals/s, %d etcd watchers", steadyProposals, steadyPuts, steadyRanges, steadyRenews, watcherCount)
            + " (the api-servers' watches: \(steadyWatches.map { "\($0.cache) from their caches, \($0.etcd) on etcd directly" } ?? "—"))")

        // Raw etcd beside the fleet's load, same run.
        let (rawPuts, _) = try await etcdRate(client, txn: false)
        let (rawTxns, rawTxnP99) = try await etcdRate(client, txn: true)
        print(String(format: "  etcd raw: %.0f puts/s, %.0f txns/s (txn p99 %.1f ms)", rawPuts, rawTxns, rawTxnP99))

        // The workload, through the api-servers at the chosen rate.
        let appCount = max(1, Int(Double(nodes) * bench.appsPerNode))
        let deploymentCount = max(0, nodes * bench.deploymentsPer100 / 100)
        // Applies of one tenant take turns (its quota is admitted by CAS): enough tenants that
        // few overlap; an overlap answers 409 and is sent again, as a client would.
        let tenants = try await makeTenants(apiURLs[0], admin: admin, count: max(16, appCount / bench.appsPerTenant))
        let loadBefore = (try? await metrics.read()) ?? PrometheusMetrics.Values(values: [:])
        let schedulerMetrics = schedulerPorts.values.sorted().map { PrometheusMetrics(url: "http://127.0.0.1:\($0)/metrics", http: http) }
        func schedulerCounters() async -> [String: Double] {
            var sum: [String: Double] = [:]
            for m in schedulerMetrics {
                guard let values = try? await m.read() else { continue }
                for (name, value) in values.values where name.hasPrefix("gpuplane_scheduler_") { sum[name, default: 0] += value }
            }
            return sum
        }
        let schedulerBefore = await schedulerCounters()
        let modifiesBefore = await apiModifies(apiURLs)
        let cpuLoadStart = ProcessSampler(pids())
        let peak = PeakRSS()
        let sampler = Task { while !Task.isCancelled { peak.sample(self.pids()); try? await Task.sleep(for: .milliseconds(500)) } }
        defer { sampler.cancel() }
        let applyStart = Self.nowMS()
        let applyErrors = try await applyWorkload(apiURLs, tenants: tenants, apps: appCount, deployments: deploymentCount)
        print("  applied \(appCount) applications and \(deploymentCount) deployments in \(String(format: "%.1f", (Self.nowMS() - applyStart) / 1000)) s (\(applyErrors) refused, \(conflictRetries.withLock { $0 }) 409s sent again); answered p50 \(String(format: "%.0f", pct(answered.withLock { $0 }, 0.5))) ms")
        let expected = appCount - applyErrors
        // Every applied application's replica bound, and every bound replica of an applied
        // owner reported running.
        try? await wait("\(expected) replicas running", bench.timeout) {
            let owners = self.applied.withLock { $0 }
            let owned = self.bound.withLock { $0.filter { owners[$0.value.owner] != nil }.map(\.key) }
            return owned.count >= expected && self.running.withLock { running in owned.allSatisfy { running[$0] != nil } }
        }
        let cpuLoad = cpuLoadStart.cpuPercent(pids())
        let loadAfter = (try? await metrics.read()) ?? PrometheusMetrics.Values(values: [:])
        let schedulerAfter = await schedulerCounters()
        if let before = modifiesBefore, let after = await apiModifies(apiURLs) {
            print("  read-modify-writes (status reports) while applying and running: \(after.serializable - before.serializable) decided by the first, serializable read, \(after.linearizable - before.linearizable) read again linearizably (\(after.unchanged - before.unchanged) of them unchanged: nothing written); \(after.abandoned - before.abandoned) requests dropped, their client no longer waiting")
        }
        func schedulerDelta(_ name: String) -> Double { (schedulerAfter[name] ?? 0) - (schedulerBefore[name] ?? 0) }
        let schedulerPasses = schedulerDelta("gpuplane_scheduler_passes_total")
        let schedulerFigures = FleetResult.SchedulerFigures(
            passes: Int(schedulerPasses), transactions: Int(schedulerDelta("gpuplane_scheduler_transactions_total")),
            bindings: Int(schedulerDelta("gpuplane_scheduler_bindings_total")),
            conflicts: Int(schedulerDelta("gpuplane_scheduler_conflicts_total")),
            meanPassMS: schedulerPasses > 0 ? schedulerDelta("gpuplane_scheduler_pass_duration_seconds_sum") / schedulerPasses * 1000 : .nan,
            stepMS: schedulerPasses > 0 ? Self.stepSums(schedulerAfter, schedulerBefore).mapValues { $0 / schedulerPasses * 1000 } : [:])
        let loadSeconds = max(0.001, (Self.nowMS() - applyStart) / 1000)
        let loadProposals = (loadAfter["etcd_server_proposals_committed_total"] - loadBefore["etcd_server_proposals_committed_total"]) / loadSeconds
        let boundNow = bound.withLock { $0 }
        let runningNow = running.withLock { $0 }
        let appliedNow = applied.withLock { $0 }
        let answeredNow = answered.withLock { $0 }
        var toBound: [Double] = []
        var toRunning: [Double] = []
        for (key, b) in boundNow {
            guard let t0 = appliedNow[b.owner] else { continue }
            toBound.append(b.ms - t0)
            if let r = runningNow[key] { toRunning.append(r - t0) }
        }
        let lastBound = boundNow.values.filter { appliedNow[$0.owner] != nil }.map(\.ms).max() ?? applyStart
        let placements = Double(toBound.count) / max(0.001, (lastBound - applyStart) / 1000)
        let fanout = readFanout(journal: journal, bound: boundNow)
        print(String(format: "  %d bound, %d running; apply→bound p50 %.0f ms p99 %.0f ms; %.0f placements/s; fan-out p50 %.0f ms", toBound.count, toRunning.count, pct(toBound, 0.5), pct(toBound, 0.99), placements, pct(fanout, 0.5)))

        // The placement pipeline alone, in this process, on a fleet of the same size (the
        // in-process figure of `gpuplane-bench placement`), measured after the workload.
        let pipelineRate = (try? await TestEnvironment.offPool {
            try PlacementBenchmark.run(nodes: self.nodes, gpusPerNode: 8, replicas: max(100, appCount))
        }) ?? .nan
        var result = FleetResult(
            nodes: nodes, victims: victims, nodesReady: nodesReady, registerSeconds: registerSeconds, applications: appCount,
            deployments: deploymentCount, replicas: boundNow.count, bound: toBound.count, running: toRunning.count,
            applyErrors: applyErrors, applyAnsweredP50: pct(answeredNow, 0.5), applyAnsweredP99: pct(answeredNow, 0.99),
            conflictRetries: conflictRetries.withLock { $0 }, applyToBoundP50: pct(toBound, 0.5), applyToBoundP99: pct(toBound, 0.99),
            applyToRunningP50: pct(toRunning, 0.5), applyToRunningP99: pct(toRunning, 0.99), placementsPerSecond: placements,
            pipelinePlacementsPerSecond: pipelineRate, fanoutP50: pct(fanout, 0.5), fanoutP99: pct(fanout, 0.99), fanoutSamples: fanout.count, rawPutsPerSecond: rawPuts,
            rawTxnsPerSecond: rawTxns, rawTxnP99: rawTxnP99, steadyProposalsPerSecond: steadyProposals,
            steadyPutsPerSecond: steadyPuts, steadyRangesPerSecond: steadyRanges, steadyLeaseRenewsPerSecond: steadyRenews,
            loadProposalsPerSecond: loadProposals, etcdWatchers: watcherCount, watchesFromCaches: steadyWatches?.cache,
            watchesOnEtcd: steadyWatches?.etcd, silentToNotReady: nil, silentToRescheduled: nil, victimReplicas: 0,
            schedulerFailover: nil, apiServerRestartNotReady: nil, apiServerRestartSeconds: nil, spuriousNotReady: 0,
            scheduler: schedulerFigures, processes: [])

        if !bench.skipFailover {
            try await failovers(&result, client: client, etcdURL: etcd.endpoints[0], apiURLs: apiURLs, tenant: tenants[0], startAPIServer: startAPIServer, startScheduler: startScheduler)
        }
        let spurious = wentNotReady.withLock { $0.filter { !$0.0.hasPrefix("victim-") } }
        result.spuriousNotReady = spurious.count
        let slow = readSlowBeats(journal: journal)
        result.slowBeats = slow.count
        result.slowestBeat = slow.map(\.seconds).max()
        result.spuriousAfterSlowBeat = spurious.filter { node, at in
            slow.contains { $0.node == node && $0.ms <= at && at - $0.ms <= 6000 }
        }.count
        peak.sample(self.pids())
        // At rest: what each process keeps once the bursts are over (the daemons hand freed
        // memory back every memory-trim-interval).
        try await Task.sleep(for: .milliseconds(Int(bench.restSeconds * 1000)))
        let pidsAtRest = pids()
        let hollowPer1000 = 1000 / Double(max(1, nodes - victims))
        var metricsURLs = ["scheduler-a": "http://127.0.0.1:\(schedulerPorts["a"] ?? 0)/metrics", "scheduler-b": "http://127.0.0.1:\(schedulerPorts["b"] ?? 0)/metrics"]
        for (i, url) in apiURLs.enumerated() { metricsURLs["api-server-\(i)"] = url + "/metrics" }
        var heapAtRest: [String: Double] = [:]
        for (name, url) in metricsURLs {
            heapAtRest[name] = await heapInUseMiB(url)
        }
        result.processes = ["etcd", "api-server-0", "api-server-1", "scheduler-a", "scheduler-b", "hollow"].map { name in
            let scale = name == "hollow" ? hollowPer1000 : 1
            let rest = pidsAtRest[name].map(ProcessSampler.rssMiB)
            return FleetResult.ProcessFigures(
                name: name == "hollow" ? "hollow nodes, per 1,000" : name, rssMiB: peak.peak(name) * scale,
                anonMiB: peak.peak(name, anonymous: true) * scale,
                cpuLoad: (cpuLoad[name] ?? .nan) * scale, cpuSteady: (cpuSteady[name] ?? .nan) * scale,
                restRSSMiB: rest.map { $0.total * scale }, restAnonMiB: rest.map { $0.anonymous * scale }, restHeapMiB: heapAtRest[name])
        }
        return result
    }

    // MARK: Watches

    private func startWatches(_ client: Etcd.Client) -> [Task<Void, Never>] {
        let nodeWatch = Task {
            while !Task.isCancelled {
                do {
                    for try await batch in client.watch(.prefix(Node.storagePrefix(tenant: nil))) {
                        let now = Self.nowMS()
                        for event in batch.events where event.type == .put {
                            guard let node = try? ResourceStore.decode(Node.self, event.kv) else { continue }
                            let name = node.metadata.name
                            let isReady = node.status.isReady
                            let was = ready.withLock { r -> Bool? in
                                defer { r[name] = isReady }
                                return r[name]
                            }
                            if was == true, !isReady { wentNotReady.withLock { $0.append((name, now)) } }
                        }
                    }
                } catch {}
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let replicaWatch = Task {
            while !Task.isCancelled {
                do {
                    for try await batch in client.watch(.prefix(Replica.storagePrefix(tenant: nil))) {
                        let now = Self.nowMS()
                        for event in batch.events where event.type == .put {
                            guard let replica = try? ResourceStore.decode(Replica.self, event.kv) else { continue }
                            let key = "\(replica.metadata.tenant)/\(replica.metadata.name)"
                            let owner = "\(replica.metadata.tenant)/\(replica.spec.owner.name)"
                            if let binding = replica.binding {
                                placement.withLock { $0[key] = binding.node }
                                bound.withLock { if $0[key] == nil { $0[key] = (owner, now, binding.node) } }
                                if replica.status.phase == .running { running.withLock { if $0[key] == nil { $0[key] = now } } }
                            } else {
                                _ = placement.withLock { $0.removeValue(forKey: key) }
                            }
                        }
                    }
                } catch {}
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        return [nodeWatch, replicaWatch]
    }

    /// The fields of the `event` lines of the hollow process `label`'s journal (`hollow` or
    /// `victims`), as they are now.
    private func journalLines(_ journal: URL, _ label: String, event: String) -> [[Substring]] {
        guard let text = try? String(contentsOf: URL(fileURLWithPath: journal.path + "-" + label), encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.first == Substring(event) }
    }

    /// The hollow nodes' heartbeats answered after more than an interval (journal `slowbeat`):
    /// the node, when the answer came (unix ms) and the round trip (seconds).
    private func readSlowBeats(journal: URL) -> [(node: String, ms: Double, seconds: Double)] {
        var result: [(String, Double, Double)] = []
        for label in ["hollow", "victims"] {
            for parts in journalLines(journal, label, event: "slowbeat") {
                guard parts.count == 4, let ms = Double(parts[2]), let roundTrip = Double(parts[3]) else { continue }
                result.append((String(parts[1]), ms, roundTrip / 1000))
            }
        }
        return result
    }

    /// Each replica's first sight by its node (journal `seen`) minus its binding as the bench
    /// saw it in etcd.
    private func readFanout(journal: URL, bound: [String: (owner: String, ms: Double, node: String)]) -> [Double] {
        var result: [Double] = []
        for label in ["hollow", "victims"] {
            var firstSeen: [String: Double] = [:]
            for parts in journalLines(journal, label, event: "seen") {
                guard parts.count == 3, let ms = Double(parts[2]) else { continue }
                let key = String(parts[1])
                if firstSeen[key] == nil { firstSeen[key] = ms }
            }
            for (key, seen) in firstSeen {
                if let b = bound[key] { result.append(max(0, seen - b.ms)) }
            }
        }
        return result
    }

    // MARK: Workload

    private func makeTenants(_ api: String, admin: String, count: Int) async throws -> [(name: String, token: String)] {
        var tenants: [(String, String)] = []
        for i in 0..<count {
            let name = "bench-\(i)"
            let created = try await settled("POST", api + "/v1/tenants", token: admin, body: #"{"name": "\#(name)", "plan": "enterprise", "gpu_limit": 10000}"#)
            // 409: an attempt whose answer was lost had created it.
            guard created.status == 201 || created.status == 409 else { throw ValidationError("tenant \(name): HTTP \(created.status) \(created.text)") }
            let issued = try await settled("POST", api + "/v1/tokens", token: admin, body: #"{"tenant": "\#(name)", "role": "user"}"#)
            guard let token = (try? JSONSerialization.jsonObject(with: issued.body) as? [String: Any])?["token"] as? String else {
                throw ValidationError("token for \(name): \(issued.text)")
            }
            tenants.append((name, token))
        }
        return tenants
    }

    /// Applies `apps` applications and `deployments` deployments, alternating api-servers, paced
    /// at ``FleetBench/rate``; the number refused.
    private func applyWorkload(_ apis: [String], tenants: [(name: String, token: String)], apps: Int, deployments: Int) async throws -> Int {
        let total = apps + deployments
        let pause = 1.0 / max(0.1, bench.rate)
        let start = ContinuousClock.now
        let refused = Locked(0)
        let deploymentEvery = deployments > 0 ? max(1, total / deployments) : Int.max
        try await withThrowingTaskGroup(of: Void.self) { group in
            var deploymentsLeft = deployments
            var appIndex = 0
            for i in 0..<total {
                let due = start + .milliseconds(Int(Double(i) * pause * 1000))
                if due > .now { try await Task.sleep(until: due) }
                let api = apis[i % apis.count]
                let isDeployment = deploymentsLeft > 0 && (i % deploymentEvery == deploymentEvery - 1 || appIndex >= apps)
                if isDeployment { deploymentsLeft -= 1 }
                let index = isDeployment ? deploymentsLeft : appIndex
                if !isDeployment { appIndex += 1 }
                let tenant = tenants[index % tenants.count]
                group.addTask {
                    if isDeployment {
                        let body = #"{"model_name": "bench-\#(index)", "gpu": "H100", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 1, "max_instances": 1}}"#
                        let t0 = Self.nowMS()
                        let answer = await self.attempt("POST", api + "/v1/deployments", token: tenant.token, body: body)
                        if answer.status == 201, let id = (try? JSONSerialization.jsonObject(with: answer.body) as? [String: Any])?["deploy_id"] as? String {
                            self.applied.withLock { $0["\(tenant.name)/\(id)"] = t0 }
                        } else {
                            refused.withLock { $0 += 1 }
                            if refused.withLock({ $0 }) <= 3 { print("  deployment refused: HTTP \(answer.status) \(answer.text.prefix(300))") }
                        }
                    } else {
                        let name = "app-\(index)"
                        // Every tenth a CPU pod; one in 50 (at least 4 per victim) asks for the
                        // victims' H200s first.
                        let every = max(1, min(50, apps / (4 * self.victims)))
                        let probe = index % every == 3 % every
                        let pod = index % 10 == 9
                            ? "  - name: main\n    image: bench/hollow:v1\n    machineType: S\n"
                            : "  - name: main\n    image: bench/hollow:v1\n\(probe ? "    machineType: [GPU-H200, GPU-H100]\n" : "")    gpu:\n      enabled: true\n      model: custom\n      memoryGB: 24\n      count: 1\n"
                        let body = "application:\n  name: \(name)\n  pods:\n" + pod
                        let t0 = Self.nowMS()
                        self.applied.withLock { $0["\(tenant.name)/\(name)"] = t0 }
                        var answer = await self.attempt("POST", api + "/v1/applications", token: tenant.token, body: body, contentType: "application/yaml")
                        for attempt in 0..<8 where answer.status == 409 {
                            self.conflictRetries.withLock { $0 += 1 }
                            try await Task.sleep(for: .milliseconds(50 * (attempt + 1)))
                            answer = await self.attempt("POST", api + "/v1/applications", token: tenant.token, body: body, contentType: "application/yaml")
                        }
                        self.answered.withLock { $0.append(Self.nowMS() - t0) }
                        if answer.status != 201 && answer.status != 200 {
                            refused.withLock { $0 += 1 }
                            if refused.withLock({ $0 }) <= 3 { print("  application refused: HTTP \(answer.status) \(answer.text.prefix(300))") }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        // Deployments' replicas are not counted as applications: refusals of either are.
        return refused.withLock { $0 }
    }

    // MARK: Failovers

    private func failovers(
        _ result: inout FleetResult, client: Etcd.Client, etcdURL: String, apiURLs: [String],
        tenant: (name: String, token: String), startAPIServer: (Int) throws -> ChildProcess, startScheduler: (String) throws -> ChildProcess
    ) async throws {
        // A silent node: the victims' process killed; their Ready and their replicas.
        let victimReplicas = placement.withLock { $0.filter { $0.value.hasPrefix("victim-") }.map(\.key) }
        result.victimReplicas = victimReplicas.count
        let t0 = Self.nowMS()
        procs.withLock { $0["victims"] }?.kill9()
        let victimNames = Set((0..<victims).map { "victim-\($0)" })
        try? await wait("victims NotReady", bench.timeout) {
            self.ready.withLock { r in victimNames.allSatisfy { r[$0] == false } }
        }
        let notReadyAt = wentNotReady.withLock { $0.filter { victimNames.contains($0.0) }.map(\.1).max() }
        result.silentToNotReady = notReadyAt.map { ($0 - t0) / 1000 }
        if !victimReplicas.isEmpty {
            try? await wait("victims' replicas bound elsewhere", bench.timeout) {
                self.placement.withLock { p in victimReplicas.allSatisfy { p[$0].map { !$0.hasPrefix("victim-") } ?? false } }
            }
            if placement.withLock({ p in victimReplicas.allSatisfy { p[$0].map { !$0.hasPrefix("victim-") } ?? false } }) {
                result.silentToRescheduled = (Self.nowMS() - t0) / 1000
            }
        }
        print(String(format: "  silent node → NotReady %@, %d replicas rescheduled after %@", result.silentToNotReady.map { String(format: "%.2f s", $0) } ?? "—", victimReplicas.count, result.silentToRescheduled.map { String(format: "%.2f s", $0) } ?? "—"))

        // The scheduler leader killed: the next application's placement.
        if let leader = try await client.leader(Scheduler.defaultElectionName).map({ String(decoding: $0.value, as: UTF8.self) }),
            let process = procs.withLock({ $0["scheduler-\(leader)"] })
        {
            let t1 = Self.nowMS()
            process.kill9()
            let name = "failover-probe"
            let body = "application:\n  name: \(name)\n  pods:\n  - name: main\n    image: bench/hollow:v1\n    gpu:\n      enabled: true\n      model: custom\n      memoryGB: 24\n      count: 1\n"
            _ = await attempt("POST", apiURLs[0] + "/v1/applications", token: tenant.token, body: body, contentType: "application/yaml")
            let key = "\(tenant.name)/\(name)"
            try? await wait("the probe bound after the leader's kill", 60) {
                self.bound.withLock { $0.values.contains { $0.owner == key } }
            }
            if let at = bound.withLock({ $0.values.first { $0.owner == key }?.ms }) { result.schedulerFailover = (at - t1) / 1000 }
            adopt("scheduler-\(leader)-old", process)
            adopt("scheduler-\(leader)", try startScheduler(leader))
            print("  scheduler \(leader) kill -9 → next placement \(result.schedulerFailover.map { String(format: "%.2f s", $0) } ?? "—")")
        }

        // An api-server killed and restarted at once: its nodes' heartbeats come back, and none
        // may go NotReady meanwhile.
        if let process = procs.withLock({ $0["api-server-0"] }) {
            let notReadyBefore = wentNotReady.withLock { $0.count }
            let t2 = Self.nowMS()
            process.kill9()
            adopt("api-server-0-old", process)
            adopt("api-server-0", try startAPIServer(0))
            try? await eventually("api-server 0 answers again", timeout: 60) { try await self.call("GET", apiURLs[0] + "/readyz").status == 200 }
            let back = (Self.nowMS() - t2) / 1000
            // Wait two TTLs: a node that lapsed shows NotReady by then.
            try await Task.sleep(for: .seconds(2 * bench.heartbeatTTL + 2))
            result.apiServerRestartSeconds = back
            result.apiServerRestartNotReady = wentNotReady.withLock { $0.count } - notReadyBefore
            print(String(format: "  api-server kill -9 + restart: answering after %.2f s, %d nodes NotReady meanwhile", back, result.apiServerRestartNotReady ?? -1))
            // The killed api-server's nodes resumed their watches on the other one, or on the
            // restarted one from before its caches started (served by them too when nothing of
            // the kind changed since): either way none should be left on etcd directly.
            let etcdMetrics = PrometheusMetrics(url: etcdURL + "/metrics", http: http)
            result.etcdWatchersAfterRestart = (try? await etcdMetrics.read()).map { Int($0["etcd_debugging_mvcc_watcher_total"]) }
            result.watchesOnEtcdAfterRestart = await apiWatches(apiURLs)?.etcd
            print("  after the restart: \(result.etcdWatchersAfterRestart.map(String.init) ?? "—") etcd watchers, \(result.watchesOnEtcdAfterRestart.map(String.init) ?? "—") api-server watches on etcd directly")
            // The nodes that moved to the other api-server go back to their own once it
            // answers (`api-server-return-after`, 30 s by default): each api-server holds its
            // share again rather than one holding the whole fleet from now on.
            // Back: it holds 40 % of the watches or more, and the nodes' watches left the other
            // (no more of them in all than at steady state, victims' included).
            let steady = (result.watchesFromCaches ?? 0) + (result.watchesOnEtcd ?? 0)
            func isBack(_ counts: [Int]?) -> Bool {
                guard let counts, case let total = counts.reduce(0, +), total > 0 else { return false }
                return Double(counts[0]) >= 0.4 * Double(total) && (steady == 0 || total <= steady)
            }
            // Asked once a second (each ask renders both api-servers' metrics), for at most 90 s
            // on the wall clock: three times the nodes' longest first wait.
            var watches = await watchesPerAPIServer(apiURLs)
            let giveUp = ContinuousClock.now + .seconds(90)
            while !isBack(watches), ContinuousClock.now < giveUp {
                try await Task.sleep(for: .seconds(1))
                watches = await watchesPerAPIServer(apiURLs)
            }
            if isBack(watches) { result.nodesBackSeconds = (Self.nowMS() - t2) / 1000 }
            result.watchesPerAPIServerAfterReturn = watches
            print("  its nodes back on it after \(result.nodesBackSeconds.map { String(format: "%.1f s", $0) } ?? "—"): watches per api-server \(watches.map { $0.map(String.init).joined(separator: " + ") } ?? "—")")
            let lapsed = wentNotReady.withLock { Array($0.dropFirst(notReadyBefore)) }
            if !lapsed.isEmpty {
                print("  NotReady after the kill (s): " + lapsed.prefix(20).map { String(format: "%@ %.2f", $0.0, ($0.1 - t2) / 1000) }.joined(separator: ", "))
            }
        }

        // The other api-server stopped as a rolling restart stops it (SIGTERM) and started
        // again: it ends its nodes' watches (they resume on api-server 0) and exits; none of
        // its nodes may go NotReady.
        if let process = procs.withLock({ $0["api-server-1"] }) {
            let notReadyBefore = wentNotReady.withLock { $0.count }
            let t3 = Self.nowMS()
            process.signal(SIGTERM)
            try? await wait("api-server 1 exits after SIGTERM", 60) { !process.isRunning }
            if process.isRunning {
                process.kill9()
            } else {
                result.apiServerStopSeconds = (Self.nowMS() - t3) / 1000
            }
            adopt("api-server-1-old", process)
            adopt("api-server-1", try startAPIServer(1))
            try? await eventually("api-server 1 answers again", timeout: 60) { try await self.call("GET", apiURLs[1] + "/readyz").status == 200 }
            try await Task.sleep(for: .seconds(2 * bench.heartbeatTTL + 2))
            result.apiServerGracefulRestartNotReady = wentNotReady.withLock { $0.count } - notReadyBefore
            print(String(
                format: "  api-server SIGTERM: exited after %@, %d nodes NotReady until two TTLs after its restart",
                result.apiServerStopSeconds.map { String(format: "%.2f s", $0) } ?? "— (killed after 60 s)", result.apiServerGracefulRestartNotReady ?? -1))
        }
    }

    // MARK: Helpers

    /// The api-servers' open watches (`gpuplane_api_watches`), summed: served by their caches,
    /// and by etcd watches of their own. Nil when one cannot be read.
    func apiWatches(_ apiURLs: [String]) async -> (cache: Int, etcd: Int)? {
        guard let sums = await apiSums(apiURLs, [#"gpuplane_api_watches{served="cache"}"#, #"gpuplane_api_watches{served="etcd"}"#]) else { return nil }
        return (sums[0], sums[1])
    }

    /// Each api-server's open watches (`gpuplane_api_watches`, from its caches and on etcd
    /// directly). Nil when one cannot be read.
    func watchesPerAPIServer(_ apiURLs: [String]) async -> [Int]? {
        var counts: [Int] = []
        for url in apiURLs {
            guard let watches = await apiWatches([url]) else { return nil }
            counts.append(watches.cache + watches.etcd)
        }
        return counts
    }

    /// The api-servers' read-modify-writes so far by the read that decided them
    /// (`gpuplane_store_modifies_total{read}`), and the requests they dropped because their
    /// client had stopped waiting (`gpuplane_api_requests_abandoned_total`), summed. Nil when
    /// one cannot be read.
    func apiModifies(_ apiURLs: [String]) async -> (serializable: Int, linearizable: Int, unchanged: Int, abandoned: Int)? {
        let series = ["serializable", "linearizable", "unchanged"].map { #"gpuplane_store_modifies_total{read=""# + $0 + #""}"# }
        guard let sums = await apiSums(apiURLs, series + ["gpuplane_api_requests_abandoned_total"]) else { return nil }
        return (sums[0], sums[1], sums[2], sums[3])
    }

    /// Each of `series` (whole names, labels included) summed over the api-servers' `/metrics`.
    /// Nil when one cannot be read.
    func apiSums(_ apiURLs: [String], _ series: [String]) async -> [Int]? {
        var sums = Array(repeating: 0, count: series.count)
        for url in apiURLs {
            guard let values = try? await PrometheusMetrics(url: url + "/metrics", http: http).read() else { return nil }
            for (i, name) in series.enumerated() { sums[i] += Int(values[name]) }
        }
        return sums
    }

    /// Step → seconds spent in it between `before` and `after` (the schedulers'
    /// `gpuplane_scheduler_step_duration_seconds_sum{step="…"}`).
    static func stepSums(_ after: [String: Double], _ before: [String: Double]) -> [String: Double] {
        let prefix = "gpuplane_scheduler_step_duration_seconds_sum{"
        var sums: [String: Double] = [:]
        for (key, value) in after where key.hasPrefix(prefix) {
            guard let open = key.range(of: "step=\""), let close = key[open.upperBound...].firstIndex(of: "\"") else { continue }
            sums[String(key[open.upperBound..<close]), default: 0] += value - (before[key] ?? 0)
        }
        return sums
    }

    struct Answer {
        var status: Int
        var body: Data
        var text: String { String(decoding: body.prefix(2000), as: UTF8.self) }
    }

    func call(_ method: String, _ url: String, token: String? = nil, body: String? = nil, contentType: String = "application/json") async throws -> Answer {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        if body != nil { headers.append(CurlHTTP.Header("Content-Type", contentType)) }
        let response = try await http.perform(CurlHTTP.Request(
            method: CurlHTTP.Method(method), url: url, headers: headers, body: body.map { Data($0.utf8) }, timeout: .seconds(60)))
        return Answer(status: response.status, body: response.body)
    }

    /// A daemon's `gpuplane_process_heap_in_use_bytes` in MiB, or nil when it does not answer.
    func heapInUseMiB(_ metricsURL: String) async -> Double? {
        let values = try? await PrometheusMetrics(url: metricsURL, http: http).read()
        return values?.values["gpuplane_process_heap_in_use_bytes"].map { $0 / 1_048_576 }
    }

    /// ``attempt(_:_:token:body:contentType:)`` for the set-up's requests, sent again while no
    /// answer comes or the answer is 503 (etcd stalls for seconds in a slow hour), after 1 s
    /// doubling to 8 s, for at most two minutes: the last answer.
    func settled(_ method: String, _ url: String, token: String? = nil, body: String? = nil) async throws -> Answer {
        let deadline = ContinuousClock.now + .seconds(120)
        var pause = Duration.seconds(1)
        while true {
            let answer = await attempt(method, url, token: token, body: body)
            guard answer.status == 0 || answer.status == 503, ContinuousClock.now + pause < deadline else { return answer }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .seconds(8))
        }
    }

    /// ``call(_:_:token:body:contentType:)`` with a transport failure (a timeout of an
    /// overloaded api-server) as status 0, so the phase counts it instead of stopping.
    func attempt(_ method: String, _ url: String, token: String? = nil, body: String? = nil, contentType: String = "application/json") async -> Answer {
        do { return try await call(method, url, token: token, body: body, contentType: contentType) } catch {
            return Answer(status: 0, body: Data("\(error)".utf8))
        }
    }

    private func wait(_ what: String, _ seconds: Double, _ condition: @escaping () -> Bool) async throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        print("  timed out after \(seconds) s waiting for \(what)")
        throw ValidationError("timed out after \(seconds) s waiting for \(what)")
    }

    /// Puts (or create-if-absent txns) per second from 16 writers for 3 s, and the p99 latency.
    private func etcdRate(_ client: Etcd.Client, txn: Bool) async throws -> (Double, Double) {
        let deadline = ContinuousClock.now + .seconds(3)
        let start = ContinuousClock.now
        let value = String(repeating: "x", count: 600)
        let latencies = Locked([Double]())
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<16 {
                group.addTask {
                    var i = 0
                    while ContinuousClock.now < deadline {
                        let key = "/bench/fleet/\(txn ? "txn" : "put")/\(w)/\(i)"
                        let t0 = ContinuousClock.now
                        if txn {
                            _ = try await client.txn(
                                compare: [.createRevision(key, .equal, 0)], success: [.put(.init(key, value))],
                                failure: [.range(.init(.key(key), keysOnly: true))])
                        } else {
                            _ = try await client.put(key, value)
                        }
                        let ms = (ContinuousClock.now - t0).seconds * 1000
                        latencies.withLock { $0.append(ms) }
                        i += 1
                    }
                    return i
                }
            }
            return try await group.reduce(0, +)
        }
        let rate = Double(total) / (ContinuousClock.now - start).seconds
        _ = try await client.delete(.prefix("/bench/fleet/"))
        return (rate, pct(latencies.withLock { $0 }, 0.99))
    }
}

func pct(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// A process's Prometheus counters (its `/metrics`: etcd's on its client URL, a scheduler's on its
/// port), summed over labels, and each labelled series under its whole name.
struct PrometheusMetrics {
    let url: String
    let http: CurlHTTP.Client

    struct Values {
        var values: [String: Double]
        subscript(_ name: String) -> Double { values[name] ?? 0 }
    }

    func read() async throws -> Values {
        let response = try await http.perform(CurlHTTP.Request(method: .get, url: url, timeout: .seconds(10)))
        var values: [String: Double] = [:]
        for line in String(decoding: response.body, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let head = line[..<space]
            let name = String(head.prefix { $0 != "{" && $0 != " " })
            values[name, default: 0] += value
            // Each labelled series too, under its whole name (`name{label="…"}`).
            if name.count < head.count { values[String(head), default: 0] += value }
        }
        return Values(values: values)
    }
}

/// CPU time of each child at one moment (utime + stime from /proc/<pid>/stat).
struct ProcessSampler {
    let start: ContinuousClock.Instant
    let ticks: [String: Double]

    init(_ pids: [String: Int32]) {
        start = .now
        self.ticks = pids.mapValues(Self.cpuTicks)
    }

    /// Each child's CPU since `init`, percent of one core.
    func cpuPercent(_ pids: [String: Int32]) -> [String: Double] {
        let elapsed = (ContinuousClock.now - start).seconds
        var result: [String: Double] = [:]
        for (name, pid) in pids {
            guard let before = ticks[name] else { continue }
            result[name] = (Self.cpuTicks(pid) - before) / 100 / elapsed * 100
        }
        return result
    }

    static func cpuTicks(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return 0 }
        return utime + stime
    }

    /// The process's resident set (`VmRSS`) and its anonymous part (`RssAnon`), MiB.
    static func rssMiB(_ pid: Int32) -> (total: Double, anonymous: Double) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func mib(_ field: String) -> Double {
            for line in text.split(separator: "\n") where line.hasPrefix(field) {
                return (line.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0) / 1024
            }
            return 0
        }
        return (mib("VmRSS:"), mib("RssAnon:"))
    }
}

/// The highest RSS (and anonymous RSS) each child showed.
final class PeakRSS: @unchecked Sendable {
    private let peaks = Locked([String: (total: Double, anonymous: Double)]())

    func sample(_ pids: [String: Int32]) {
        for (name, pid) in pids {
            let rss = ProcessSampler.rssMiB(pid)
            peaks.withLock {
                let old = $0[name] ?? (0, 0)
                $0[name] = (max(old.total, rss.total), max(old.anonymous, rss.anonymous))
            }
        }
    }

    func peak(_ name: String, anonymous: Bool = false) -> Double {
        peaks.withLock { $0[name].map { anonymous ? $0.anonymous : $0.total } ?? .nan }
    }
}
