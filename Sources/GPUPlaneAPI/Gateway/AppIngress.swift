import CurlHTTP
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import HTTPTypes
import Hummingbird
import Logging
import Metrics

/// The `path` ingress: an application's pod with a `path` is reachable from outside at
/// `/apps/<tenant>/<app><path>/…` on any api-server, proxied to a ready replica of the pod at
/// the host port its node-agent published the pod's ingress port on
/// (``ReplicaSpec/ingressPort``, the pod's first servicePort).
///
/// - Public: no bearer token, like any web application's URL. A request only ever reaches the
///   pod of the tenant and application its URL names: the application is looked up by
///   `<tenant>/<app>`, the pod by the longest `path` that is a whole-segment prefix of the rest,
///   and the replica by its name `<app>.<pod>` in that tenant, owned by that application's uid.
/// - The path is kept: `/apps/acme/shop/api/items?x=1` reaches `/api/items?x=1` on the pod
///   (as a Kubernetes Ingress does by default); `X-Forwarded-Prefix: /apps/acme/shop` says what
///   was taken off, and a `Location` that is an absolute path gets it put back.
/// - Headers: hop-by-hop ones (`Connection` and what it names, `Keep-Alive`, `TE`, `Trailer`,
///   `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are dropped both ways; `X-Forwarded-For`
///   (the client's address: the api-server is the edge, so a client's own value is replaced),
///   `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix` are set. A gpuplane
///   token (`Authorization: Bearer gp_…`) is never forwarded; any other `Authorization` (the
///   application's own) is.
/// - Bodies: the request body is read whole, up to ``maxBodyBytes`` (413 beyond); the answer
///   streams back as it comes (chunked answers, server-sent events). One request may take up to
///   the ingress timeout (an hour by default), streaming included.
/// - Upgrades (websockets): a request with `Upgrade` that resolves to a ready replica is
///   spliced to it byte for byte on the connection itself (``IngressUpgradeHandler``); one
///   whose connection to the pod fails is 502. (A server built without that handler answers
///   501.)
///
/// Connection limits (header, body and keep-alive timeouts; connections per address) and the
/// HTTP decoder's header limits are the api-server's own, since the ingress is one of its routes.
public final class AppIngress: Sendable {
    /// The most bytes a request body may have (the inference gateway's limit).
    public static let maxBodyBytes = 16 << 20
    /// Where application URLs start.
    public static let pathPrefix = "/apps/"

    let applications: Informer<GPUPlaneCore.Application>
    let replicas: Informer<Replica>
    let http: CurlHTTP.Client
    let timeout: Duration
    let logger: Logger
    /// `X-Forwarded-Proto`: `https` when the api-server's public URL is, else `http`.
    let forwardedProto: String

    /// Makes an ingress over `store`, reading replicas from `replicas` (the inference
    /// gateway's informer, started by it); nothing is watched until ``start()``. `publicURL`
    /// (the api-server's, as clients reach it) sets `X-Forwarded-Proto`.
    public init(
        store: ResourceStore, replicas: Informer<Replica>, timeout: Duration = .seconds(3600), publicURL: String? = nil,
        servesTLS: Bool = false, logger: Logger
    ) {
        self.applications = Informer<GPUPlaneCore.Application>(store: store, logger: logger)
        self.replicas = replicas
        self.http = CurlHTTP.Client(name: "ingress-curl", maxConnections: 256)
        self.timeout = timeout
        self.forwardedProto = publicURL.map { $0.lowercased().hasPrefix("https://") } ?? servesTLS ? "https" : "http"
        self.logger = logger
    }

    /// Starts watching applications.
    public func start() { applications.start() }

    /// Stops watching.
    public func stop() { applications.stop() }

    /// The URL of `application` of `tenant` under `base` (`http://host:port`, no trailing slash).
    public static func url(base: String, tenant: String, application: String) -> String {
        var base = base
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/apps/\(tenant)/\(application)"
    }

    /// The routes of `application` (one per pod with a path) under its URL `appURL`, each
    /// ready when the replica of its pod is.
    public static func routes(of application: GPUPlaneCore.Application, appURL: String, replicas: [Replica]) -> [ApplicationRoute] {
        application.spec.pods.compactMap { pod in
            guard let path = pod.path else { return nil }
            let name = ReplicaPlanner.replicaName(application: application.metadata.name, pod: pod.name)
            let replica = replicas.first { $0.metadata.name == name }
            let normalized = ApplicationValidator.normalizedIngressPath(path)
            return ApplicationRoute(
                pod: pod.name, path: path, port: ReplicaPlanner.ingressPort(of: pod),
                url: appURL + (normalized == "/" ? "/" : normalized),
                ready: replica.map { isReady($0, application: application) } ?? false)
        }
    }

