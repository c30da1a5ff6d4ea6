import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneStore
import Hummingbird

/// A deployment as the API shows it: the request's fields plus `deploy_id`, `full_name` and status.
struct DeploymentView: Encodable {
    var deployID: String
    var modelName: String
    var fullName: String
    var gpu: String
    var numGPUs: Int
    var maxBatchSize: Int
    var hf: HuggingFaceWeights
    var weightsGB: Double?
    var settings: DeploymentSettings
    var status: DeploymentStatus
    var resourceVersion: String
    var created: Date?
    /// Its load as the api-servers last reported it (absent when none has: no call lately).
    var load: LoadView?

    /// What the api-servers' latest load reports (``DeploymentLoad``, every 2 s) say together:
    /// `requests`, the most requests in flight or waiting at once during the report interval,
    /// summed over api-servers; of them `inFlight` fit the ready instances (`instances ×
    /// max_batch_size`) and `queued` waited for a slot; `cold`: a call found no ready instance.
    struct LoadView: Encodable {
        var requests: Int
        var inFlight: Int
        var queued: Int
        var cold: Bool
        var reporters: Int

        enum CodingKeys: String, CodingKey {
            case requests, inFlight = "in_flight", queued, cold, reporters
        }
    }

    enum CodingKeys: String, CodingKey {
        case deployID = "deploy_id", modelName = "model_name", fullName = "full_name", gpu
        case numGPUs = "num_gpus", maxBatchSize = "max_batch_size", hf, weightsGB = "weights_gb", settings, status
        case resourceVersion, created, load
    }

    init(_ d: Deployment, replicas: [Replica], loads: [LoadReports.Report] = []) {
        deployID = d.deployID
        modelName = d.spec.modelName
        fullName = d.fullName
        gpu = d.spec.gpu
        numGPUs = d.spec.numGPUs
        maxBatchSize = d.spec.maxBatchSize
        hf = d.spec.hf
        weightsGB = d.spec.weightsGB
        settings = d.spec.settings
        resourceVersion = d.metadata.resourceVersion
        created = d.metadata.created
        status = DeploymentView.status(of: d, replicas: replicas)
        let mine = loads.filter { $0.tenant == d.metadata.tenant && $0.deployment == d.metadata.name }
        if !mine.isEmpty {
            let total = DeploymentLoad.Total(mine.map(\.load))
            let requests = total.peak
            let ready = replicas.filter {
                $0.spec.owner.kind == .deployment && $0.spec.owner.name == d.metadata.name && $0.status.phase == .running && $0.status.ready != false
            }.count
            let slots = ready.saturatingMultiplied(by: max(d.spec.maxBatchSize, 1))
            load = LoadView(
                requests: requests, inFlight: min(requests, slots), queued: max(requests - slots, 0),
                cold: total.cold, reporters: total.reporters)
        }
    }

    /// Every api-server's latest load reports of `tenant`'s deployments; none when etcd cannot
    /// say (the load is shown, not decided on, so its absence never fails a read).
    static func loads(_ deps: APIDependencies, tenant: String) async -> [LoadReports.Report] {
        ((try? await LoadReports(store: deps.store).all()) ?? []).filter { $0.tenant == tenant }
    }

    /// Running versus wanted, and why the rest wait. Only running instances are billed.
    static func status(of d: Deployment, replicas: [Replica]) -> DeploymentStatus {
        let mine = replicas.filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == d.metadata.name }
        let running = mine.filter { $0.status.phase == .running }.count
        let wanted = mine.count
        let state: DeploymentStatus.State
        var message: String?
        if wanted == 0 {
            state = .stopped
        } else if running == wanted {
            state = .running
        } else {
            state = running > 0 ? .partial : .deploying
            let reason = mine.first { $0.status.phase == .pending && $0.status.message != nil }?.status.message
            message = "\(running)/\(wanted) running, waiting for capacity" + (reason.map { ": \($0)" } ?? "")
            // An instance fetching its weights or failing to says so (the first, by name).
            if reason == nil, let busy = mine.sorted(by: { $0.metadata.name < $1.metadata.name }).first(where: {
                $0.status.loading?.stage == .fetching || $0.status.loading?.stage == .failed
            }), let words = busy.status.loading?.message {
                message = "\(running)/\(wanted) running; \(busy.metadata.name): \(words)"
            }
        }
        var status = DeploymentStatus(state: state, instancesRunning: running, instancesWanted: wanted, message: message)
        if !mine.isEmpty {
            status.instances = mine.sorted { $0.metadata.name < $1.metadata.name }.map {
                DeploymentInstanceStatus(name: $0.metadata.name, phase: $0.status.phase, node: $0.binding?.node, loading: $0.status.loading)
            }
        }
        return status
    }
}

