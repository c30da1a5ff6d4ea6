import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/replicas`: what is placed where. Users see their own; a node token sees what is bound
/// to its node (across tenants) and reports its status; admins see all.
struct ReplicaRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/v1/replicas") { try await list($0, $1) }
        routes.add(.put, "/v1/replicas/:tenant/:name/status") { try await status($0, $1) }
    }

    /// Maps to `GET /v1/replicas` (and `?watch=true&resourceVersion=N`; admins may add `?node=`).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant: String?
        let node: String?
        switch caller.role {
        case .user: (tenant, node) = (caller.tenant, nil)
        case .node: (tenant, node) = (nil, caller.node ?? "")
        case .admin: (tenant, node) = (request.query("tenant"), request.query("node"))
        }
        let filter: @Sendable (Replica) -> Bool = { replica in node == nil || replica.binding?.node == node }
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(Replica.self, tenant: tenant, request: request, filter: filter)
        }
        do {
            let list = try await deps.store.list(Replica.self, tenant: tenant)
            return try HTTPJSON.response(ListBody(items: list.items.filter(filter), resourceVersion: String(list.revision)))
        } catch let error as StoreError {
            throw APIError.from(error, what: "replicas")
        }
    }

    /// Maps to `PUT /v1/replicas/{tenant}/{name}/status`: the node-agent's report (Running,
    /// Exited with code, OOMKilled, image missing; for a serving replica, whether it is ready
    /// and where). Only for replicas bound to the caller's node.
    func status(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant = try context.parameter("tenant")
        let name = try context.parameter("name")
        guard caller.role == .node || caller.role == .admin else {
            throw APIError(.forbidden, .forbidden, "replica status is reported by node-agents")
        }
        let data = try await HTTPJSON.body(request)
        let report = try HTTPJSON.decode(ReplicaStatus.self, from: data)
        if let endpoint = report.endpoint {
            guard let url = URL(string: endpoint), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw APIError(.unprocessableContent, .invalid, "'\(endpoint)' is not an http(s) URL", field: "endpoint")
            }
        }
        do {
            let stored = try await deps.store.modify(Replica.self, tenant: tenant, name: name) { replica in
                if caller.role == .node, replica.binding?.node != caller.node {
                    // Not bound here: to this node the replica does not exist.
                    throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) is not bound to \(caller.node ?? "this node")")
                }
                replica.status = report
            }
            return try HTTPJSON.response(stored)
        } catch let error as StoreError {
            throw APIError.from(error, what: "replica \(tenant)/\(name)")
        }
    }
}
