import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneListener
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOSSL
import ServiceLifecycle

/// Everything the routes need; built once per process (or per test against a test etcd).
public struct APIDependencies: Sendable {
    /// Typed objects in etcd, and through it the other key families (tokens, heartbeats, load
    /// reports, the inference secret): the api-server's only way to etcd.
    public var store: ResourceStore
    /// The model catalog.
    public var catalog: Catalog
    /// The machine types.
    public var machineTypes: MachineTypeTable
    /// The fleet's largest `gpu.memoryGB`.
    public var maxGPUMemoryGB: Int
    /// Bearer-token checks.
    public var authenticator: TokenAuthenticator
    /// The image custom LLM deployments run.
    public var deploymentImage: String
    /// Whether new deployments have their weights fetched by the node-agents
    /// (`deployment-weights node-agent`, ``DeploymentSpec/fetchWeights``) rather than by the engine.
    public var deploymentWeightsByAgent = false
    /// Seconds a node stays Ready without a heartbeat: the TTL of the lease its heartbeat key
    /// lives on (``heartbeats``).
    public var heartbeatTTL: Int64
    /// The nodes' beats to this api-server, in memory (``HeartbeatTracker``).
    public let heartbeats: HeartbeatTracker
    /// Seconds between BOOKMARK events on idle watches.
    public var bookmarkInterval: Double
    /// The one clock of every watch's bookmarks.
    let bookmarkTicks = BookmarkTicks()
    /// One shared etcd watch per kind behind every client watch (``WatchStreamer``).
    public var watchCaches: WatchCaches
    /// The logger for requests and audit lines.
    public var logger: Logger
    /// A watch-backed cache of tenants, so admission needs no etcd read for the plan.
    public let tenants: Informer<Tenant>
    /// Per tenant, whether its applies mostly name applications that exist (see
    /// ``ApplyHistory``).
    let applyHistory = ApplyHistory()
    /// Each tenant's GPU admissions in this api-server, one at a time (``Admission/inTurn(_:_:)``).
    let admissionTurns = Turns()
    /// GPU admissions decided again because another one of the tenant committed first
    /// (``admissionRaceCount``, `gpuplane_api_admission_races_total`).
    let admissionRaces = Locked(0)
    /// How many GPU admissions of this api-server were decided again because another one of
    /// the tenant committed first, since it started.
    public var admissionRaceCount: Int { admissionRaces.withLock { $0 } }
    /// The keys of inference URLs.
    public let inferenceKeys: InferenceKeys
    /// The inference gateway.
    public let gateway: InferenceGateway
    /// The `path` ingress: application URLs, `/apps/<tenant>/<app>/…`.
    public let ingress: AppIngress
    /// The api-server's URL as clients reach it (`https://gpu.example.com`), which application
    /// URLs start with; nil: the scheme this server serves and the `Host` the caller used.
    public var publicURL: String?
    /// Whether this server serves HTTPS (`tls-cert-file`): application URLs and the ingress's
    /// `X-Forwarded-Proto` say `https` without a `publicURL`.
    public let servesTLS: Bool
    /// The keys secrets are sealed with at rest (the `secret-key-file`); nil: the secret routes
    /// answer 503 and replicas with secret vars cannot start.
    public var secretKeys: SecretKeyring? = nil
    /// Refuses a source address that presented too many unknown tokens lately
    /// (`auth-failure-limit`); nil: no limit.
    public var authFailureLimiter: AuthFailureLimiter? = nil
    /// The way to node-agents' listeners (container logs); its CA is `agent-ca-file`.
    public var agentLink: AgentLink
    /// Bounds the node registrations in flight (`max-registrations-in-flight`).
    public var registrations = RegistrationGate(limit: RegistrationGate.defaultLimit)