/// `/v1/deployments`: custom LLM deployments with the bodies of the reference document.
struct DeploymentRoutes: Sendable {
    let deps: APIDependencies
    var admission: Admission { Admission(deps: deps) }

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/deployments") { try await create($0, $1) }
        routes.add(.get, "/v1/deployments") { try await list($0, $1) }
        routes.add(.get, "/v1/deployments/:id") { try await get($0, $1) }
        routes.add(.put, "/v1/deployments/:id") { try await update($0, $1) }
        routes.add(.delete, "/v1/deployments/:id") { try await delete($0, $1) }
    }

    /// Maps to `POST /v1/deployments`: returns 201 with `deploy_id`; the full name is `owner/model_name`.
    /// An admin names the tenant with `?tenant=`.
    func create(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.planTenant(request)
        let tenant = try await admission.tenant(tenantName)
        let data = try await HTTPJSON.body(request)
        let (parsed, diagnostics) = ManifestReader(context: deps.validationContext(for: tenant)).readDeploymentBody(data)
        guard var spec = parsed, !diagnostics.hasErrors else { throw APIError.rejected(diagnostics) }
        spec.servingImage = deps.deploymentImage
        if deps.deploymentWeightsByAgent { spec.fetchWeights = true }
        let (stored, replicas) = try await DeploymentAdmission(deps: deps).create(spec, tenant: tenant)
        return try HTTPJSON.response(DeploymentView(stored, replicas: replicas), status: .created)
    }

    /// Maps to `GET /v1/deployments` (and `?watch=true&resourceVersion=N`).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(Deployment.self, tenant: tenant, request: request)
        }
        let list = try await deps.store.list(Deployment.self, tenant: tenant)
        let replicas = try await admission.replicas(of: tenant)
        let loads = await DeploymentView.loads(deps, tenant: tenant)
        return try HTTPJSON.response(ListBody(items: list.items.map { DeploymentView($0, replicas: replicas, loads: loads) }, resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/deployments/{deploy_id or model_name}`.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let deployment = try await find(tenant: tenant, idOrName: try context.parameter("id"))
        return try HTTPJSON.response(DeploymentView(
            deployment, replicas: try await admission.replicas(of: tenant, namePrefix: ReplicaPlanner.replicaPrefix(deployment: deployment.metadata.name)),
            loads: await DeploymentView.loads(deps, tenant: tenant)))
    }

    struct UpdateBody: Decodable {
        var settings: DeploymentSettings
    }

    /// Maps to `PUT /v1/deployments/{deploy_id}` with `{"settings": {"min_instances", "max_instances"}}`:
    /// scales at run time, adding or removing instances in the same transaction
    /// (``DeploymentAdmission/scale(_:to:tenant:expectedVersion:)``).
    func update(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.planTenant(request)
        let expectedVersion = try request.expectedVersion()
        let tenant = try await admission.tenant(tenantName)
        let deployment = try await find(tenant: tenantName, idOrName: try context.parameter("id"))
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: ["settings"])
        if let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let settings = object["settings"] as? [String: Any] {
            for key in settings.keys where !["min_instances", "max_instances"].contains(key) {
                throw APIError(.badRequest, .badRequest, "unknown field 'settings.\(key)'\(Suggest.hint(for: key, among: ["min_instances", "max_instances"]))", field: "settings.\(key)")
            }
        }
        let body = try HTTPJSON.decode(UpdateBody.self, from: data)
        let stored = try await DeploymentAdmission(deps: deps).scale(
            deployment, to: body.settings, tenant: tenant, expectedVersion: expectedVersion)
        return try HTTPJSON.response(DeploymentView(stored, replicas: try await admission.replicas(of: tenantName)))
    }

    /// Maps to `DELETE /v1/deployments/{deploy_id}`: the deployment and its instances, in one transaction
    /// (`If-Match` or `?resourceVersion=` makes it conditional).
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let expectedVersion = try request.expectedVersion()
        let deployment = try await find(tenant: tenant, idOrName: try context.parameter("id"))
        try await DeploymentAdmission(deps: deps).delete(deployment, expectedVersion: expectedVersion)
        return HTTPJSON.noContent()
    }

    /// A tenant's deployment by deploy id or model name.
    func find(tenant: String, idOrName: String) async throws -> Deployment {
        if let byName = try? await deps.store.get(Deployment.self, tenant: tenant, name: idOrName) { return byName }
        if let byID = try await deps.store.list(Deployment.self, tenant: tenant).items.first(where: { $0.deployID == idOrName }) {
            return byID
        }
        throw APIError(.notFound, .notFound, "deployment \(idOrName) not found")
    }
}
