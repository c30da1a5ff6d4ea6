import CurlHTTP
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird
import Logging
import Metrics
import Synchronization

/// The inference gateway, two doors onto OpenAI-protocol servers:
/// - a tenant's pods, through their owner-scoped `NXL_INFERENCE_URL`, reach the model server
///   their replica is attached to (this file);
/// - a tenant's token, at `/v1/openai/…` with `model: "<owner>/<model_name>"`, reaches the
///   instances of its deployment, at most `max_batch_size` requests in flight on each and the
///   rest queued (`InferenceGateway+Deployments.swift`, ``BatchAdmission``).
///
/// It holds no state of its own beyond watch-backed caches (model servers, deployments, and an
/// index of replicas by slug and by deployment) and the count of requests in flight, so any
/// api-server replica routes alike. Bodies stream both ways, so a `"stream": true` completion
/// arrives chunk by chunk.
public final class InferenceGateway: Sendable {
    /// The most bytes a request body may have.
    public static let maxBodyBytes = 16 << 20

    let keys: InferenceKeys
    let servers: Informer<ModelServer>
    let replicas: Informer<Replica>
    let deployments: Informer<Deployment>
    let http: CurlHTTP.Client
    let timeout: Duration
    let logger: Logger
    let admission: BatchAdmission
    let loadReporter: LoadReporter
    let attachments = Mutex(Attachments())
    /// Callers held until a deployment at zero instances has a ready one.
    let coldStarts = ColdStarts()
    private let inFlight = Mutex<[String: Int]>([:])
    private let tasks = Mutex<[Task<Void, Never>]>([])

    /// Which replicas use which slug (and the server each is bound to), and which are whose
    /// deployment's instances, per tenant.
    struct Attachments {
        /// `<tenant>/<slug>` → replica name → the model server it is bound to (nil: not yet).
        var bySlug: [String: [String: String?]] = [:]
        /// `<tenant>/<deployment>` → its instances' replica names.
        var byDeployment: [String: Set<String>] = [:]
        /// replica key → its entry in ``bySlug`` or ``byDeployment``, to undo it when the
        /// replica changes.
        var entryOf: [ObjectKey: Entry] = [:]

        enum Entry {
            case slug(String)
            case deployment(String)
        }

        mutating func apply(_ event: InformerEvent<Replica>) {
            let replica = event.object
            let key = ObjectKey(tenant: replica.metadata.tenant, name: replica.metadata.name)
            switch entryOf.removeValue(forKey: key) {
            case .slug(let previous)?:
                bySlug[previous]?[key.name] = nil
                if bySlug[previous]?.isEmpty == true { bySlug[previous] = nil }
            case .deployment(let previous)?:
                byDeployment[previous]?.remove(key.name)
                if byDeployment[previous]?.isEmpty == true { byDeployment[previous] = nil }
            case nil:
                break
            }
            if case .deleted = event { return }
            if let slug = replica.spec.modelSlug {
                let entry = "\(key.tenant)/\(slug)"
                bySlug[entry, default: [:]][key.name] = .some(replica.binding?.modelServer)
                entryOf[key] = .slug(entry)
            } else if replica.spec.owner.kind == .deployment {
                let entry = "\(key.tenant)/\(replica.spec.owner.name)"
                byDeployment[entry, default: []].insert(key.name)
                entryOf[key] = .deployment(entry)
            }
        }
    }

    /// Makes a gateway over `store`; nothing is watched until ``start()``.
    ///
    /// `timeout` bounds one request, streaming included; `queueTimeout` bounds a deployment
    /// request's wait for a free slot; deployments' load goes to etcd every `loadReportInterval`.
    public init(
        store: ResourceStore, keys: InferenceKeys, timeout: Duration = .seconds(600), queueTimeout: Duration = .seconds(60),
        loadReportInterval: Duration = .seconds(2), logger: Logger
    ) {
        self.keys = keys
        self.servers = Informer<ModelServer>(store: store, tenant: ObjectMeta.clusterTenant, logger: logger)
        self.replicas = Informer<Replica>(store: store, logger: logger)
        self.deployments = Informer<Deployment>(store: store, logger: logger)
        self.admission = BatchAdmission(timeout: queueTimeout)
        self.loadReporter = LoadReporter(reports: LoadReports(store: store), admission: admission, interval: loadReportInterval, logger: logger)
        self.http = CurlHTTP.Client(name: "gateway-curl", maxConnections: 256)
        self.timeout = timeout
        self.logger = logger
    }

