import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/tenants` and `/v1/tokens` (admins): tenants with plans and limits, and tokens shown once.
struct TenantRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/tenants") { try await create($0, $1) }
        routes.add(.get, "/v1/tenants") { try await list($0, $1) }
        routes.add(.get, "/v1/tenants/:name") { try await get($0, $1) }
        routes.add(.patch, "/v1/tenants/:name") { try await update($0, $1) }
        routes.add(.post, "/v1/tokens") { try await issue($0, $1) }
        routes.add(.delete, "/v1/tokens/:id") { try await revoke($0, $1) }
    }

    /// A tenant as the API shows it.
    struct TenantView: Codable {
        var name: String
        var plan: Plan
        var gpuLimit: Int
        var spendingLimitUSD: Double?
        var resourceVersion: String?

        enum CodingKeys: String, CodingKey {
            case name, plan, gpuLimit = "gpu_limit", spendingLimitUSD = "spending_limit_usd", resourceVersion
        }

        init(_ t: Tenant) {
            name = t.metadata.name
            plan = t.spec.plan
            gpuLimit = t.spec.gpuLimit
            spendingLimitUSD = t.spec.spendingLimitMicroDollars.map { Double($0) / 1e6 }
            resourceVersion = t.metadata.resourceVersion
        }
    }

    static let fields = ["name", "plan", "gpu_limit", "spending_limit_usd"]

    /// Maps to `POST /v1/tenants` with `{"name", "plan", "gpu_limit"?, "spending_limit_usd"?}`.
    func create(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: TenantRoutes.fields)
        struct CreateBody: Decodable {
            var name: String
            var plan: Plan
            var gpuLimit: Int?
            var spendingLimitUSD: Double?
            enum CodingKeys: String, CodingKey {
                case name, plan, gpuLimit = "gpu_limit", spendingLimitUSD = "spending_limit_usd"
            }
        }
        let body = try HTTPJSON.decode(CreateBody.self, from: data)
        guard Syntax.isDNSLabel(body.name), body.name != ObjectMeta.clusterTenant else {
            throw APIError(.unprocessableContent, .invalid, "tenant name '\(body.name)' must be a DNS label", field: "name")
        }
        var view = TenantView(Tenant(metadata: ObjectMeta(name: body.name), spec: .init(plan: body.plan)))
        view.gpuLimit = body.gpuLimit ?? Tenant.defaultGPULimit
        view.spendingLimitUSD = body.spendingLimitUSD
        let tenant = Tenant(metadata: ObjectMeta(name: body.name), spec: try spec(view))
        return try HTTPJSON.response(TenantView(try await deps.store.create(tenant)), status: .created)
    }

    private func spec(_ body: TenantView) throws -> Tenant.Spec {
        guard (0...10_000).contains(body.gpuLimit) else {
            throw APIError(.unprocessableContent, .invalid, "gpu_limit must be 0–10000", field: "gpu_limit")
        }
        if let usd = body.spendingLimitUSD, !(usd >= 0 && usd < 1e9) {
            throw APIError(.unprocessableContent, .invalid, "spending_limit_usd must be 0 or more", field: "spending_limit_usd")
        }
        return Tenant.Spec(
            plan: body.plan, gpuLimit: body.gpuLimit,
            spendingLimitMicroDollars: body.spendingLimitUSD.map { Int64(($0 * 1e6).rounded()) })
    }

    /// Maps to `GET /v1/tenants`.
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let list = try await deps.store.list(Tenant.self, tenant: ObjectMeta.clusterTenant)
        return try HTTPJSON.response(ListBody(items: list.items.map(TenantView.init), resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/tenants/{name}` (admins, or the tenant itself).
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        let caller = try context.caller()
        guard caller.role == .admin || (caller.role == .user && caller.tenant == name) else {
            throw APIError(.notFound, .notFound, "tenant \(name) not found")
        }
        return try HTTPJSON.response(TenantView(try await deps.store.get(Tenant.self, tenant: ObjectMeta.clusterTenant, name: name)))
    }

    /// Maps to `PATCH /v1/tenants/{name}`: plan, GPU limit, spending limit; CAS on `resourceVersion` when given
    /// (in the body, or as `If-Match`/`?resourceVersion=`). The name is the path's: a tenant is
    /// never renamed, so `name` is not a field of the body (an unknown field, 400).
    func update(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let name = try context.parameter("name")
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: ["plan", "gpu_limit", "spending_limit_usd", "resourceVersion"])
        struct Patch: Decodable {
            var plan: Plan?
            var gpuLimit: Int?
            var spendingLimitUSD: Double?
            var resourceVersion: String?
            enum CodingKeys: String, CodingKey {
                case plan, gpuLimit = "gpu_limit", spendingLimitUSD = "spending_limit_usd", resourceVersion
            }
        }
        let patch = try HTTPJSON.decode(Patch.self, from: data)
        var expected = try patch.resourceVersion.map { try ResourceVersionParameter.parse($0) }
        if let asked = try request.expectedVersion() {
            if let expected, expected != asked {
                throw APIError(
                    .badRequest, .badRequest, "the body's resourceVersion (\(expected)) and the request's (\(asked)) disagree; send one",
                    field: "resourceVersion")
            }
            expected = asked
        }
        var tenant = try await deps.store.get(Tenant.self, tenant: ObjectMeta.clusterTenant, name: name)
        if let expected { tenant.metadata.resourceVersion = expected }
        var view = TenantView(tenant)
        if let plan = patch.plan { view.plan = plan }
        if let limit = patch.gpuLimit { view.gpuLimit = limit }
        if let usd = patch.spendingLimitUSD { view.spendingLimitUSD = usd }
        tenant.spec = try spec(view)
        return try HTTPJSON.response(TenantView(try await deps.store.update(tenant)))
    }

    struct IssueBody: Codable {
        var tenant: String?
        var role: Role
        var node: String?
    }

    /// Maps to `POST /v1/tokens` with `{"tenant", "role": "user"|"node"|"admin", "node"?}`:
    /// answers the secret once; only its hash is kept.
    func issue(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: ["tenant", "role", "node"])
        let body = try HTTPJSON.decode(IssueBody.self, from: data)
        var tenant = ObjectMeta.clusterTenant
        switch body.role {
        case .user:
            guard let name = body.tenant else { throw APIError(.unprocessableContent, .invalid, "a user token needs a tenant", field: "tenant") }
            _ = try await deps.store.get(Tenant.self, tenant: ObjectMeta.clusterTenant, name: name)
            tenant = name
        case .node:
            guard let node = body.node, Syntax.isDNSLabel(node) else {
                throw APIError(.unprocessableContent, .invalid, "a node token needs the node's name (a DNS label)", field: "node")
            }
        case .admin:
            break
        }
        let secret = Tokens.generate()
        let hash = Tokens.hash(secret)
        let record = TokenRecord(id: Tokens.publicID(hash: hash), sha256: hash, tenant: tenant, role: body.role, node: body.role == .node ? body.node : nil, created: Date())
        do {
            try await TokenIndex(store: deps.store).add(record)
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot store the token; retry")
        }
        struct Issued: Encodable {
            var token: String
            var id: String
            var tenant: String
            var role: Role
            var node: String?
        }
        return try HTTPJSON.response(Issued(token: secret, id: record.id, tenant: tenant, role: record.role, node: record.node), status: .created)
    }

    /// Maps to `DELETE /v1/tokens/{id}`.
    func revoke(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let id = try context.parameter("id")
        guard id.hasPrefix("tok-"), id.count == 16 else { throw APIError(.notFound, .notFound, "token \(id) not found") }
        let hashPrefix = String(id.dropFirst(4))
        let removed: TokenIndex.Removal?
        do {
            removed = try await TokenIndex(store: deps.store).remove(hashPrefix: hashPrefix)
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot revoke the token; retry")
        }
        guard let removed else { throw APIError(.notFound, .notFound, "token \(id) not found") }
        deps.authenticator.revoked(removed)
        return HTTPJSON.noContent()
    }
}