    /// Whether `replica` takes ingress requests for `application`: its own, running, with an
    /// ingress port its node-agent published and found accepting connections.
    static func isReady(_ replica: Replica, application: GPUPlaneCore.Application) -> Bool {
        replica.metadata.tenant == application.metadata.tenant && replica.spec.owner.kind == .application
            && replica.spec.owner.name == application.metadata.name && replica.spec.owner.uid == application.metadata.uid
            && replica.spec.ingressPort != nil && replica.binding != nil && replica.status.phase == .running
            && replica.status.ready == true && !(replica.status.endpoint ?? "").isEmpty
    }

    // MARK: Routing

    /// A request's target, split from the raw request target `/apps/<tenant>/<app>/<rest>?<query>`.
    struct Target: Equatable {
        var tenant: String
        var application: String
        /// The path after the application, with its leading `/` (`/api/items`); `/` when none.
        var rest: String
        /// The raw query, without `?`.
        var query: String?
    }

    /// Splits the raw request target (`request.head.path`); nil when it is not under
    /// ``pathPrefix`` with a tenant and an application.
    static func target(_ raw: String) -> Target? {
        let (path, query): (Substring, String?) = {
            guard let mark = raw.firstIndex(of: "?") else { return (Substring(raw), nil) }
            return (raw[..<mark], String(raw[raw.index(after: mark)...]))
        }()
        guard path.hasPrefix(pathPrefix) else { return nil }
        let parts = path.dropFirst(pathPrefix.count).split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        let rest = parts.count == 3 ? "/" + parts[2] : "/"
        return Target(tenant: String(parts[0]), application: String(parts[1]), rest: rest, query: query)
    }

    /// The pod of `application` whose `path` is the longest whole-segment prefix of `rest`.
    static func pod(of application: GPUPlaneCore.Application, for rest: String) -> Pod? {
        let segments = rest.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        var best: (pod: Pod, length: Int)?
        for pod in application.spec.pods {
            guard let path = pod.path else { continue }
            let normalized = ApplicationValidator.normalizedIngressPath(path)
            let wanted = normalized == "/" ? [] : normalized.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { $0 }
            guard wanted.count <= segments.count, zip(wanted, segments).allSatisfy({ $0 == $1 }) else { continue }
            if wanted.count > (best?.length ?? -1) { best = (pod, wanted.count) }
        }
        return best?.pod
    }

    /// Whether a raw path segment is `.` or `..`, spelled plainly or percent-encoded.
    static func isDotSegment(_ segment: Substring) -> Bool {
        let decoded = segment.replacingOccurrences(of: "%2e", with: ".", options: .caseInsensitive)
        return decoded == "." || decoded == ".."
    }

    /// Answers a request to `/apps/<tenant>/<app>/…`.
    func forward(_ request: Request, context: APIContext) async throws -> Response {
        do {
            let response = try await route(request, context: context)
            IngressMetrics.requests(.forwarded).increment()
            return response
        } catch let error as APIError {
            IngressMetrics.requests(IngressMetrics.Outcome(error)).increment()
            throw error
        }
    }

    private func route(_ request: Request, context: APIContext) async throws -> Response {
        guard let target = Self.target(request.head.path ?? request.uri.description) else {
            throw APIError(.notFound, .notFound, "an application URL is /apps/<tenant>/<application>/<path>")
        }
        if let segment = target.rest.split(separator: "/").first(where: Self.isDotSegment) {
            throw APIError(.badRequest, .badRequest, "the path has a '\(segment)' segment; send the path it stands for")
        }
        let (pod, candidates) = try resolve(target)
        if let upgrade = request.headers.first(where: { $0.name.canonicalName == "upgrade" })?.value {
            // A resolved upgrade is spliced on the connection (``IngressUpgradeHandler``) and
            // never gets here, unless connecting to the pod failed.
            if let failure = request.headers.first(where: { $0.name.canonicalName == IngressUpgradeHandler.failureHeader.lowercased() }) {
                throw APIError(.badGateway, .upstream, "pod \(pod.name) did not take the upgrade connection: \(failure.value)")
            }
            throw APIError(
                .notImplemented, .notImplemented,
                "this server does not splice protocol upgrades (Upgrade: \(upgrade)); use plain HTTP requests, or server-sent events to stream")
        }
        let body = try await Self.body(request)
        let prefix = "/apps/\(target.tenant)/\(target.application)"
        let headers = Self.forwardedHeaders(request, context: context, prefix: prefix, proto: forwardedProto)
        var lastFailure: CurlHTTPError?
        for (replica, endpoint) in candidates {
            let answer: CurlHTTP.StreamedResponse
            do throws(CurlHTTPError) {
                answer = try await http.exchange(
                    CurlHTTP.Request(
                        method: CurlHTTP.Method(request.method.rawValue),
                        url: endpoint + target.rest + (target.query.map { "?" + $0 } ?? ""), headers: headers, body: body,
                        timeout: timeout, connectTimeout: .seconds(3)))
            } catch {
                if error.code == .couldNotConnect, !error.reachedServer {
                    logger.warning("application replica does not accept connections; trying the next", metadata: [
                        "ingress.replica": "\(target.tenant)/\(replica)", "ingress.endpoint": "\(endpoint)", "error": "\(error.message)",
                    ])
                    lastFailure = error
                    continue
                }
                throw Self.failure(error, pod: pod.name)
            }
            return Self.response(answer, prefix: prefix, head: request.method == .head)
        }
        throw Self.failure(
            lastFailure ?? CurlHTTPError(code: .couldNotConnect, message: "no replica", reachedServer: false), pod: pod.name)
    }

