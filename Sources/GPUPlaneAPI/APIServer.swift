import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneService
import GPUPlaneStore
import Hummingbird
import Logging
import ServiceLifecycle

/// Everything the routes need; built once per process (or per test against a test etcd).
public struct APIDependencies: Sendable {
    /// The etcd client.
    public var etcd: Etcd.Client
    /// Typed objects in etcd.
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
    /// Seconds a node stays Ready without a heartbeat.
    public var heartbeatTTL: Int64
    /// Seconds between BOOKMARK events on idle watches.
    public var bookmarkInterval: Double
    /// The logger for requests and audit lines.
    public var logger: Logger
    /// A watch-backed cache of tenants, so admission needs no etcd read for the plan.
    public let tenants: Informer<Tenant>
    /// Per tenant, whether its applies mostly name applications that exist (see
    /// ``ApplyHistory``).
    let applyHistory = ApplyHistory()
    /// The keys of inference URLs.
    public let inferenceKeys: InferenceKeys
    /// The inference gateway.
    public let gateway: InferenceGateway

    /// Makes dependencies over `etcd`.
    public init(
        etcd: Etcd.Client, catalog: Catalog, adminTokens: [String], machineTypes: MachineTypeTable = .standard,
        maxGPUMemoryGB: Int = ValidationContext.defaultMaxGPUMemoryGB,
        deploymentImage: String = "gpuplane/model-server:latest", heartbeatTTL: Int64 = 10,
        bookmarkInterval: Double = 10, inferenceTimeout: Duration = .seconds(600),
        inferenceQueueTimeout: Duration = .seconds(60), logger: Logger = Logger(label: "gpuplane.api")
    ) {
        self.etcd = etcd
        self.store = ResourceStore(client: etcd)
        self.catalog = catalog
        self.machineTypes = machineTypes
        self.maxGPUMemoryGB = maxGPUMemoryGB
        self.authenticator = TokenAuthenticator(etcd: etcd, adminTokens: adminTokens)
        self.deploymentImage = deploymentImage
        self.heartbeatTTL = heartbeatTTL
        self.bookmarkInterval = bookmarkInterval
        self.logger = logger
        self.tenants = Informer<Tenant>(store: store, tenant: ObjectMeta.clusterTenant, logger: logger)
        self.inferenceKeys = InferenceKeys(etcd: etcd)
        self.gateway = InferenceGateway(
            store: store, keys: inferenceKeys, timeout: inferenceTimeout, queueTimeout: inferenceQueueTimeout, logger: logger)
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
        router.on(RouterPath(path), method: method, use: handler)
    }
}

/// Builds the router with every route; tests build it against a test etcd.
public func buildRouter(_ deps: APIDependencies) -> (Router<APIContext>, RouteTable) {
    let router = Router(context: APIContext.self)
    router.add(middleware: ErrorMiddleware(logger: deps.logger))
    router.add(middleware: AuthMiddleware(authenticator: deps.authenticator, audit: deps.logger))
    let table = RouteTable(router: router)
    HealthRoutes(deps: deps).register(table)
    ApplicationRoutes(deps: deps).register(table)
    DeploymentRoutes(deps: deps).register(table)
    NodeRoutes(deps: deps).register(table)
    ReplicaRoutes(deps: deps).register(table)
    ModelServerRoutes(deps: deps).register(table)
    TenantRoutes(deps: deps).register(table)
    InfoRoutes(deps: deps).register(table)
    GatewayRoutes(deps: deps).register(table)
    DashboardRoutes().register(table)
    return (router, table)
}

/// Builds the server application.
public func buildApplication(
    _ deps: APIDependencies, host: String = "127.0.0.1", port: Int = 8080, services: [any Service] = []
) -> some ApplicationProtocol {
    let (router, _) = buildRouter(deps)
    deps.tenants.start()
    deps.gateway.start()
    return Hummingbird.Application(
        router: router,
        configuration: .init(address: .hostname(host, port: port), serverName: "gpuplane-api-server"),
        services: services, logger: deps.logger)
}
