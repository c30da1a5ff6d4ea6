import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Logging

/// A harness step that could not be done.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
}

/// One real etcd and one live api-server per test process, shared by every test; each test
/// uses its own tenants so they run in parallel.
actor SharedServer {
    static let shared = SharedServer()
    private var harness: Harness?

    func get() async throws -> Harness {
        if let harness { return harness }
        let (harness, _) = try await Harness.start()
        self.harness = harness
        return harness
    }
}

extension Harness {
    /// A server of its own on an etcd of its own, for a test that does what would disturb the
    /// others on ``SharedServer`` (compacting etcd's history, say). Cancel the server's task and
    /// shut the etcd down when done.
    /// `shutdownGrace`: how long the server's graceful stop may take before what still runs is
    /// cancelled (``apiServerShutdownGrace``); `limits`: its connections' timeouts and limits.
    static func start(
        shutdownGrace: Duration = apiServerShutdownGrace, limits: ConnectionLimits = ConnectionLimits(),
        _ configure: (inout APIDependencies) -> Void = { _ in }
    ) async throws -> (Harness, RunningAPIServer) {
        let etcd = try await EtcdFixture.start()
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints))
        let admin = Tokens.generate()
        let auditIdentifier = "gpuplane-api-test-\(UUID().uuidString.prefix(8))"
        let logger = Logger(label: "gpuplane.api") { label in
            JournaldLogHandler(label: label, identifier: auditIdentifier, level: .notice, fallback: LogLineSink { _ in })
        }
        var deps = APIDependencies(
            store: ResourceStore(client: client), catalog: try Catalog.standard(), adminTokens: [admin], heartbeatTTL: 3,
            bookmarkInterval: 0.5, logger: logger)
        // Secrets are sealed with a key file as the daemon reads it (secret-key-file).
        deps.secretKeys = try SecretKeyring.load(path: try TestEnvironment.secretKeyFile().path)
        configure(&deps)
        let server = try await startAPIServer(deps, limits: limits, shutdownGrace: shutdownGrace)
        let harness = Harness(base: server.base, admin: admin, etcd: etcd, client: client, deps: deps, auditIdentifier: auditIdentifier)
        try await eventually("api-server answers /healthz") { try await harness.call("GET", "/healthz").status == 200 }
        return (harness, server)
    }
}

struct Reply: Sendable {
    var status: Int
    var body: Data
    var headers: [String: String]

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:] }
    var text: String { String(decoding: body, as: UTF8.self) }
    var error: [String: Any] { json["error"] as? [String: Any] ?? [:] }
    var errorCode: String? { error["code"] as? String }
    var errorMessage: String { error["message"] as? String ?? "" }
    var items: [[String: Any]] { json["items"] as? [[String: Any]] ?? [] }
    var resourceVersion: String? {
        (json["metadata"] as? [String: Any])?["resourceVersion"] as? String ?? json["resourceVersion"] as? String
    }
}

struct Harness: Sendable {
    let base: String
    let admin: String
    let etcd: EtcdFixture
    let client: Etcd.Client
    let deps: APIDependencies
    let auditIdentifier: String

    /// Calls through libcurl, not URLSession: cancelling a task in the middle of FoundationNetworking's
    /// async `data(for:)` can deadlock its cancel against its completion and hang the test
    /// process (seen in HeartbeatTrackerTests with gdb).
    func call(
        _ method: String, _ path: String, token: String? = nil, body: String? = nil, data: Data? = nil, headers: [String: String] = [:],
        timeout: Duration = .seconds(60)
    ) async throws -> Reply {
        let response = try await Self.http.perform(.api(
            method, base + path, token: token, headers: headers.map { CurlHTTP.Header($0.key, $0.value) },
            body: data ?? body.map { Data($0.utf8) }, timeout: timeout))
        var replyHeaders: [String: String] = [:]
        for header in response.headers {
            let name = header.name.lowercased()
            replyHeaders[name] = replyHeaders[name].map { "\($0), \(header.value)" } ?? header.value
        }
        return Reply(status: response.status, body: response.body, headers: replyHeaders)
    }