    /// Starts watching model servers and replicas.
    public func start() {
        tasks.withLock { tasks in
            guard tasks.isEmpty else { return }
            servers.start()
            replicas.start()
            deployments.start()
            let events = replicas.events()
            tasks.append(Task { [self] in
                for await event in events {
                    attachments.withLock { $0.apply(event) }
                    // A deployment instance that may have turned ready: its held callers look again.
                    if case .deleted = event { continue }
                    let replica = event.object
                    if replica.spec.owner.kind == .deployment, replica.status.ready == true, replica.status.phase == .running {
                        coldStarts.wake("\(replica.metadata.tenant)/\(replica.spec.owner.name)")
                    }
                }
            })
            tasks.append(Task { [loadReporter] in await loadReporter.run() })
        }
    }

    /// Stops watching.
    public func stop() {
        tasks.withLock { for task in $0 { task.cancel() } }
        servers.stop()
        replicas.stop()
        deployments.stop()
    }

    /// Answers a request to `/v1/inference/<tenant>/<slug>/<key>/v1/<rest>` by forwarding it to
    /// `/v1/<rest>` on one of the tenant's ready model servers for `slug`.
    func forward(_ request: Request, tenant: String, slug: String, key: Substring, rest: String) async throws -> Response {
        do {
            let response = try await route(request, tenant: tenant, slug: slug, key: key, rest: rest)
            GatewayMetrics.requests(.forwarded).increment()
            return response
        } catch let error as APIError {
            GatewayMetrics.requests(GatewayMetrics.Outcome(error)).increment()
            throw error
        }
    }

    private func route(_ request: Request, tenant: String, slug: String, key: Substring, rest: String) async throws -> Response {
        if key == InferenceEndpoint.missingKey {
            throw GatewayFailure.unauthorized(
                "this inference URL has no key: the replica was admitted before keys existed; apply the application again")
        }
        guard try await keys.verify(key, tenant: tenant, slug: slug) else {
            throw GatewayFailure.unauthorized(
                "the key in this inference URL is not \(tenant)'s key for \(slug); use NXL_INFERENCE_URL exactly as injected")
        }
        let candidates = try readyServers(tenant: tenant, slug: slug)
        let body = try await Self.body(request)
        var lastFailure: CurlHTTPError?
        for server in candidates {
            let release = enter(server.name)
            let answer: CurlHTTP.StreamedResponse
            do {
                answer = try await send(
                    request, body: request.method == .get ? nil : Self.pinned(body, to: server.servedName), to: server.endpoint, rest: rest)
            } catch {
                release()
                if error.code == .couldNotConnect, !error.reachedServer {
                    logger.warning("model server does not answer; trying the next", metadata: [
                        "gateway.server": "\(server.name)", "gateway.endpoint": "\(server.endpoint)", "error": "\(error.message)",
                    ])
                    lastFailure = error
                    continue
                }
                throw GatewayFailure.upstream(error, server: server.name)
            }
            return try await Self.response(answer, release: release)
        }
        throw GatewayFailure.upstream(lastFailure ?? CurlHTTPError(code: .couldNotConnect, message: "no server", reachedServer: false), server: candidates.last?.name ?? "-")
    }

    /// Sends `request` (with `body`) to `<endpoint>/v1/<rest>` and returns once the answer's
    /// head is in.
    func send(_ request: Request, body: Data?, to endpoint: String, rest: String) async throws(CurlHTTPError) -> CurlHTTP.StreamedResponse {
        try await http.exchange(
            CurlHTTP.Request(
                method: request.method == .get ? .get : .post,
                url: endpoint + "/v1/" + rest + (request.uri.query.map { "?" + $0 } ?? ""),
                headers: Self.forwardedHeaders(request), body: body, timeout: timeout, connectTimeout: .seconds(5)))
    }

    /// A server a request may go to.
    struct Target {
        var name: String
        var endpoint: String
        var servedName: String
    }