    /// Makes dependencies over `store` (``ResourceStore/connect(endpoints:caFile:certFile:keyFile:credentials:requestTimeout:batchWrites:logger:)``
    /// in the daemon).
    public init(
        store: ResourceStore, catalog: Catalog, adminTokens: [String], machineTypes: MachineTypeTable = .standard,
        maxGPUMemoryGB: Int = ValidationContext.defaultMaxGPUMemoryGB,
        deploymentImage: String = VLLM.image, heartbeatTTL: Int64 = 10,
        bookmarkInterval: Double = 10, inferenceTimeout: Duration = .seconds(600),
        inferenceQueueTimeout: Duration = .seconds(60), logger: Logger = Logger(label: "gpuplane.api"),
        ingressTimeout: Duration = .seconds(3600), publicURL: String? = nil, servesTLS: Bool = false,
        heartbeatSilentAfter: Duration? = nil
    ) {
        self.servesTLS = servesTLS
        self.store = store
        self.catalog = catalog
        self.machineTypes = machineTypes
        self.maxGPUMemoryGB = maxGPUMemoryGB
        self.authenticator = TokenAuthenticator(
            index: TokenIndex(store: store), adminTokens: adminTokens,
            mirror: TokenMirror(index: TokenIndex(store: store), logger: logger))
        self.deploymentImage = deploymentImage
        self.heartbeatTTL = heartbeatTTL
        self.heartbeats = HeartbeatTracker(
            store: store, ttl: heartbeatTTL,
            silentAfter: heartbeatSilentAfter ?? HeartbeatTracker.defaultSilentAfter(ttl: heartbeatTTL), logger: logger)
        self.bookmarkInterval = bookmarkInterval
        self.watchCaches = WatchCaches(store: store, logger: logger)
        self.logger = logger
        self.tenants = Informer<Tenant>(store: store, tenant: ObjectMeta.clusterTenant, logger: logger)
        self.inferenceKeys = InferenceKeys(store: store)
        self.gateway = InferenceGateway(
            store: store, keys: inferenceKeys, timeout: inferenceTimeout, queueTimeout: inferenceQueueTimeout, logger: logger)
        self.ingress = AppIngress(
            store: store, replicas: gateway.replicas, timeout: ingressTimeout, publicURL: publicURL, servesTLS: servesTLS, logger: logger)
        self.publicURL = publicURL
        self.agentLink = AgentLink(keys: inferenceKeys)
    }

    var planner: ReplicaPlanner {
        ReplicaPlanner(catalog: catalog, machineTypes: machineTypes, deploymentImage: deploymentImage)
    }

    /// The validation context for a tenant.
    func validationContext(for tenant: Tenant?) -> ValidationContext {
        ValidationContext(
            catalog: catalog, machineTypes: machineTypes, maxGPUMemoryGB: maxGPUMemoryGB, plan: tenant?.spec.plan,
            gpuLimit: tenant?.spec.gpuLimit ?? Tenant.defaultGPULimit)
    }
}

/// Every route the server registers, as `METHOD /path/{param}`; the OpenAPI test checks each
/// one is documented.
public final class RouteTable: @unchecked Sendable {
    /// The routes, in registration order.
    public private(set) var routes: [(method: String, path: String)] = []
    /// The methods of each router path (`/v1/tenants/:name`), paths in registration order.
    private var methodsByPath: [(path: String, methods: [HTTPRequest.Method])] = []
    /// Each path's `Allow`, for ``MethodNotAllowedMiddleware``; filled by ``answerOtherMethods()``.
    let allows = AllowLookup()
    let router: Router<APIContext>

    init(router: Router<APIContext>) { self.router = router }

    func add(
        _ method: HTTPRequest.Method, _ path: String,
        _ handler: @escaping @Sendable (Request, APIContext) async throws -> Response
    ) {
        let openAPIPath = path.split(separator: "/").map {
            $0 == "**" ? "{path}" : $0.hasPrefix(":") ? "{\($0.dropFirst())}" : String($0)
        }
        routes.append((method.rawValue, "/" + openAPIPath.joined(separator: "/")))
        if let index = methodsByPath.firstIndex(where: { $0.path == path }) {
            methodsByPath[index].methods.append(method)
        } else {
            methodsByPath.append((path, [method]))
        }
        router.on(RouterPath(path), method: method, use: handler)
    }

    /// Makes every path added so far answer the methods it does not take as HTTP says: 405
    /// `method_not_allowed` with `Allow` naming the methods it has, whatever the method (GET,
    /// HEAD, TRACE, QUERY, ...), and `OPTIONS` with 204 and the same `Allow` (the router alone
    /// answers 404 to both, as if the path did not exist). Done by
    /// ``MethodNotAllowedMiddleware`` when the router finds no route; call once, after every
    /// route is added. ``routes`` keeps listing the real routes only.
    func answerOtherMethods() {
        let probe = Router(context: APIContext.self)
        for (path, methods) in methodsByPath {
            let allow = methods.map(\.rawValue).joined(separator: ", ")
            probe.on(RouterPath(path), method: .options) { _, _ -> Response in
                var headers = HTTPFields()
                headers[.allow] = allow
                return Response(status: .noContent, headers: headers)
            }
        }
        allows.responder = probe.buildResponder()
    }

