import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/nodes`: registration, status and heartbeat (node tokens, their own node only), and
/// list/get/cordon/uncordon/drain/delete (admins).
struct NodeRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/nodes") { try await registerNode($0, $1) }
        routes.add(.get, "/v1/nodes") { try await list($0, $1) }
        routes.add(.get, "/v1/nodes/:name") { try await get($0, $1) }
        routes.add(.put, "/v1/nodes/:name/status") { try await status($0, $1) }
        routes.add(.post, "/v1/nodes/:name/heartbeat") { try await heartbeat($0, $1) }
        routes.add(.post, "/v1/nodes/:name/cordon") { try await setCordon($0, $1, true, drain: false) }
        routes.add(.post, "/v1/nodes/:name/uncordon") { try await setCordon($0, $1, false, drain: false) }
        routes.add(.post, "/v1/nodes/:name/drain") { try await setCordon($0, $1, true, drain: true) }
        routes.add(.delete, "/v1/nodes/:name") { try await delete($0, $1) }
        routes.add(.get, "/v1/nodes/:name/podnetwork") { try await podNetwork($0, $1) }
        routes.add(.get, "/v1/nodes/:name/watch") { try await watch($0, $1) }
    }

    /// Whether `method` and `path` (without its query) are a node's beat,
    /// `POST /v1/nodes/{name}/heartbeat` (the audit skips answered beats; ``BeatArrivalHandler``
    /// stamps them).
    static func isHeartbeat(method: HTTPRequest.Method, path: Substring) -> Bool {
        guard method == .post else { return false }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 5 && parts[0].isEmpty && parts[1] == "v1" && parts[2] == "nodes" && parts[4] == "heartbeat"
    }

    /// What a node-agent registers.
    struct Registration: Codable {
        var name: String
        var labels: [String: String]?
        var machineType: String?
        var gpus: [GPUDevice]
        var address: String?
        var podSubnet: String?
        /// The agent's listener (``NodeSpec/agentURL``).
        var agentURL: String?
        /// CPU the node offers, thousandths of a core (``NodeSpec/allocatableCPUMilli``).
        var allocatableCPUMilli: Int?
        /// Memory the node offers, MB (``NodeSpec/allocatableMemoryMB``).
        var allocatableMemoryMB: Int?
    }

    /// A node-agent may only speak for its own node; admins for any.
    func authorize(_ context: APIContext, node: String) throws {
        let caller = try context.caller()
        switch caller.role {
        case .admin: return
        case .node where caller.node == node: return
        case .node: throw APIError(.forbidden, .forbidden, "this node token speaks for \(caller.node ?? "no node"), not \(node)")
        case .user: throw APIError(.forbidden, .forbidden, "nodes are managed by node-agents and admins")
        }
    }

    /// Maps to `POST /v1/nodes`: creates or refreshes the Node (keeping an admin's cordon), marks
    /// it Ready, and writes its heartbeat key live (``HeartbeatTracker``).
    func registerNode(_ request: Request, _ context: APIContext) async throws -> Response {
        let deadline = try RequestDeadline.of(request)
        let data = try await HTTPJSON.body(request)
        try HTTPJSON.rejectUnknownKeys(data, known: ["name", "labels", "machineType", "gpus", "address", "podSubnet", "allocatableCPUMilli", "allocatableMemoryMB", "agentURL"])
        let body = try HTTPJSON.decode(Registration.self, from: data)
        for (field, value) in [("allocatableCPUMilli", body.allocatableCPUMilli), ("allocatableMemoryMB", body.allocatableMemoryMB)] {
            if let value, value < 0 || value > 1 << 40 {
                throw APIError(.unprocessableContent, .invalid, "\(field) must be 0 or more (omit it to leave the node unaccounted)", field: field)
            }
        }
        if let agentURL = body.agentURL {
            guard agentURL.utf8.count <= 256, let url = URL(string: agentURL), url.scheme == "http" || url.scheme == "https",
                url.host != nil, url.path.isEmpty || url.path == "/", url.query == nil
            else {
                throw APIError(.unprocessableContent, .invalid, "agentURL must be http(s)://host:port with no path, not '\(agentURL)'", field: "agentURL")
            }
        }
        var indices = Set<Int>(), uuids = Set<String>()
        for (position, gpu) in body.gpus.enumerated() {
            guard indices.insert(gpu.index).inserted else {
                throw APIError(.unprocessableContent, .invalid, "GPU index \(gpu.index) appears twice; each GPU needs its own NVML index", field: "gpus[\(position)].index")
            }
            guard uuids.insert(gpu.uuid).inserted else {
                throw APIError(.unprocessableContent, .invalid, "GPU \(gpu.uuid) appears twice; each GPU needs its own UUID", field: "gpus[\(position)].uuid")
            }
        }
        guard Syntax.isDNSLabel(body.name) else {
            throw APIError(.unprocessableContent, .invalid, "'\(body.name)' is not a DNS label", field: "name")
        }
        try authorize(context, node: body.name)
        // From here on the store is read and written: a bounded number at once, and none for
        // a client that stopped waiting meanwhile.
        return try await deps.registrations.pass {
            try RequestDeadline.check(deadline)
            return try await registerChecked(body, before: deadline)
        }
    }

    /// ``registerNode(_:_:)`` once the body is valid and the caller may speak for the node;
    /// nothing is written once `deadline` has passed.
    private func registerChecked(_ body: Registration, before deadline: ContinuousClock.Instant?) async throws -> Response {
        try await checkPodSubnet(body)
        var labels = body.labels ?? [:]
        if let mode = labels[Node.gpuModeLabel], !["dedicated", "large", "shared", "mixed"].contains(mode) {
            throw APIError(.unprocessableContent, .invalid, "label gpu-mode must be dedicated, large, shared or mixed, not '\(mode)'", field: "labels.gpu-mode")
        }
        let type = body.machineType.flatMap { deps.machineTypes.named($0) }
            ?? body.gpus.first.flatMap { deps.machineTypes.matching(product: $0.product, memoryMiB: $0.memoryMiB) }
        if let name = body.machineType, deps.machineTypes.named(name) == nil {
            throw APIError(.unprocessableContent, .invalid, "'\(name)' is not a machine type", field: "machineType")
        }
        let typeName = type?.name ?? (body.gpus.isEmpty ? "cpu" : "unknown")
        labels[Node.machineTypeLabel] = typeName
        if let product = body.gpus.first?.product { labels[Node.gpuProductLabel] = product }
        let now = Date()
        let ready = Condition(type: NodeHeartbeat.readyCondition, status: true, reason: "Registered", message: "node-agent registered", lastTransition: now)
        // The heartbeat key first: a scheduler that sees the Ready node sees a live key with it,
        // or will within the moment its two watches differ by.
        try RequestDeadline.check(deadline)
        try await renewHeartbeat(body.name, registering: true)
        var stored: Node
        for attempt in 0..<5 {
            do {
                try RequestDeadline.check(deadline)
                if var node = try? await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: body.name) {
                    node.metadata.labels = labels
                    node.spec.machineType = typeName
                    node.spec.gpus = body.gpus
                    node.spec.address = body.address
                    node.spec.podSubnet = body.podSubnet
                    node.spec.agentURL = body.agentURL
                    node.spec.allocatableCPUMilli = body.allocatableCPUMilli
                    node.spec.allocatableMemoryMB = body.allocatableMemoryMB
                    node.status.conditions.removeAll { $0.type == NodeHeartbeat.readyCondition }
                    node.status.conditions.append(ready)
                    node.status.heartbeat = now
                    stored = try await deps.store.update(node)
                } else {
                    let node = Node(
                        metadata: ObjectMeta(name: body.name, labels: labels),
                        spec: { var spec = NodeSpec(machineType: typeName, gpus: body.gpus, address: body.address); spec.podSubnet = body.podSubnet; spec.agentURL = body.agentURL; spec.allocatableCPUMilli = body.allocatableCPUMilli; spec.allocatableMemoryMB = body.allocatableMemoryMB; return spec }(),
                        status: NodeStatus(conditions: [ready], heartbeat: now))
                    stored = try await deps.store.create(node)
                }
                return try HTTPJSON.response(stored, status: .created)
            } catch let error as StoreError where (error.code == .conflict || error.code == .alreadyExists) && attempt < 4 {
                continue
            }
        }
        throw APIError(.conflict, .conflict, "node \(body.name) kept changing; retry")
    }

    /// Maps to `POST /v1/nodes/{name}/heartbeat`: the node's beat, kept in this api-server's
    /// memory (``HeartbeatTracker``). Answers the TTL the agent must beat within. Only the node's own agent beats for it: an
    /// admin's beat would keep a node without an agent Ready. A node that is not registered
    /// (or was deleted) gets 404, so its agent registers again.
    func heartbeat(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        let caller = try context.caller()
        if caller.role == .admin {
            throw APIError(
                .forbidden, .forbidden,
                "heartbeats come from node \(name)'s own agent, with its node token; an admin beat would keep a node with no agent Ready")
        }
        try authorize(context, node: name)
        try await renewHeartbeat(name, registering: false, arrived: BeatArrival.instant(of: request))
        // Written by hand: thousands of nodes beat every second, and the answer is one integer.
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: #"{"ttlSeconds":\#(deps.heartbeatTTL)}"#)))
    }

    /// Maps to `GET /v1/nodes/{name}/watch?replicaVersion=R&modelServerVersion=M`: the
    /// replicas and model servers bound to the node, in one stream (``NodeWatchStreamer``).
    /// The node's own token, or an admin's.
    func watch(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        try authorize(context, node: name)
        return try await NodeWatchStreamer(deps: deps).response(node: name, request: request)
    }

    /// Takes `node`'s beat in this api-server's ``HeartbeatTracker``: memory only, unless its
    /// key must be written (first beat here, after silence, registration). Outside
    /// registration, a key is only written for a node that exists. `arrived`: when the beat
    /// reached this host (``BeatArrival``), if known.
    private func renewHeartbeat(_ node: String, registering: Bool, arrived: ContinuousClock.Instant? = nil) async throws {
        do {
            try await deps.heartbeats.beat(node: node, registering: registering, arrived: arrived)
        } catch let error as StoreError where error.code == .notFound {
            throw APIError(
                .notFound, .notFound,
                "node \(node) is not registered; its agent registers it with POST /v1/nodes before it beats")
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot write the heartbeat: the store is unavailable")
        }
    }

    /// Maps to `PUT /v1/nodes/{name}/status`: the agent's report of GPU health and containers.
    func status(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        try authorize(context, node: name)
        let deadline = try RequestDeadline.of(request)
        try RequestDeadline.check(deadline)
        let data = try await HTTPJSON.body(request)
        let report = try HTTPJSON.decode(NodeStatus.self, from: data)
        if let index = report.duplicateGPUReport {
            throw APIError(
                .unprocessableContent, .invalid,
                "GPU \(report.gpuHealth[index].uuid) is reported twice; send one gpuHealth entry per GPU",
                field: "gpuHealth[\(index)].uuid")
        }
        let stored = try await deps.store.modify(Node.self, tenant: ObjectMeta.clusterTenant, name: name, before: deadline) { node in
            // Ready is the scheduler's to say (from the heartbeat key); keep it.
            let ready = node.status.conditions.filter { $0.type == NodeHeartbeat.readyCondition }
            node.status = report
            node.status.conditions = ready + report.conditions.filter { $0.type != NodeHeartbeat.readyCondition }
            node.status.heartbeat = Date()
        }
        return try HTTPJSON.response(stored)
    }

    /// Maps to `GET /v1/nodes` (admins: all; node tokens: their own).
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        guard caller.role != .user else { throw APIError(.forbidden, .forbidden, "listing nodes needs an admin token") }
        let own = caller.role == .node ? caller.node : nil
        if request.wantsWatch {
            return try await WatchStreamer(deps: deps).response(Node.self, tenant: ObjectMeta.clusterTenant, request: request) {
                own == nil || $0.metadata.name == own
            }
        }
        let list = try await deps.store.list(Node.self, tenant: ObjectMeta.clusterTenant)
        return try HTTPJSON.response(ListBody(items: list.items.filter { own == nil || $0.metadata.name == own }, resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/nodes/{name}`.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let name = try context.parameter("name")
        try authorize(context, node: name)
        return try HTTPJSON.response(try await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: name))
    }

    /// Maps to `POST /v1/nodes/{name}/cordon`, `/uncordon` and `/drain` (admins). Drain also
    /// returns the node's replicas to pending, in the same transaction, so they move elsewhere.
    func setCordon(_ request: Request, _ context: APIContext, _ cordon: Bool, drain: Bool) async throws -> Response {
        try context.requireAdmin()
        let name = try context.parameter("name")
        for attempt in 0..<5 {
            do {
                var node = try await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: name)
                node.spec.unschedulable = cordon
                let bound = drain ? try await deps.store.list(Replica.self).items.filter { $0.binding?.node == name } : []
                let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<Node> in
                    let handle = try txn.update(node)
                    for var replica in bound {
                        replica.binding = nil
                        replica.status = ReplicaStatus(phase: .pending, message: "node \(name) is being drained")
                        try txn.update(replica)
                    }
                    return handle
                }
                return try HTTPJSON.response(try result.object(handle))
            } catch let error as StoreError where error.code == .conflict && attempt < 4 {
                continue
            }
        }
        throw APIError(.conflict, .conflict, "node \(name) kept changing; retry")
    }

    /// Maps to `DELETE /v1/nodes/{name}` (admins): drains the node and removes it, in one
    /// transaction: its replicas go back to pending (to be placed elsewhere), its model servers
    /// are deleted, and the Node goes; then its heartbeat key. An agent still running there
    /// stops what was bound to it and, on its next beat, is told to register again.
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        try context.requireAdmin()
        let name = try context.parameter("name")
        for attempt in 0..<5 {
            do {
                let node = try await deps.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: name)
                async let replicaList = deps.store.list(Replica.self)
                async let serverList = deps.store.list(ModelServer.self, tenant: nil)
                let bound = try await replicaList.items.filter { $0.binding?.node == name }
                let servers = try await serverList.items.filter { $0.binding?.node == name }
                _ = try await deps.store.transaction { txn in
                    txn.delete(Node.self, tenant: ObjectMeta.clusterTenant, name: name, expectedVersion: node.metadata.resourceVersion)
                    for var replica in bound {
                        replica.binding = nil
                        replica.status = ReplicaStatus(phase: .pending, message: "node \(name) was deleted")
                        try txn.update(replica)
                    }
                    for server in servers {
                        txn.delete(
                            ModelServer.self, tenant: server.metadata.tenant, name: server.metadata.name,
                            expectedVersion: server.metadata.resourceVersion)
                    }
                }
                do {
                    try await deps.heartbeats.remove(node: name)
                } catch {
                    // The lease expires on its own within the TTL; the node is gone already.
                    deps.logger.warning("cannot delete a deleted node's heartbeat key", metadata: ["node": "\(name)", "error": "\(error)"])
                }
                return Response(status: .noContent)
            } catch let error as StoreError where (error.code == .conflict || error.code == .notFound) && attempt < 4 {
                // A replica or server changed (or went) between the reads and the write: again.
                if error.code == .notFound, error.kind == .node { throw error }
                continue
            }
        }
        throw APIError(.conflict, .conflict, "node \(name) kept changing; retry")
    }
}