    /// The tenant's ready servers for `slug`, fewest requests in flight first.
    private func readyServers(tenant: String, slug: String) throws -> [Target] {
        guard replicas.hasSynced, servers.hasSynced else {
            throw GatewayFailure.notReady("the gateway is still reading the cluster (this api-server just started); retry shortly")
        }
        guard let attached = attachments.withLock({ $0.bySlug["\(tenant)/\(slug)"] }) else {
            throw GatewayFailure.notFound("tenant \(tenant) has no pod using model \(slug); the URL serves only the slug its pod is pinned to")
        }
        let names = Set(attached.values.compactMap { $0 })
        let ready: [Target] = names.sorted().compactMap { name in
            guard let server = servers.get(tenant: ObjectMeta.clusterTenant, name: name), server.status.ready,
                let endpoint = server.status.endpoint, !endpoint.isEmpty
            else { return nil }
            var base = endpoint
            while base.hasSuffix("/") { base.removeLast() }
            return Target(name: name, endpoint: base, servedName: Self.servedName(server))
        }
        guard !ready.isEmpty else {
            throw GatewayFailure.notReady("the model server for \(slug) is not ready yet (placing, starting or loading); retry shortly")
        }
        let load = inFlight.withLock { counts in ready.map { counts[$0.name] ?? 0 } }
        return zip(ready, load).sorted { $0.1 < $1.1 }.map(\.0)
    }

    /// Counts a request in flight on `server`; the returned function ends it (once).
    private func enter(_ server: String) -> @Sendable () -> Void {
        inFlight.withLock { $0[server, default: 0] += 1 }
        GatewayMetrics.inFlight.increment(by: 1)
        let done = Atomic<Bool>(false)
        return { [self] in
            guard !done.exchange(true, ordering: .relaxed) else { return }
            GatewayMetrics.inFlight.decrement(by: 1)
            inFlight.withLock { counts in
                counts[server, default: 1] -= 1
                if counts[server] == 0 { counts[server] = nil }
            }
        }
    }

    /// The name the server answers to: its `--served-model-name` (vLLM) or `--model_alias`
    /// (llama-cpp-python's server), else its `--model`, else its slug (vLLM's rule).
    static func servedName(_ server: ModelServer) -> String {
        let args = server.spec.serving?.args ?? []
        for flag in ["--served-model-name", "--model_alias", "--model"] {
            if let index = args.firstIndex(of: flag), index + 1 < args.count { return args[index + 1] }
        }
        return server.spec.slug
    }

    /// The body with its `model` set to `served`: the pod's URL is pinned to one model, so
    /// whatever it asked for (`auto`, the slug, anything) is ignored. Bodies that are not a
    /// JSON object go as they are.
    static func pinned(_ body: Data, to served: String) -> Data {
        guard !body.isEmpty, let pinned = ModelField.pinned(Array(body), to: served) else { return body }
        return Data(pinned)
    }

    static func body(_ request: Request) async throws -> Data {
        var request = request
        return try await body(collecting: &request)
    }

    /// The body, collected into `request` itself: it keeps its connection's request stream, so
    /// a held call can still see the caller hang up (`consumeWithCancellationOnInboundClose`).
    static func body(collecting request: inout Request) async throws -> Data {
        guard request.method != .get else { return Data() }
        do {
            return Data(try await request.collectBody(upTo: maxBodyBytes).readableBytesView)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, .tooLarge, "the request body is larger than \(maxBodyBytes) bytes")
        }
    }

    static func forwardedHeaders(_ request: Request) -> [CurlHTTP.Header] {
        var headers: [CurlHTTP.Header] = []
        headers.append(CurlHTTP.Header("Content-Type", request.headers[.contentType] ?? "application/json"))
        if let accept = request.headers[.accept] { headers.append(CurlHTTP.Header("Accept", accept)) }
        return headers
    }

    /// Answers up to this size with a stated length are passed on whole, in one write.
    static let wholeAnswerLimit = 4 << 20

    /// The caller's answer: the server's status, content type and body. An answer of known
    /// length that is not an event stream (a plain completion, embeddings, the model list) is
    /// read whole and sent in one piece; anything else streams chunk by chunk as it comes.
    static func response(
        _ answer: CurlHTTP.StreamedResponse, release: @escaping @Sendable () -> Void,
        countTokens: (@Sendable (Int) -> Void)? = nil
    ) async throws -> Response {
        // Released when the body is written, or when the response is dropped unwritten (the
        // caller went away first): a deployment's slot must never leak.
        let release = ReleaseOnce(release)
        var headers = HTTPFields()
        let contentType = answer.header("Content-Type") ?? "application/json"
        headers[.contentType] = contentType
        if let cache = answer.header("Cache-Control") { headers[.cacheControl] = cache }
        if !contentType.hasPrefix("text/event-stream"), let length = answer.header("Content-Length").flatMap(Int.init),
            length <= wholeAnswerLimit
        {
            defer { release() }
            var whole = ByteBuffer()
            whole.reserveCapacity(length)
            do {
                for try await chunk in answer.body { whole.writeBytes(chunk) }
            } catch {
                answer.cancel()
                throw GatewayFailure.upstream(
                    error as? CurlHTTPError ?? CurlHTTPError(code: .transfer, message: "\(error)", reachedServer: true), server: "the model server")
            }
            if let countTokens, let tokens = whole.withUnsafeReadableBytes({ CompletionTokens.scan($0) }) { countTokens(tokens) }
            return Response(status: .init(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: whole))
        }
        let body = ResponseBody { writer in
            // A stream reports usage (if at all) in its last events: the largest count seen.
            var tokens = 0
            defer {
                if let countTokens, tokens > 0 { countTokens(tokens) }
                release()
            }
            do {
                for try await chunk in answer.body {
                    if countTokens != nil, let seen = chunk.withUnsafeBytes({ CompletionTokens.scan($0) }) { tokens = max(tokens, seen) }
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
            } catch {
                answer.cancel()
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: .init(code: answer.status), headers: headers, body: body)
    }
}

/// The `"completion_tokens": N` of an OpenAI-protocol answer's `usage`, found in its bytes
/// without parsing the rest (answers are large; only this number is wanted). Nil when absent.
enum CompletionTokens {
    static let key = Array("\"completion_tokens\"".utf8)

    static func scan(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= key.count else { return nil }
        var found: Int?
        var i = 0
        while i <= bytes.count - key.count {
            var matches = true
            for j in 0..<key.count where bytes[i + j] != key[j] {
                matches = false
                break
            }
            guard matches else {
                i += 1
                continue
            }
            var k = i + key.count
            while k < bytes.count, bytes[k] == UInt8(ascii: " ") || bytes[k] == UInt8(ascii: ":") { k += 1 }
            var value = 0
            var digits = 0
            while k < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[k]), digits < 12 {
                value = value * 10 + Int(bytes[k] - UInt8(ascii: "0"))
                digits += 1
                k += 1
            }
            if digits > 0 { found = max(found ?? 0, value) }
            i = k
        }
        return found
    }
}

