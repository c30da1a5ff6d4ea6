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
            return try await WatchStreamer(deps: deps).response(Replica.self, tenant: tenant, request: request, route: node, filter: filter)
        }
        let list = try await deps.store.list(Replica.self, tenant: tenant)
        return try HTTPJSON.response(ListBody(items: list.items.filter(filter), resourceVersion: String(list.revision)))
    }

    /// Maps to `PUT /v1/replicas/{tenant}/{name}/status`: the node-agent's report (Running,
    /// Exited with code, OOMKilled, image missing; for a serving replica, whether it is ready
    /// and where). Only for replicas bound to the caller's node.
    ///
    /// A report never binds, unbinds or resurrects (see "Replica lifecycle" in
    /// docs/architecture.md): it is checked against the replica as stored, in the same
    /// compare-and-swap that writes it, and refused when the replica is not bound (404 to a
    /// node, 409 to an admin), when it is bound to another node (404), or when the report
    /// names an ``ReplicaStatus/observedBinding`` that is no longer the replica's (404: a late
    /// report about an earlier binding). A node-agent reports only the phases
    /// ``ReplicaStatus/Phase/isReportedByNodeAgents`` (422 otherwise).
    func status(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant = try context.parameter("tenant")
        let name = try context.parameter("name")
        guard caller.role == .node || caller.role == .admin else {
            throw APIError(.forbidden, .forbidden, "replica status is reported by node-agents")
        }
        let deadline = try RequestDeadline.of(request)
        try RequestDeadline.check(deadline)
        let data = try await HTTPJSON.body(request)
        let report = try HTTPJSON.decode(ReplicaStatus.self, from: data)
        if caller.role == .node, !report.phase.isReportedByNodeAgents {
            throw APIError(
                .unprocessableContent, .invalid,
                "a node-agent reports starting, running or failed; '\(report.phase.rawValue)' is written by the api-server or the scheduler",
                field: "phase")
        }
        if let endpoint = report.endpoint {
            guard let url = URL(string: endpoint), url.scheme == "http" || url.scheme == "https", url.host != nil else {
                throw APIError(.unprocessableContent, .invalid, "'\(endpoint)' is not an http(s) URL", field: "endpoint")
            }
        }
        let stored = try await deps.store.modifyIfChanged(Replica.self, tenant: tenant, name: name, before: deadline) { replica in
            if caller.role == .node, replica.binding?.node != caller.node {
                // Not bound here: to this node the replica does not exist.
                throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) is not bound to \(caller.node ?? "this node")")
            }
            guard let binding = replica.binding else {
                throw APIError(
                    .conflict, .conflict,
                    "replica \(tenant)/\(name) is not bound; it stays pending until the scheduler binds it")
            }
            if let observed = report.observedBinding, observed != binding {
                // A late report about an earlier binding (the replica was unbound and bound
                // again meanwhile): to its sender that binding no longer exists.
                throw APIError(
                    .notFound, .notFound,
                    "replica \(tenant)/\(name) is no longer bound to \(observed.node) GPU \(Self.gpuText(observed)); the report is about an earlier binding")
            }
            replica.status = report
        }
        return try HTTPJSON.response(stored)
    }

    private static func gpuText(_ binding: Binding) -> String {
        binding.gpuIndices.isEmpty ? "-" : binding.gpuIndices.map(String.init).joined(separator: ",")
    }
}