    /// Where an upgrade request goes: the first ready replica's published address.
    struct UpgradeDestination: Sendable {
        var host: String
        var port: Int
        /// `host:port` as a `Host` header writes it.
        var authority: String
    }

    /// The published address of the first ready replica for `target`.
    /// - Throws: ``APIError`` as the route would answer.
    func upgradeDestination(_ target: Target) throws -> UpgradeDestination {
        if target.rest.split(separator: "/").contains(where: Self.isDotSegment) {
            throw APIError(.badRequest, .badRequest, "the path has a dot segment")
        }
        let (pod, candidates) = try resolve(target)
        for (_, endpoint) in candidates {
            guard let url = URL(string: endpoint), var host = url.host, let port = url.port else { continue }
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return UpgradeDestination(host: host, port: port, authority: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        }
        throw GatewayFailure.notReady("pod \(pod.name) has no replica with a usable address")
    }

    /// The pod of `target` and its ready replicas (name, endpoint without a trailing `/`).
    /// - Throws: ``APIError``: 503 before the caches are read or with no ready replica, 404
    ///   for no such application or path.
    func resolve(_ target: Target) throws -> (pod: Pod, candidates: [(String, String)]) {
        guard applications.hasSynced, replicas.hasSynced else {
            throw GatewayFailure.notReady("the api-server is still reading the cluster (it just started); retry shortly")
        }
        guard let application = applications.get(tenant: target.tenant, name: target.application) else {
            throw APIError(.notFound, .notFound, "tenant \(target.tenant) has no application \(target.application)")
        }
        guard let pod = Self.pod(of: application, for: target.rest) else {
            let paths = application.spec.pods.compactMap(\.path)
            throw APIError(
                .notFound, .notFound,
                paths.isEmpty
                    ? "application \(target.application) has no pod with a path, so nothing of it is reachable from outside"
                    : "no path of application \(target.application) matches \(target.rest); it serves \(paths.sorted().joined(separator: ", "))")
        }
        guard ReplicaPlanner.ingressPort(of: pod) != nil else {
            throw APIError(.notFound, .notFound, "pod \(pod.name) has path \(pod.path ?? "") but no servicePort to serve it on")
        }
        let name = ReplicaPlanner.replicaName(application: application.metadata.name, pod: pod.name)
        let candidates = [replicas.get(tenant: target.tenant, name: name)].compactMap { $0 }
            .filter { Self.isReady($0, application: application) }
            .compactMap { replica -> (String, String)? in
                guard var endpoint = replica.status.endpoint else { return nil }
                while endpoint.hasSuffix("/") { endpoint.removeLast() }
                return (replica.metadata.name, endpoint)
            }
        guard !candidates.isEmpty else {
            throw GatewayFailure.notReady(
                "pod \(pod.name) of application \(target.application) has no ready replica yet (placing, starting, or its port \(ReplicaPlanner.ingressPort(of: pod) ?? 0) not accepting connections); retry shortly")
        }
        return (pod, candidates)
    }

    static func failure(_ error: CurlHTTPError, pod: String) -> APIError {
        if error.code == .timeout {
            return APIError(.gatewayTimeout, .upstreamTimeout, "pod \(pod) did not answer in time: \(error.message)")
        }
        return APIError(.badGateway, .upstream, "pod \(pod) failed to answer: \(error.message)")
    }

    static func body(_ request: Request) async throws -> Data? {
        guard request.method != .get, request.method != .head else { return nil }
        var request = request
        do {
            let bytes = try await request.collectBody(upTo: maxBodyBytes)
            return bytes.readableBytes == 0 && request.method != .post && request.method != .put && request.method != .patch
                ? nil : Data(bytes.readableBytesView)
        } catch let error as HTTPResponseError where error.status == .contentTooLarge {
            throw APIError(.contentTooLarge, .tooLarge, "the request body is larger than \(maxBodyBytes) bytes")
        }
    }

    /// Headers that belong to one connection, never forwarded either way (RFC 9110 §7.6.1).
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    /// Request headers set by the proxy or by libcurl, never copied from the client.
    static let replacedOnRequest: Set<String> = [
        "host", "content-length", "expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix",
        "forwarded",
    ]

    /// The names a `Connection` header lists (they are hop-by-hop too).
    static func connectionTokens(_ values: [String]) -> Set<String> {
        Set(values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
    }

    /// The headers sent to the pod: the client's, less hop-by-hop ones and gpuplane tokens,
    /// plus `X-Forwarded-*`.
    static func forwardedHeaders(_ request: Request, context: APIContext, prefix: String, proto: String) -> [CurlHTTP.Header] {
        let connection = request.headers.filter { $0.name.canonicalName == "connection" }.map(\.value)
        let dropped = hopByHop.union(connectionTokens(connection)).union(replacedOnRequest)
        var headers: [CurlHTTP.Header] = []
        for field in request.headers {
            let name = field.name.canonicalName
            if dropped.contains(name) { continue }
            if name == "authorization", isGPUPlaneToken(field.value) { continue }
            headers.append(CurlHTTP.Header(field.name.rawName, field.value))
        }
        if let address = context.remoteAddress { headers.append(CurlHTTP.Header("X-Forwarded-For", address)) }
        headers.append(CurlHTTP.Header("X-Forwarded-Proto", proto))
        if let host = request.head.authority { headers.append(CurlHTTP.Header("X-Forwarded-Host", host)) }
        headers.append(CurlHTTP.Header("X-Forwarded-Prefix", prefix))
        // Without a body libcurl sends none of its own; a client's Content-Type still goes.
        return headers
    }

    /// Whether an `Authorization` value carries a gpuplane token (``Tokens/generate()``), which
    /// an application must never see.
    static func isGPUPlaneToken(_ value: String) -> Bool {
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        return parts[1].trimmingCharacters(in: .whitespaces).hasPrefix("gp_")
    }

    /// The client's answer: the pod's status, headers (less hop-by-hop ones) and body, streamed.
    static func response(_ answer: CurlHTTP.StreamedResponse, prefix: String, head: Bool) -> Response {
        var fields = HTTPFields()
        let dropped = hopByHop.union(connectionTokens(answer.headers.filter { $0.name.lowercased() == "connection" }.map(\.value)))
        for header in answer.headers {
            let lower = header.name.lowercased()
            guard !dropped.contains(lower), lower != "date", lower != "server", let name = HTTPField.Name(header.name) else { continue }
            var value = header.value
            if lower == "location" { value = rewrittenLocation(value, prefix: prefix) }
            fields.append(HTTPField(name: name, value: value))
        }
        let status = HTTPResponse.Status(code: answer.status)
        if head {
            answer.cancel()
            return Response(status: status, headers: fields, body: ResponseBody())
        }
        return Response(status: status, headers: fields, body: .relaying(answer))
    }

    /// A `Location` that is an absolute path on the pod (`/api/login`) as the client reaches it
    /// (`/apps/<tenant>/<app>/api/login`); anything else as it is.
    static func rewrittenLocation(_ value: String, prefix: String) -> String {
        guard value.hasPrefix("/"), !value.hasPrefix("//"), !value.hasPrefix(prefix + "/") else { return value }
        return prefix + value
    }
}

/// The ingress's counter on `/metrics`.
enum IngressMetrics {
    /// How a request to an application URL ended.
    enum Outcome: String, CaseIterable {
        /// Handed to a pod, whose answer (any status) went back.
        case forwarded
        /// 404: no such application or path.
        case notFound = "not_found"
        /// 503: no ready replica.
        case notReady = "not_ready"
        /// 502/504: the pod failed or took too long.
        case upstreamFailed = "upstream_failed"
        /// 400/413/501 and the rest.
        case rejected

        init(_ error: APIError) {
            switch error.status {
            case .notFound: self = .notFound
            case .serviceUnavailable: self = .notReady
            case .badGateway, .gatewayTimeout: self = .upstreamFailed
            default: self = .rejected
            }
        }
    }

    private static let counters = OutcomeCounters<Outcome>(label: "gpuplane_ingress_requests_total")

    static func requests(_ outcome: Outcome) -> Counter { counters[outcome] }
}