    static let http = CurlHTTP.Client(name: "api-test-curl")

    /// The body of a GET of `url` (a stand-in model server's, say) through libcurl, or nil when
    /// it does not answer 200 within `timeout`. Not `String(contentsOf:)`: on Linux that loads an
    /// http URL through FoundationNetworking, blocking a thread of the cooperative pool.
    static func text(at url: String, timeout: Duration = .seconds(5)) async -> String? {
        guard let response = try? await http.perform(CurlHTTP.Request(method: .get, url: url, headers: [], body: nil, timeout: timeout)),
            response.status == 200
        else { return nil }
        return String(decoding: response.body, as: UTF8.self)
    }

    /// A new tenant on `plan` with a user token.
    func tenant(_ plan: Plan, gpuLimit: Int = 4, spendingLimitUSD: Double? = nil) async throws -> (name: String, token: String) {
        let name = "t-" + UUID().uuidString.prefix(8).lowercased()
        var body = #"{"name": "\#(name)", "plan": "\#(plan.rawValue)", "gpu_limit": \#(gpuLimit)"#
        if let spendingLimitUSD { body += #", "spending_limit_usd": \#(spendingLimitUSD)"# }
        body += "}"
        let created = try await call("POST", "/v1/tenants", token: admin, body: body)
        guard created.status == 201 else { throw HarnessError(description: "tenant creation: \(created.text)") }
        let token = try await call("POST", "/v1/tokens", token: admin, body: #"{"tenant": "\#(name)", "role": "user"}"#)
        guard let secret = token.json["token"] as? String else { throw HarnessError(description: "token: \(token.text)") }
        return (name, secret)
    }

    /// A token for a node.
    func nodeToken(_ node: String) async throws -> String {
        let reply = try await call("POST", "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)
        guard let secret = reply.json["token"] as? String else { throw HarnessError(description: "node token: \(reply.text)") }
        return secret
    }

    /// Every key under gpuplane's prefix with its mod revision, to prove a rejected request wrote nothing.
    func snapshot(prefix: String = "/gpuplane/") async throws -> [String: Int64] {
        let kvs = try await client.range(.prefix(prefix)).kvs
        return Dictionary(uniqueKeysWithValues: kvs.map { ($0.keyString, $0.modRevision) })
    }
}

extension Harness {
    /// `curl -N` of `path` with `token`, the stream written to `file` in a directory of its own
    /// (read it with ``ndjsonLines(_:)``). Kill it with `kill9()`: curl inherits an ignored
    /// SIGTERM from the test runner.
    func curlStream(_ path: String, token: String, _ file: String) throws -> (ChildProcess, URL) {
        let out = try TestEnvironment.temporaryDirectory(prefix: "api-stream").appendingPathComponent(file)
        let curl = try ChildProcess(
            executable: "/usr/bin/curl", arguments: ["-sN", "-H", "Authorization: Bearer \(token)", "\(base)\(path)"], logFile: out)
        return (curl, out)
    }
}

/// The ndjson lines written to `out` so far (a watch's, by ``Harness/curlStream(_:token:_:)``).
func ndjsonLines(_ out: URL) -> [[String: Any]] {
    let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
}

/// Stops `server` gracefully and waits, within `eventually`'s bound, until it has stopped: a
/// stop that never ends fails the test instead of hanging it (the stop runs in a task of its
/// own, left behind then).
func stopsOnItsOwn(_ server: RunningAPIServer) async throws {
    let stopped = Locked(false)
    let stopping = Task.detached {
        await server.stop()
        stopped.withLock { $0 = true }
    }
    defer { stopping.cancel() }
    try await eventually("the server stopped") { stopped.withLock { $0 } }
}

func app(_ name: String, pods: String) -> String {
    "application:\n  name: \(name)\n  pods:\n" + pods
}

let chatBackend = """
    application:
      name: my-chat-backend
      pods:
      - name: api
        path: /api
        image: myorg/chat-backend:v1
        servicePorts: [8000]
        gpu:
          enabled: true
          model: llama-3.3-70b
          priority: inference
        vars:
          DATABASE_URL: postgresql://app:pass@db.pod:5432/chat
    """
