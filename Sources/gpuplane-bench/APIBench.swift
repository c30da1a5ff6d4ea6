import ArgumentParser
import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneStore
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

    @Option(help: "Concurrent clients, comma-separated.")
    var clients = "1,16,64"

    @Option(help: "Seconds per phase.")
    var seconds = 3.0

    @Flag(help: "Also time the parts of one apply, one after another, in this process.")
    var breakdown = false

    @Flag(help: "Also measure cheaper requests at each concurrency (GET /healthz, GET /v1/models) to split HTTP cost from apply cost.")
    var layers = false

    func run() async throws {
        let fixture = try await EtcdFixture.start()
        defer { fixture.shutdown() }
        let etcd = try Etcd.Client(Etcd.Configuration(endpoints: fixture.endpoints, requestTimeout: .seconds(10)))
        let admin = Tokens.generate()
        var logger = Logger(label: "gpuplane.api")
        logger.logLevel = .warning
        let deps = APIDependencies(etcd: etcd, catalog: try Catalog.standard(), adminTokens: [admin], logger: logger)
        let port = TestEnvironment.freePort()
        let app = buildApplication(deps, port: port)
        let server = Task { try await app.runService(gracefulShutdownSignals: []) }
        defer { server.cancel() }
        let base = "http://127.0.0.1:\(port)"
        // The same libcurl transport the etcd baseline uses, so both sides pay the same client cost.
        let session = CurlHTTP.Client(name: "bench", maxConnections: 128)
        defer { session.shutdown() }
        try await eventually("api-server answers") { try await Self.call(session, "GET", base + "/healthz").0 == 200 }
        _ = try await deps.store.create(Tenant(metadata: ObjectMeta(name: "bench"), spec: .init(plan: .pro)))
        let (status, body) = try await Self.call(session, "POST", base + "/v1/tokens", token: admin, body: #"{"tenant": "bench", "role": "user"}"#)
        guard status == 201, let token = (try JSONSerialization.jsonObject(with: body) as? [String: Any])?["token"] as? String else {
            throw ValidationError("could not issue a token: \(status)")
        }
        print("etcd 1 member on loopback; api-server in-process; \(seconds)s per phase")
        if breakdown { try await parts(deps: deps, session: session, base: base, token: token) }
        print("clients  raw etcd puts/s  applies/s  ratio  apply p50 ms  apply p99 ms  CPU µs/put etcd+bench  CPU µs/apply etcd+bench")
        let value = String(repeating: "x", count: 600)
        let etcdPID = fixture.member.pid
        for count in clients.split(separator: ",").compactMap({ Int($0) }) {
            let raw = try await phase(workers: count, etcdPID: etcdPID) { w, i in
                _ = try await etcd.put("/bench/raw/\(count)/\(w)/\(i)", value)
            }
            let applies = try await phase(workers: count, etcdPID: etcdPID) { w, i in
                let manifest = """
                    application:
                      name: b\(count)-\(w)-\(i)
                      pods:
                        - name: api
                          path: /api
                          image: myorg/chat-backend:v1
                          servicePorts: [8000]
                          gpu: {enabled: true, model: llama-3.1-8b, priority: inference}
                          vars: {DATABASE_URL: "postgresql://app@db:5432/chat"}
                    """
                let (status, _) = try await Self.call(session, "POST", base + "/v1/applications", token: token, body: manifest)
                guard status == 201 else { throw ValidationError("apply answered \(status)") }
            }
            if layers {
                let health = try await phase(workers: count, etcdPID: etcdPID) { _, _ in
                    guard try await Self.call(session, "GET", base + "/healthz").0 == 200 else { throw ValidationError("healthz") }
                }
                let models = try await phase(workers: count, etcdPID: etcdPID) { _, _ in
                    guard try await Self.call(session, "GET", base + "/v1/models", token: token).0 == 200 else { throw ValidationError("models") }
                }
                for (label, r) in [("GET /healthz", health), ("GET /v1/models (auth)", models)] {
                    print(String(format: "  %7d clients %-24@ %8.0f/s  p50 %6.2f ms  CPU µs etcd %5.0f + bench %5.0f", count, label as NSString, r.rate, r.p50 * 1000, r.etcdCPU, r.selfCPU))
                }
            }
            print(String(
                format: "%7d  %15.0f  %9.0f  %5.2f  %12.2f  %12.2f  %10.0f + %-10.0f  %10.0f + %-10.0f", count, raw.rate, applies.rate,
                applies.rate / raw.rate, applies.p50 * 1000, applies.p99 * 1000, raw.etcdCPU, raw.selfCPU, applies.etcdCPU,
                applies.selfCPU))
        }
    }

    /// Microseconds per call of each part of an apply, measured one after another.
    func parts(deps: APIDependencies, session: CurlHTTP.Client, base: String, token: String) async throws {
        let manifest = Data("""
            application:
              name: parts
              pods:
                - name: api
                  path: /api
                  image: myorg/chat-backend:v1
                  servicePorts: [8000]
                  gpu: {enabled: true, model: llama-3.1-8b, priority: inference}
                  vars: {DATABASE_URL: "postgresql://app@db:5432/chat"}
            """.utf8)
        let rounds = 2000
        func time(_ label: String, _ body: () async throws -> Void) async rethrows {
            let cpu0 = Self.cpuTicks("self")
            let start = ContinuousClock.now
            for _ in 0..<rounds { try await body() }
            let d = ContinuousClock.now - start
            let us = (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(rounds)
            let cpu = (Self.cpuTicks("self") - cpu0) / Double(sysconf(Int32(_SC_CLK_TCK))) * 1e6 / Double(rounds)
            print(String(format: "  %-44@ %8.1f µs wall %8.1f µs CPU of this process", label as NSString, us, cpu))
        }
        print("parts of one apply (\(rounds) rounds each, sequential):")
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
        try await time("raw etcd put") { _ = try await deps.etcd.put("/bench/parts/\(i)", "x") }
        let value = Data(String(repeating: "x", count: 600).utf8)
        var j = 0
        try await time("raw etcd txn: two creates of 600 B") {
            j += 1
            let keys = [Data("/bench/txn/\(j)/a".utf8), Data("/bench/txn/\(j)/b".utf8)]
            _ = try await deps.etcd.txn(
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
        try await time("raw etcd put of 600 B") { _ = try await deps.etcd.put("/bench/parts/\(i)", value) }
        try await time("HTTP GET /healthz (client + server)") { _ = try await Self.call(session, "GET", base + "/healthz") }
        var k = 0
        try await time("HTTP apply, first of a name (client + server)") {
            k += 1
            let body = String(decoding: manifest, as: UTF8.self).replacingOccurrences(of: "name: parts", with: "name: parts-http-\(k)")
            guard try await Self.call(session, "POST", base + "/v1/applications", token: token, body: body).0 == 201 else {
                throw ValidationError("apply")
            }
        }
    }

    struct Result {
        var rate: Double
        var p50: Double
        var p99: Double
        /// CPU µs per operation spent by etcd, and by this process (load generator and api-server).
        var etcdCPU: Double = 0
        var selfCPU: Double = 0
    }

    /// utime + stime of a process, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
    static func cpuTicks(_ pid: String) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return user + system
    }

    func phase(workers: Int, etcdPID: Int32? = nil, _ op: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Result {
        let etcdBefore = etcdPID.map { Self.cpuTicks(String($0)) } ?? 0
        let selfBefore = Self.cpuTicks("self")
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for w in 0..<workers {
                group.addTask {
                    var samples: [Double] = []
                    var i = 0
                    while ContinuousClock.now < deadline {
                        let t0 = ContinuousClock.now
                        try await op(w, i)
                        let d = ContinuousClock.now - t0
                        samples.append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
                        i += 1
                    }
                    return samples
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = latencies.sorted()
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let operations = Double(max(sorted.count, 1))
        let etcdCPU = etcdPID.map { (Self.cpuTicks(String($0)) - etcdBefore) / ticks * 1e6 / operations } ?? 0
        let selfCPU = (Self.cpuTicks("self") - selfBefore) / ticks * 1e6 / operations
        return Result(rate: Double(sorted.count) / seconds, p50: pct(0.5), p99: pct(0.99), etcdCPU: etcdCPU, selfCPU: selfCPU)
    }

    static func call(_ session: CurlHTTP.Client, _ method: String, _ url: String, token: String? = nil, body: String? = nil) async throws -> (Int, Data) {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        let response = try await session.perform(
            CurlHTTP.Request(method: CurlHTTP.Method(method), url: url, headers: headers, body: body.map { Data($0.utf8) }))
        return (response.status, response.body)
    }
}
