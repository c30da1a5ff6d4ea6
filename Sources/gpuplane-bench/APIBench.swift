import ArgumentParser
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Hummingbird
import Logging
import StreamingJSON

/// `gpuplane-bench api`: applies per second and their latency through a live api-server, next
/// to raw etcd gateway puts per second at the same concurrency, in one run.
struct APIBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Starts etcd and an api-server; measures applies/s and p50/p99 at several concurrencies vs raw etcd puts/s.")

    @Flag(help: "Also time the parts of one apply, one after another, in this process.")
    var breakdown = false

    @Flag(help: "Also measure cheaper requests at each concurrency (GET /healthz, GET /v1/models) to split HTTP cost from apply cost.")
    var layers = false

    @Flag(help: "Also measure unchanged re-applies: each client re-applies the first application it created.")
    var reapply = false

    enum ServerMode: String, ExpressibleByArgument {
        /// The `gpuplane-api-server` executable (built next to this one), as deployed.
        case process
        /// The server in this process, sharing its threads with the load generator.
        case inProcess = "in-process"
    }

    @OptionGroup var options: LoadOptions

    var load: LoadPhases { options.phases }
    var server: ServerMode { options.server }

    /// Extra etcd flags from `GPUPLANE_BENCH_ETCD_ARGS` (space-separated), e.g. `--enable-pprof`
    /// to profile etcd during a run.
    var etcdArguments: [String] {
        (ProcessInfo.processInfo.environment["GPUPLANE_BENCH_ETCD_ARGS"] ?? "").split(separator: " ").map(String.init)
    }

    /// Starts `gpuplane-api-server` from this executable's folder with a bootstrap admin token,
    /// at its default log level (so audit lines are written, to a log file in `directory`), with
    /// `arguments` added to its command line.
    static func launchServer(port: Int, etcd endpoints: [String], adminToken: String, directory: URL, arguments: [String] = []) throws -> ChildProcess {
        let folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let executable = folder.appendingPathComponent("gpuplane-api-server")
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw ValidationError(
                "\(executable.path) is missing: build it first (swift build -c release --product gpuplane-api-server), or pass --server in-process")
        }
        let tokenFile = directory.appendingPathComponent("admin-token")
        let config = directory.appendingPathComponent("empty.conf")
        try adminToken.write(to: tokenFile, atomically: true, encoding: .utf8)
        try "".write(to: config, atomically: true, encoding: .utf8)
        return try ChildProcess(
            executable: executable.path,
            arguments: [
                "--port", "\(port)", "--etcd.endpoints", endpoints.joined(separator: ","), "--admin-token-file", tokenFile.path,
                "--log-level", "info", "--log-destination", "stderr",
            ] + arguments,
            environment: ["GPUPLANE_CONFIG": config.path], logFile: directory.appendingPathComponent("api-server.log"))
    }

    func run() async throws {
        let bench = try await BenchServer(mode: server, etcdArguments: etcdArguments, name: "bench-api")
        defer { bench.stop() }
        let (fixture, etcd, admin, deps, base) = (bench.fixture, bench.etcd, bench.admin, bench.deps, bench.base)
        let serverProcess = bench.process
        // The same libcurl transport the etcd baseline uses, so both sides pay the same client cost.
        let session = CurlHTTP.Client(name: "bench", maxConnections: 128)
        defer { session.shutdown() }
        try await eventually("api-server answers", timeout: 60) { try await Self.call(session, "GET", base + "/readyz").0 == 200 }
        _ = try await deps.store.create(Tenant(metadata: ObjectMeta(name: "bench"), spec: .init(plan: .pro)))
        let (status, body) = try await Self.call(session, "POST", base + "/v1/tokens", token: admin, body: #"{"tenant": "bench", "role": "user"}"#)
        guard status == 201, let token = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["token"] as? String else {
            throw ValidationError("could not issue a token: \(status)")
        }
        print("etcd 1 member on loopback; api-server \(server == .process ? "as its own process" : "in this process"); \(options.seconds)s per phase")
        if breakdown { try await parts(deps: deps, session: session, base: base, token: token) }
        // CPU columns: µs per operation of etcd, the api-server process and this one (the load
        // generator; with --server in-process, the api-server's share is in it).
        print("clients  raw puts/s  put p50/p99 ms  applies/s  ratio  apply p50/p99 ms  CPU µs/put etcd+bench  CPU µs/apply etcd+server+bench")
        let value = String(repeating: "x", count: 600)
        let etcdPID = fixture.member.pid
        let serverPID = serverProcess?.pid
        for count in options.clientCounts {
            let raw = try await load.run(workers: count, etcdPID: etcdPID, serverPID: serverPID) { w, i in
                _ = try await etcd.put("/bench/raw/\(count)/\(w)/\(i)", value)
            }
            let countersBefore = try await Self.batchCounters(session, base)
            let applies = try await load.run(workers: count, etcdPID: etcdPID, serverPID: serverPID) { w, i in
                let (status, _) = try await Self.call(
                    session, "POST", base + "/v1/applications", token: token, body: Self.manifest(name: "b\(count)-\(w)-\(i)"))
                guard status == 201 else { throw ValidationError("apply answered \(status)") }
            }
            let batching = Self.describeBatching(before: countersBefore, after: try await Self.batchCounters(session, base))
            if reapply {
                let again = try await load.run(workers: count, etcdPID: etcdPID, serverPID: serverPID) { w, _ in
                    let (status, _) = try await Self.call(
                        session, "POST", base + "/v1/applications", token: token, body: Self.manifest(name: "b\(count)-\(w)-0"))
                    guard status == 200 else { throw ValidationError("re-apply answered \(status)") }
                }
                print(String(
                    format: "  %7d clients %-24@ %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  CPU µs etcd %5.0f + server %5.0f + bench %5.0f", count,
                    "unchanged re-apply" as NSString, again.rate, again.p50 * 1000, again.p99 * 1000, again.etcdCPU, again.serverCPU,
                    again.selfCPU))
            }
            if layers {
                let health = try await load.run(workers: count, etcdPID: etcdPID, serverPID: serverPID) { _, _ in
                    guard try await Self.call(session, "GET", base + "/healthz").0 == 200 else { throw ValidationError("healthz") }
                }
                let models = try await load.run(workers: count, etcdPID: etcdPID, serverPID: serverPID) { _, _ in
                    guard try await Self.call(session, "GET", base + "/v1/models", token: token).0 == 200 else { throw ValidationError("models") }
                }
                for (label, r) in [("GET /healthz", health), ("GET /v1/models (auth)", models)] {
                    print(String(
                        format: "  %7d clients %-24@ %8.0f/s  p50 %6.2f ms  CPU µs etcd %5.0f + server %5.0f + bench %5.0f", count,
                        label as NSString, r.rate, r.p50 * 1000, r.etcdCPU, r.serverCPU, r.selfCPU))
                }
            }
            print(String(
                format: "%7d  %10.0f  %6.2f / %-6.2f  %9.0f  %5.2f  %6.2f / %-6.2f  %6.0f + %-6.0f         %6.0f + %4.0f + %-4.0f", count,
                raw.rate, raw.p50 * 1000, raw.p99 * 1000, applies.rate, applies.rate / raw.rate, applies.p50 * 1000,
                applies.p99 * 1000, raw.etcdCPU, raw.selfCPU, applies.etcdCPU, applies.serverCPU, applies.selfCPU))
            print("    \(batching)")
        }
    }

    /// The one-pod Mode 3 manifest every apply of the benchmark sends, named `name`.
    static func manifest(name: String) -> String {
        """
        application:
          name: \(name)
          pods:
            - name: api
              path: /api
              image: myorg/chat-backend:v1
              servicePorts: [8000]
              gpu: {enabled: true, model: llama-3.1-8b, priority: inference}
              vars: {DATABASE_URL: "postgresql://app@db:5432/chat"}
        """
    }

    /// Microseconds per call of each part of an apply, measured one after another.
    func parts(deps: APIDependencies, session: CurlHTTP.Client, base: String, token: String) async throws {
        let manifest = Data(Self.manifest(name: "parts").utf8)
        let rounds = 2000
        func time(_ label: String, _ body: () async throws -> Void) async rethrows {
            let cpu0 = LoadPhases.cpuTicks("self")
            let start = ContinuousClock.now
            for _ in 0..<rounds { try await body() }
            let d = ContinuousClock.now - start
            let us = d.seconds * 1e6 / Double(rounds)
            let cpu = (LoadPhases.cpuTicks("self") - cpu0) / Double(sysconf(Int32(_SC_CLK_TCK))) * 1e6 / Double(rounds)
            print(String(format: "  %-44@ %8.1f µs wall %8.1f µs CPU of this process", label as NSString, us, cpu))
        }
        print("parts of one apply (\(rounds) rounds each, sequential):")
        if server == .process { print("  (the api-server is another process: the HTTP lines' CPU is the client's only)") }
        let reader = ManifestReader(context: ValidationContext(catalog: deps.catalog, plan: .pro))
        await time("read + validate the YAML manifest") { _ = reader.read(manifest) }
        guard case .application(let name, let spec)? = reader.read(manifest).objects.first else { return }
        let app = GPUPlaneCore.Application(metadata: ObjectMeta(name: name, tenant: "bench", uid: UUID().uuidString), spec: spec)
        let replicas = ReplicaPlanner(catalog: deps.catalog).replicas(for: app)
        try await time("encode application + replica (JSONEncoder)") {
            _ = try GPUPlaneJSON.encoder().encode(app)
            _ = try GPUPlaneJSON.encoder().encode(replicas[0])
        }
        try await time("encode application + replica (streaming)") {
            _ = try GPUPlaneJSON.encode(app)
            _ = try GPUPlaneJSON.encode(replicas[0])
        }
        let encoded = try GPUPlaneJSON.encoder().encode(app)
        print("  (stored sizes: application \(encoded.count) B, replica \(try GPUPlaneJSON.encoder().encode(replicas[0]).count) B)")
        try await time("decode application (JSONDecoder)") { _ = try GPUPlaneJSON.decoder().decode(GPUPlaneCore.Application.self, from: encoded) }
        try await time("decode application (streaming)") { _ = try GPUPlaneJSON.decode(GPUPlaneCore.Application.self, from: encoded) }
        // What an informer or watch cache pays to keep one copy of equal strings (StringTable).
        let strings = StringTable()
        let encodedReplica = try GPUPlaneJSON.encode(replicas[0])
        try await time("decode replica (streaming)") { _ = try GPUPlaneJSON.decode(Replica.self, from: encodedReplica) }
        try await time("decode replica (streaming, shared strings)") {
            _ = try GPUPlaneJSON.decode(Replica.self, from: encodedReplica, strings: strings)
        }
        _ = try await deps.store.create(GPUPlaneCore.Application(metadata: ObjectMeta(name: "parts-read", tenant: "bench"), spec: spec))
        try await time("store get (etcd range + decode)") { _ = try await deps.store.get(GPUPlaneCore.Application.self, tenant: "bench", name: "parts-read") }
        var i = 0
        try await time("store txn: create application + replica") {
            i += 1
            var a = app
            a.metadata.name = "parts-\(i)"
            var r = replicas[0]
            r.metadata.name = "parts-\(i).api"
            _ = try await deps.store.transaction { txn in
                try txn.create(a)
                try txn.create(r)
            }
        }
        try await time("raw etcd put") { _ = try await deps.store.client.put("/bench/parts/\(i)", "x") }
        let value = Data(String(repeating: "x", count: 600).utf8)
        var j = 0
        try await time("raw etcd txn: two creates of 600 B") {
            j += 1
            let keys = [Data("/bench/txn/\(j)/a".utf8), Data("/bench/txn/\(j)/b".utf8)]
            _ = try await deps.store.client.txn(
                compare: keys.map { Etcd.Compare(.key($0), .equal, .createRevision(0)) },
                success: keys.map { .put(Etcd.PutRequest(key: $0, value: value)) })
        }
        let sampleKeys = [Data("/gpuplane/applications/bench/b64-12-345".utf8), Data("/gpuplane/replicas/bench/b64-12-345.api".utf8)]
        let sampleTxn = Etcd.TxnRequest(
            compare: sampleKeys.map { Etcd.Compare(.key($0), .equal, .createRevision(0)) },
            success: sampleKeys.map { .put(Etcd.PutRequest(key: $0, value: Data(repeating: 0x61, count: 450))) },
            failure: sampleKeys.map { .range(Etcd.RangeRequest(.key($0), keysOnly: true)) })
        try await time("JSON-encode an etcd txn request (JSONEncoder)") { _ = try JSONEncoder().encode(sampleTxn) }
        try await time("JSON-encode an etcd txn request (streaming)") { _ = try StreamingJSONEncoder.encode(sampleTxn) }
        let sampleAnswer = Data(#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1234","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"1234"}}},{"response_put":{"header":{"revision":"1234"}}}]}"#.utf8)
        try await time("JSON-decode an etcd txn response (JSONDecoder)") { _ = try JSONDecoder().decode(Etcd.TxnResponse.self, from: sampleAnswer) }
        try await time("JSON-decode an etcd txn response (streaming)") { _ = try StreamingJSONDecoder.decode(Etcd.TxnResponse.self, from: sampleAnswer) }
        try await time("raw etcd put of 600 B") { _ = try await deps.store.client.put("/bench/parts/\(i)", value) }
        try await time("HTTP GET /healthz (client + server)") { _ = try await Self.call(session, "GET", base + "/healthz") }
        var k = 0
        try await time("HTTP apply, first of a name (client + server)") {
            k += 1
            let body = Self.manifest(name: "parts-http-\(k)")
            guard try await Self.call(session, "POST", base + "/v1/applications", token: token, body: body).0 == 201 else {
                throw ValidationError("apply")
            }
        }
    }

    /// The api-server's store batching counters (`gpuplane_store_*` on `/metrics`).
    static func batchCounters(_ session: CurlHTTP.Client, _ base: String) async throws -> [String: Double] {
        let (status, body) = try await call(session, "GET", base + "/metrics")
        guard status == 200 else { return [:] }
        var counters: [String: Double] = [:]
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("gpuplane_store_") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Double(parts[1]) { counters[String(parts[0])] = value }
        }
        return counters
    }

    /// How the applies of a phase reached etcd: requests by shape, mean batch, flat conflicts.
    static func describeBatching(before: [String: Double], after: [String: Double]) -> String {
        func delta(_ name: String, _ shape: String? = nil) -> Double {
            let key = shape.map { "\(name){shape=\"\($0)\"}" } ?? name
            return (after[key] ?? 0) - (before[key] ?? 0)
        }
        let shapes = ["alone", "flat", "nested"]
        let requests = shapes.map { delta("gpuplane_store_txn_requests_total", $0) }
        let carried = shapes.map { delta("gpuplane_store_txn_batched_total", $0) }
        let total = requests.reduce(0, +)
        guard total > 0 else { return "store batching: no counters (metrics not bootstrapped)" }
        return String(
            format: "etcd txn requests: %.0f alone, %.0f flat, %.0f nested; mean transactions per request %.1f; flat conflicts %.0f",
            requests[0], requests[1], requests[2], carried.reduce(0, +) / total, delta("gpuplane_store_flat_batch_conflicts_total"))
    }

    static func call(_ session: CurlHTTP.Client, _ method: String, _ url: String, token: String? = nil, body: String? = nil) async throws -> (Int, Data) {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        let response = try await session.perform(
            CurlHTTP.Request(method: CurlHTTP.Method(method), url: url, headers: headers, body: body.map { Data($0.utf8) }))
        return (response.status, response.body)
    }
}
