#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// What a node-agent registers: its name, labels, machine type and GPUs.
public struct NodeRegistration: Codable, Sendable, Hashable {
    /// The node's name (a DNS label); the node token must speak for it.
    public var name: String
    /// Labels, among them `gpu-mode=dedicated|large|shared`.
    public var labels: [String: String]
    /// The machine type, when the agent matched one; the api-server matches one from the GPUs
    /// otherwise.
    public var machineType: String?
    /// The GPUs.
    public var gpus: [GPUDevice]
    /// The address the gateway reaches this node's containers on.
    public var address: String?
    /// The node's pod subnet (``NodeSpec/podSubnet``), when it runs a pod network.
    public var podSubnet: String?
    /// CPU the node offers to replicas, thousandths of a core (``NodeSpec/allocatableCPUMilli``).
    public var allocatableCPUMilli: Int? = nil
    /// Memory the node offers to replicas, MB (``NodeSpec/allocatableMemoryMB``).
    public var allocatableMemoryMB: Int? = nil
    /// The agent's listener (``NodeSpec/agentURL``), when it runs one.
    public var agentURL: String? = nil

    /// Makes a registration.
    public init(
        name: String, labels: [String: String], machineType: String? = nil, gpus: [GPUDevice], address: String? = nil,
        podSubnet: String? = nil
    ) {
        self.podSubnet = podSubnet
        self.name = name
        self.labels = labels
        self.machineType = machineType
        self.gpus = gpus
        self.address = address
    }
}

extension NodeAPI.Client {
    /// Registers (or refreshes) the node, marks it Ready and starts its heartbeat lease.
    /// Maps to `POST /v1/nodes`.
    @discardableResult
    public func register(_ registration: NodeRegistration) async throws(NodeAPIError) -> Node {
        let path = "/v1/nodes"
        return try await call(.post, path, body: try Self.encode(registration, path: path), as: Node.self)
    }

    /// Renews the node's heartbeat lease and returns its TTL in seconds.
    /// Maps to `POST /v1/nodes/{name}/heartbeat`.
    @discardableResult
    public func heartbeat(node: String) async throws(NodeAPIError) -> Int {
        struct Answer: Decodable { var ttlSeconds: Int }
        return try await call(.post, "/v1/nodes/\(Self.segment(node))/heartbeat", as: Answer.self).ttlSeconds
    }

    /// Replaces the node's reported status (GPU health, containers, conditions; the api-server
    /// keeps its own `Ready`). Maps to `PUT /v1/nodes/{name}/status`.
    @discardableResult
    public func reportStatus(node: String, _ status: NodeStatus) async throws(NodeAPIError) -> Node {
        let path = "/v1/nodes/\(Self.segment(node))/status"
        return try await call(.put, path, body: try Self.encode(status, path: path), as: Node.self)
    }

    /// What the node routes and names on its pod network (``PodNetworkView``).
    /// Maps to `GET /v1/nodes/{name}/podnetwork`.
    public func podNetwork(node: String) async throws(NodeAPIError) -> PodNetworkView {
        try await call(.get, "/v1/nodes/\(Self.segment(node))/podnetwork", as: PodNetworkView.self)
    }

    /// The key the api-server signs this node's listener requests with
    /// (``AgentRequestSignature``). Maps to `GET /v1/nodes/{name}/agent-key`.
    public func agentKey(node: String) async throws(NodeAPIError) -> [UInt8] {
        struct Answer: Decodable { var key: String }
        let answer = try await call(.get, "/v1/nodes/\(Self.segment(node))/agent-key", as: Answer.self)
        guard let key = PortableSHA256.bytes(hex: answer.key), key.count == 32 else {
            throw NodeAPIError(code: .decoding, message: "the agent key is not 64 hexadecimal digits", path: "/v1/nodes/\(node)/agent-key")
        }
        return key
    }

    /// The node as stored. Maps to `GET /v1/nodes/{name}`.
    public func node(_ name: String) async throws(NodeAPIError) -> Node {
        try await call(.get, "/v1/nodes/\(Self.segment(name))", as: Node.self)
    }
}
