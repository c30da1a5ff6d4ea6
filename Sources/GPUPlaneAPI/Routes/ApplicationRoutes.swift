import Foundation
import GPUPlaneCore
import GPUPlaneManifest
import GPUPlaneStore
import Hummingbird

/// `/v1/applications`: apply (create or update by name, idempotent), list, get, delete, watch;
/// `/v1/validate`: the same checks as a dry run.
struct ApplicationRoutes: Sendable {
    let deps: APIDependencies
    var admission: Admission { Admission(deps: deps) }

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/applications") { try await apply($0, $1) }
        routes.add(.get, "/v1/applications") { try await list($0, $1) }
        routes.add(.get, "/v1/applications/:name") { try await get($0, $1) }
        routes.add(.delete, "/v1/applications/:name") { try await delete($0, $1) }
        routes.add(.post, "/v1/validate") { try await validate($0, $1) }
    }

    /// Maps to `POST /v1/applications`: validates, then admits and writes the Application and
    /// its Replicas in one transaction (``ApplicationAdmission``). 201 when created, 200 when
    /// updated or unchanged.
    func apply(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.planTenant(request)
        let expectedVersion = try request.expectedVersion()
        let tenant = try await admission.tenant(tenantName)
        let data = try await HTTPJSON.body(request)
        let manifest = ManifestReader(context: deps.validationContext(for: tenant)).read(data, file: nil)
        guard manifest.isValid else { throw APIError.rejected(manifest.diagnostics) }
        let apps = manifest.objects.compactMap { object -> (String, ApplicationSpec)? in
            if case .application(let name, let spec) = object { return (name, spec) }
            return nil
        }
        guard apps.count == 1, manifest.objects.count == 1, let (name, spec) = apps.first else {
            throw APIError(
                .unprocessableContent, .invalid,
                manifest.objects.count > 1
                    ? "send one application per request (this body has \(manifest.objects.count) documents)"
                    : "this body is a deployment; send it to POST /v1/deployments")
        }
        switch try await ApplicationAdmission(deps: deps).apply(name: name, spec: spec, tenant: tenant, expectedVersion: expectedVersion) {
        case .written(let app, let replicas, let created):
            return try HTTPJSON.response(withStatus(app, replicas, request), status: created ? .created : .ok)
        case .unchanged(let app):
            return try HTTPJSON.response(app)
        }
    }

    /// Maps to `GET /v1/applications` (and `?watch=true&resourceVersion=N`).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(GPUPlaneCore.Application.self, tenant: tenant, request: request)
        }
        let list = try await deps.store.list(GPUPlaneCore.Application.self, tenant: tenant)
        let replicas = try await admission.replicas(of: tenant)
        return try HTTPJSON.response(ListBody(items: list.items.map { withStatus($0, replicas, request) }, resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/applications/{name}`.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let name = try context.parameter("name")
        let app = try await deps.store.get(GPUPlaneCore.Application.self, tenant: tenant, name: name)
        return try HTTPJSON.response(withStatus(app, try await admission.replicas(of: tenant, namePrefix: ReplicaPlanner.replicaPrefix(application: name)), request))
    }

    /// Maps to `DELETE /v1/applications/{name}` (`If-Match` or `?resourceVersion=` makes it
    /// conditional): the application and its replicas go in one transaction
    /// (``ApplicationAdmission/delete(name:tenant:expectedVersion:)``).
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.tenant(request)
        let expectedVersion = try request.expectedVersion()
        let name = try context.parameter("name")
        try await ApplicationAdmission(deps: deps).delete(name: name, tenant: tenant, expectedVersion: expectedVersion)
        return HTTPJSON.noContent()
    }

    /// Maps to `POST /v1/validate`: what `gpuplane validate` prints, for the caller's plan.
    func validate(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenantName = try context.tenant(request)
        let tenant = try? await admission.tenant(tenantName)
        let data = try await HTTPJSON.body(request)
        guard data.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) }) else {
            throw APIError(.badRequest, .badRequest, "the body is empty; send the manifest (YAML or JSON) to check")
        }
        let file = request.query("file") ?? "manifest"
        let manifest = ManifestReader(context: deps.validationContext(for: tenant)).read(data, file: file)
        return try HTTPJSON.response(ValidationBody(valid: manifest.isValid, diagnostics: manifest.diagnostics, lines: manifest.diagnostics.map(\.description)))
    }

    /// The base of application URLs for an answer to `request`: ``APIDependencies/publicURL``,
    /// else this server's scheme and the host the caller reached it at.
    private func publicBase(_ request: Request) -> String {
        deps.publicURL ?? "\(deps.servesTLS ? "https" : "http")://\(request.head.authority ?? "127.0.0.1")"
    }

    private func withStatus(_ app: GPUPlaneCore.Application, _ replicas: [Replica], _ request: Request) -> GPUPlaneCore.Application {
        var app = app
        let mine = replicas.filter { $0.spec.owner.kind == .application && $0.spec.owner.name == app.metadata.name }
        let running = mine.filter { $0.status.phase == .running }.count
        let waiting = mine.first { $0.status.phase == .pending && $0.status.message != nil }?.status.message
        app.status = ApplicationStatus(
            podsRunning: running, podsWanted: app.spec.pods.count,
            message: running < app.spec.pods.count ? waiting.map { "\(running)/\(app.spec.pods.count) running: \($0)" } : nil)
        let url = AppIngress.url(base: publicBase(request), tenant: app.metadata.tenant, application: app.metadata.name)
        app.status.url = url
        app.status.routes = AppIngress.routes(of: app, appURL: url, replicas: mine)
        return app
    }
}

/// A list answer: items and the revision to watch from.
struct ListBody<T: Encodable>: Encodable {
    var items: [T]
    var resourceVersion: String
}

/// A dry run's answer.
struct ValidationBody: Encodable {
    var valid: Bool
    var diagnostics: [Diagnostic]
    var lines: [String]
}