/// A release run exactly once: when called, or at the latest when the last reference goes.
final class ReleaseOnce: Sendable {
    private let action: @Sendable () -> Void
    private let done = Atomic<Bool>(false)

    init(_ action: @escaping @Sendable () -> Void) { self.action = action }

    func callAsFunction() {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        action()
    }

    deinit { self() }
}

/// Why the gateway could not forward a request, as the pod sees it.
enum GatewayFailure {
    static func unauthorized(_ message: String) -> APIError { APIError(.unauthorized, .unauthorized, message) }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, .notFound, message) }
    static func notReady(_ message: String) -> APIError {
        var error = APIError(.serviceUnavailable, .unavailable, message)
        error.retryAfter = 2
        return error
    }
    static func upstream(_ error: CurlHTTPError, server: String) -> APIError {
        if error.code == .timeout {
            return APIError(.gatewayTimeout, .upstreamTimeout, "model server \(server) did not finish in time: \(error.message)")
        }
        return APIError(.badGateway, .upstream, "model server \(server) failed: \(error.message)")
    }
}

/// The gateway's counters on `/metrics`.
enum GatewayMetrics {
    /// How a request to the gateway ended.
    enum Outcome: String, CaseIterable {
        /// Handed to a model server, whose answer (any status) went back.
        case forwarded
        /// 401: a bad or missing key.
        case unauthorized
        /// 404: no pod of the tenant uses the slug.
        case notFound = "not_found"
        /// 503: no ready server.
        case notReady = "not_ready"
        /// 502/504: the server failed or took too long.
        case upstreamFailed = "upstream_failed"
        /// 429: every instance of a deployment is at `max_batch_size` and the queue is full or
        /// the wait ran out.
        case overloaded
        /// 400/413 and the rest.
        case rejected

        init(_ error: APIError) {
            switch error.status {
            case .unauthorized: self = .unauthorized
            case .notFound: self = .notFound
            case .serviceUnavailable: self = .notReady
            case .badGateway, .gatewayTimeout: self = .upstreamFailed
            case .tooManyRequests: self = .overloaded
            default: self = .rejected
            }
        }
    }

    private static let counters = OutcomeCounters<Outcome>(label: "gpuplane_gateway_requests_total")

    static func requests(_ outcome: Outcome) -> Counter { counters[outcome] }

    /// Requests being answered by model servers right now.
    static let inFlight = Meter(label: "gpuplane_gateway_in_flight")
    /// Deployment requests waiting for a free slot (`max_batch_size`), or held for an instance
    /// of a deployment at zero to be ready, right now.
    static let queued = Meter(label: "gpuplane_gateway_queued")
}