    /// A router of its own over the table's paths, each answering `OPTIONS` with its `Allow`:
    /// it matches a path exactly as the real router does (parameters, wildcards, precedence).
    final class AllowLookup: @unchecked Sendable {
        /// Set once, before the server starts.
        var responder: RouterResponder<APIContext>?

        /// The `Allow` of the route path that `path` matches, or nil when it matches none.
        func allow(path: String, context: APIContext) async -> String? {
            guard let responder else { return nil }
            let head = HTTPRequest(method: .options, scheme: nil, authority: nil, path: path)
            guard let response = try? await responder.respond(to: Request(head: head, body: .init(buffer: ByteBuffer())), context: context),
                response.status == .noContent
            else { return nil }
            return response.headers[.allow]
        }
    }

    /// Turns the router's 404 for a path that exists under other methods into 405 with
    /// `Allow` (204 with `Allow` for `OPTIONS`).
    struct MethodNotAllowedMiddleware: RouterMiddleware {
        typealias Context = APIContext
        let allows: AllowLookup

        func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
            do {
                return try await next(request, context)
            } catch let error as HTTPError where error.status == .notFound {
                // Only the router's own "no route": a path it knows under other methods.
                let allow = await allows.allow(path: request.uri.path, context: context)
                return try Self.answer(request, allow: allow, notFound: error)
            }
        }

        /// 204 with `Allow` to `OPTIONS`, else a 405 naming the methods `allow` lists; the
        /// router's 404 again when `allow` is nil or lists the method. Out of line: the
        /// handler's frame is allocated for every request.
        @inline(never)
        static func answer(_ request: Request, allow: String?, notFound: HTTPError) throws -> Response {
            guard let allow,
                !allow.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == request.method.rawValue })
            else { throw notFound }
            if request.method == .options {
                var headers = HTTPFields()
                headers[.allow] = allow
                return Response(status: .noContent, headers: headers)
            }
            var refusal = APIError(
                .methodNotAllowed, .methodNotAllowed, "\(request.uri.path) does not take \(request.method.rawValue); it takes \(allow)")
            refusal.allow = allow
            throw refusal
        }
    }
}

/// Builds the router with every route; tests build it against a test etcd.
public func buildRouter(_ deps: APIDependencies) -> (Router<APIContext>, RouteTable) {
    let router = Router(context: APIContext.self)
    router.add(middleware: ErrorMiddleware(logger: deps.logger))
    router.add(middleware: AuthMiddleware(authenticator: deps.authenticator, audit: deps.logger, limiter: deps.authFailureLimiter))
    let table = RouteTable(router: router)
    router.add(middleware: RouteTable.MethodNotAllowedMiddleware(allows: table.allows))
    router.add(middleware: QueryCheckMiddleware())
    HealthRoutes(deps: deps).register(table)
    ApplicationRoutes(deps: deps).register(table)
    DeploymentRoutes(deps: deps).register(table)
    NodeRoutes(deps: deps).register(table)
    ReplicaRoutes(deps: deps).register(table)
    AgentRoutes(deps: deps).register(table)
    LoadRoutes(deps: deps).register(table)
    ModelServerRoutes(deps: deps).register(table)
    TenantRoutes(deps: deps).register(table)
    InfoRoutes(deps: deps).register(table)
    GatewayRoutes(deps: deps).register(table)
    AppRoutes(deps: deps).register(table)
    SecretRoutes(deps: deps).register(table)
    DashboardRoutes().register(table)
    table.answerOtherMethods()
    return (router, table)
}

/// The accept queue the api-server's listener asks for: as long as the kernel allows (Linux
/// cuts a listen backlog to `net.core.somaxconn`, 4096 by default since 5.4; Go's servers, etcd
/// and kube-apiserver among them, ask for the same). When an api-server dies, its nodes, each
/// with a beat, a watch and a report to send, connect to the survivors within a second:
/// behind Hummingbird's default queue of 256, the kernel dropped the connections past it (at
/// 5,000 hollow nodes, 17,000 drops in four seconds) and their clients tried again 1, 3 and 7
/// seconds later, beats among them, long enough for live nodes to be marked silent
/// (docs/benchmarks.md, "The accept queue").
public let apiServerListenBacklog = Int(UInt16.max)

/// How long an api-server's graceful shutdown (SIGTERM) may take: it stops listening, ends
/// every watch stream with an ERROR line that sends the client to another api-server, and
/// lets the requests in flight finish; whatever still runs after this (a followed log, a
/// long completion stream) is cancelled. Below the 30 s that the systemd unit and the chart
/// give before SIGKILL.
public let apiServerShutdownGrace = Duration.seconds(20)

