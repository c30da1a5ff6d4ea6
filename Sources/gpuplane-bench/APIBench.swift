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
        if breakdown { try await parts(deps: deps) }
        print("clients  raw etcd puts/s  applies/s  ratio  apply p50 ms  apply p99 ms")
        let value = String(repeating: "x", count: 600)
        for count in clients.split(separator: ",").compactMap({ Int($0) }) {
            let raw = try await phase(workers: count) { w, i in
                _ = try await etcd.put("/bench/raw/\(count)/\(w)/\(i)", value)
            }
            let applies = try await phase(workers: count) { w, i in
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
            print(String(
                format: "%7d  %15.0f  %9.0f  %5.2f  %12.2f  %12.2f", count, raw.rate, applies.rate, applies.rate / raw.rate,
                applies.p50 * 1000, applies.p99 * 1000))
        }
    }

    /// Microseconds per call of each part of an apply, measured one after another.
    func parts(deps: APIDependencies) async throws {
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
            let start = ContinuousClock.now
            for _ in 0..<rounds { try await body() }
            let d = ContinuousClock.now - start
            let us = (Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12) / Double(rounds)
            print(String(format: "  %-44@ %8.1f µs", label as NSString, us))
        }
        print("parts of one apply (\(rounds) rounds each, sequential):")
        let reader = ManifestReader(context: ValidationContext(catalog: deps.catalog, plan: .pro))
        await time("read + validate the YAML manifest") { _ = reader.read(manifest) }
        guard case .application(let name, let spec)? = reader.read(manifest).objects.first else { return }
        let app = GPUPlaneCore.Application(metadata: ObjectMeta(name: name, tenant: "bench", uid: UUID().uuidString), spec: spec)
        let replicas = ReplicaPlanner(catalog: deps.catalog).replicas(for: app)
        try await time("encode application + replica as JSON") {
            _ = try GPUPlaneJSON.encoder().encode(app)
            _ = try GPUPlaneJSON.encoder().encode(replicas[0])
        }
        let encoded = try GPUPlaneJSON.encoder().encode(app)
        try await time("decode application JSON") { _ = try GPUPlaneJSON.decoder().decode(GPUPlaneCore.Application.self, from: encoded) }
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
    }

    struct Result {
        var rate: Double
        var p50: Double
        var p99: Double
    }

    func phase(workers: Int, _ op: @escaping @Sendable (Int, Int) async throws -> Void) async throws -> Result {
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
        return Result(rate: Double(sorted.count) / seconds, p50: pct(0.5), p99: pct(0.99))
    }

    static func call(_ session: CurlHTTP.Client, _ method: String, _ url: String, token: String? = nil, body: String? = nil) async throws -> (Int, Data) {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        let response = try await session.perform(
            CurlHTTP.Request(method: CurlHTTP.Method(method), url: url, headers: headers, body: body.map { Data($0.utf8) }))
        return (response.status, response.body)
    }
}
