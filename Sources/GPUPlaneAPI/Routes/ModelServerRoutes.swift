import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/modelservers`: the pinned model servers (Mode 2 and Mode 3) the scheduler places. A
/// node token sees the servers bound to its node and reports their status; admins see all.
/// Users reach models through the gateway and never address a server.
struct ModelServerRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/v1/modelservers") { try await list($0, $1) }
        routes.add(.get, "/v1/modelservers/:name") { try await get($0, $1) }
        routes.add(.put, "/v1/modelservers/:name/status") { try await status($0, $1) }
    }

    /// The node a caller is confined to (nil: all, for admins); users are refused.
    private func scope(_ context: APIContext) throws -> String? {
        let caller = try context.caller()
        switch caller.role {
        case .admin: return nil
        case .node: return caller.node ?? ""
        case .user: throw APIError(.forbidden, .forbidden, "model servers are visible to admins and node-agents; use /v1/models")
        }
    }

    /// Maps to `GET /v1/modelservers` (and `?watch=true&resourceVersion=N`; admins may add `?node=`).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let node = try scope(context) ?? request.query("node")
        let filter: @Sendable (ModelServer) -> Bool = { server in node == nil || server.binding?.node == node }
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(ModelServer.self, tenant: nil, request: request, route: node, filter: filter)
        }
        let list = try await deps.store.list(ModelServer.self, tenant: nil)
        return try HTTPJSON.response(ListBody(items: list.items.filter(filter), resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/modelservers/{name}`; a node token gets 404 for servers bound elsewhere.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let node = try scope(context)
        let name = try context.parameter("name")
        let server = try await deps.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
        if let node, server.binding?.node != node {
            throw APIError(.notFound, .notFound, "model server \(name) is not bound to \(node)")
        }
        return try HTTPJSON.response(server)
    }

    /// Maps to `PUT /v1/modelservers/{name}/status`: the node-agent's report (container phase,
    /// readiness once `/v1/models` answers, endpoint). The attachments stay the scheduler's.
    func status(_ request: Request, _ context: APIContext) async throws -> Response {
        let node = try scope(context)
        let name = try context.parameter("name")
        let deadline = try RequestDeadline.of(request)
        try RequestDeadline.check(deadline)
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: ["ready", "endpoint", "container"])
        let report = try HTTPJSON.decode(ModelServer.Report.self, from: data)
        if let endpoint = report.endpoint {
            guard let url = URL(string: endpoint), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw APIError(.unprocessableContent, .invalid, "'\(endpoint)' is not an http(s) URL", field: "endpoint")
            }
        }
        let stored = try await deps.store.modifyIfChanged(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name, before: deadline) { server in
            if let node, server.binding?.node != node {
                throw APIError(.notFound, .notFound, "model server \(name) is not bound to \(node)")
            }
            server.status.ready = report.ready
            server.status.endpoint = report.endpoint
            server.status.container = report.container
        }
        return try HTTPJSON.response(stored)
    }
}