/// Builds the server application. Every connection runs under `limits` (header, body and
/// keep-alive timeouts, connections per source address); with `tls`, it serves HTTPS only.
/// `onBound` is called with the port once the server listens (the kernel's choice when `port`
/// is 0). Throws when the TLS configuration cannot make a context.
public func buildApplication(
    _ deps: APIDependencies, host: String = "127.0.0.1", port: Int = 8080,
    limits: ConnectionLimits = ConnectionLimits(), tls: ServerTLS? = nil, onBound: (@Sendable (Int) -> Void)? = nil
) throws -> some Service {
    let (router, _) = buildRouter(deps)
    deps.tenants.start()
    deps.authenticator.mirror?.start()
    deps.heartbeats.start()
    // The node-agents' watches list first, then watch from the list's revision.
    deps.watchCaches.startEagerly(Replica.self)
    deps.watchCaches.startEagerly(ModelServer.self)
    deps.gateway.start()
    deps.ingress.start()
    WatchMetrics.register()
    // A certificate and key that make no TLS context fail here, before the server runs.
    if let tls { _ = try NIOSSLContext(configuration: tls.configuration) }
    let counter = SourceConnectionCounter(limit: limits.maxConnectionsPerSource)
    let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [
        ConnectionGuardHandler(limits: limits, counter: counter), BeatArrivalHandler(), IngressUpgradeHandler(ingress: deps.ingress),
    ])
    return HTTPService(
        responder: router.buildResponder(),
        server: HTTPServerBuilder { responder in
            let http = HTTP1Channel(responder: responder, configuration: http1)
            guard let tls else { return ShardedConnections(http) }
            return ShardedConnections(try TLSChannel(http, tlsConfiguration: tls.configuration))
        },
        configuration: .init(address: .hostname(host, port: port), serverName: "gpuplane-api-server", backlog: apiServerListenBacklog),
        onServerRunning: { channel in
            if let port = channel.localAddress?.port { onBound?(port) }
        },
        logger: deps.logger)
}

/// An api-server listening on a port the kernel chose, run by a task of its own.
public struct RunningAPIServer: Sendable {
    /// The port it listens on.
    public let port: Int
    /// The task that runs it. Cancelling it shuts the server down gracefully, as ``stop()``
    /// does: the server stops listening, ends its watch streams and finishes the requests in
    /// flight (at most ``apiServerShutdownGrace``) before the task ends.
    public let task: Task<Void, any Error>
    /// `http://host:port`.
    public let base: String

    /// Shuts the server down gracefully and waits until it has stopped.
    public func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// Why ``startAPIServer(_:host:port:limits:)`` has no server to return: it stopped before listening.
public struct APIServerStartError: Error, CustomStringConvertible {
    /// What stopped it.
    public let description: String
}

/// Builds the application on port 0 (or `port`) and runs it (without signal handlers) until
/// its task is cancelled, which shuts it down gracefully; returns once it listens, with the
/// port the kernel chose, or throws why it could not. For embedding the api-server in tests
/// and benchmarks: a port chosen free beforehand can be taken by another socket before the
/// server binds it, so name one only to start a server again where a stopped one listened.
/// A graceful stop cancels whatever still runs after `shutdownGrace`.
public func startAPIServer(
    _ deps: APIDependencies, host: String = "127.0.0.1", port: Int = 0, limits: ConnectionLimits = ConnectionLimits(),
    shutdownGrace: Duration = apiServerShutdownGrace
) async throws -> RunningAPIServer {
    let (bound, announce) = AsyncStream<Int>.makeStream()
    let app = try buildApplication(deps, host: host, port: port, limits: limits) { port in
        announce.yield(port)
        announce.finish()
    }
    var configuration = ServiceGroupConfiguration(services: [app], logger: deps.logger)
    configuration.maximumGracefulShutdownDuration = shutdownGrace
    let group = ServiceGroup(configuration: configuration)
    // The group runs in a task that is never cancelled: cancelled, the server's loop over its
    // accepted connections stops with a connection still queued, and NIO traps on the
    // connection's writer (apple/swift-nio#2637). The outer task turns its cancellation into
    // a graceful shutdown, which closes the listener first and drains the queue.
    let serving = Task {
        defer { announce.finish() }
        try await group.run()
    }
    let task = Task {
        try await withTaskCancellationHandler {
            try await serving.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }
    for await port in bound { return RunningAPIServer(port: port, task: task, base: "http://\(host):\(port)") }
    switch await task.result {
    case .failure(let error): throw APIServerStartError(description: "the api-server did not start: \(error)")
    case .success: throw APIServerStartError(description: "the api-server stopped before it listened")
    }
}
