import ArgumentParser

/// The kinds `get` and `delete` know, with kubectl-style short names.
public enum ResourceKindName: String, ExpressibleByArgument, CaseIterable, Sendable {
    case applications, deployments, replicas, modelservers, nodes, events, tenants

    public init?(argument: String) {
        let aliases: [String: ResourceKindName] = [
            "application": .applications, "applications": .applications, "app": .applications, "apps": .applications,
            "deployment": .deployments, "deployments": .deployments, "deploy": .deployments,
            "replica": .replicas, "replicas": .replicas,
            "modelserver": .modelservers, "modelservers": .modelservers, "ms": .modelservers,
            "node": .nodes, "nodes": .nodes, "no": .nodes,
            "event": .events, "events": .events, "ev": .events,
            "tenant": .tenants, "tenants": .tenants,
        ]
        guard let kind = aliases[argument.lowercased()] else { return nil }
        self = kind
    }

    /// The collection's path.
    var path: String { "/v1/\(rawValue)" }

    /// `items` as this kind's table, header first.
    func table(_ items: [JSONValue]) -> [String] {
        Output.table([columns.map(\.header)] + items.map { item in columns.map { $0.cell(item) } })
    }

    /// The table columns: header and the value's path in each item.
    var columns: [(header: String, cell: (JSONValue) -> String)] {
        func at(_ path: String) -> (JSONValue) -> String { { $0.at(path).cell } }
        switch self {
        case .applications:
            return [
                ("NAME", at("metadata.name")),
                ("PODS", { "\($0.at("status.podsRunning").cell)/\($0.at("status.podsWanted").cell)" }),
                ("URL", { $0.at("status.routes").elements.isEmpty ? "-" : $0.at("status.url").cell }),
                ("VERSION", at("metadata.resourceVersion")), ("CREATED", at("metadata.created")),
            ]
        case .deployments:
            return [
                ("NAME", at("full_name")), ("GPU", { "\($0["num_gpus"].cell)×\($0["gpu"].cell)" }), ("BATCH", at("max_batch_size")),
                ("INSTANCES", { "\($0.at("status.instances_running").cell)/\($0.at("status.instances_wanted").cell)" }),
                ("MIN-MAX", { "\($0.at("settings.min_instances").cell)-\($0.at("settings.max_instances").cell)" }),
                ("STATE", at("status.state")), ("MESSAGE", at("status.message")),
            ]
        case .replicas:
            return [
                ("NAME", at("metadata.name")), ("NODE", at("binding.node")), ("GPUS", at("binding.gpuIndices")),
                ("PHASE", at("status.phase")), ("RESTARTS", at("status.restarts")), ("MESSAGE", at("status.message")),
            ]
        case .modelservers:
            return [
                ("NAME", at("metadata.name")), ("SLUG", at("spec.slug")), ("NODE", at("binding.node")), ("GPUS", at("binding.gpuIndices")),
                ("READY", at("status.ready")),
                // fetching (with the bytes) / loading / ready / failed (with the reason): ReplicaStatus.loading.
                ("STAGE", { server in
                    let loading = server.at("status.container.loading")
                    guard let stage = loading["stage"].string else { return "-" }
                    if stage == "fetching", let words = loading["message"].string { return words }
                    if stage == "failed", let reason = loading["reason"].string { return "failed: \(reason)" }
                    return stage
                }),
                ("ENDPOINT", at("status.endpoint")), ("ATTACHED", at("status.attachedReplicas")),
            ]
        case .nodes:
            return [
                ("NAME", at("metadata.name")),
                ("READY", { node in node.at("status.conditions").elements.first { $0["type"].string == "Ready" }?["status"].cell ?? "-" }),
                ("TYPE", at("spec.machineType")), ("GPUS", { "\($0.at("spec.gpus").elements.count)" }),
                ("CORDONED", at("spec.unschedulable")), ("CONTAINERS", at("status.containers")),
            ]
        case .events:
            return [
                ("TYPE", at("spec.severity")), ("REASON", at("spec.reason")),
                ("OBJECT", { "\($0.at("spec.involved.kind").cell)/\($0.at("spec.involved.name").cell)" }),
                ("COUNT", at("spec.count")), ("MESSAGE", at("spec.message")),
            ]
        case .tenants:
            return [
                // The tenant routes answer flat objects (docs/api.md, "Tenants").
                ("NAME", at("name")), ("PLAN", at("plan")), ("GPU-LIMIT", at("gpu_limit")),
                ("SPENDING-LIMIT", { $0["spending_limit_usd"].cell }),
            ]
        }
    }
}
