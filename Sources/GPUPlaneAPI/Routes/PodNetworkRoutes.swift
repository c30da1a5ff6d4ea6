import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// The pod network's part of `/v1/nodes`: a registration's `podSubnet` is checked, and
/// `GET /v1/nodes/{name}/podnetwork` tells a node-agent what it routes and names
/// (``PodNetworkView``).
extension NodeRoutes {
    /// Refuses a registration whose `podSubnet` is not an IPv4 CIDR of /16 to /28, comes without
    /// an address (the other nodes route the subnet to it), or overlaps another node's.
    func checkPodSubnet(_ body: Registration) async throws {
        guard let text = body.podSubnet else { return }
        guard let subnet = IPv4CIDR(text), (16...28).contains(subnet.prefix) else {
            throw APIError(
                .unprocessableContent, .invalid,
                "'\(text)' is not an IPv4 subnet of /16 to /28 in CIDR notation with no host bits (e.g. 10.251.3.0/24)",
                field: "podSubnet")
        }
        guard body.address != nil else {
            throw APIError(
                .unprocessableContent, .invalid, "a node with a podSubnet needs an address: the other nodes route its pods to it",
                field: "address")
        }
        let nodes = try await deps.store.list(Node.self, tenant: ObjectMeta.clusterTenant).items
        if let other = nodes.first(where: { node in
            node.metadata.name != body.name && node.spec.podSubnet.flatMap { IPv4CIDR($0) }.map { $0.overlaps(subnet) } == true
        }) {
            throw APIError(
                .conflict, .conflict,
                "podSubnet \(text) overlaps node \(other.metadata.name)'s \(other.spec.podSubnet ?? ""); give each node its own subnet",
                field: "podSubnet")
        }
    }

    /// Maps to `GET /v1/nodes/{name}/podnetwork` (the node's own token, or an admin): the routes
    /// to the other nodes' pod subnets and the addresses of the pods of every application with
    /// a replica bound to the node, nothing of any other application.
    func podNetwork(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        try authorize(context, node: name)
        let nodes = try await deps.store.list(Node.self, tenant: ObjectMeta.clusterTenant).items
        let replicas = try await deps.store.list(Replica.self).items
        return try HTTPJSON.response(PodNetworkView.make(for: name, nodes: nodes, replicas: replicas))
    }
}
