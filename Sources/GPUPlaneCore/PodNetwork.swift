/// What a node-agent needs to run its part of the pod network: the other nodes' pod subnets
/// (to route them) and the addresses of every pod of the applications it runs a pod of (for
/// their `<pod>.pod` names and the firewall). The answer of
/// `GET /v1/nodes/{name}/podnetwork`, given to that node's token only.
///
/// It names no pod of an application the node runs nothing of: a node learns the addresses of
/// another tenant's pods only while it runs one of that tenant's application.
public struct PodNetworkView: Codable, Sendable, Hashable {
    /// A node with a pod subnet.
    public struct Route: Codable, Sendable, Hashable {
        /// The node's name.
        public var node: String
        /// Its address (``NodeSpec/address``): the next hop for its subnet.
        public var address: String
        /// Its pod subnet (``NodeSpec/podSubnet``).
        public var podSubnet: String

        /// Makes a route.
        public init(node: String, address: String, podSubnet: String) {
            self.node = node
            self.address = address
            self.podSubnet = podSubnet
        }
    }

    /// A running pod with an address.
    public struct Pod: Codable, Sendable, Hashable {
        /// The tenant.
        public var tenant: String
        /// The application (``OwnerReference/name`` of an application's replica).
        public var application: String
        /// The pod's name (``ReplicaSpec/role``): `<pod>.pod` inside the application.
        public var pod: String
        /// The replica's name.
        public var replica: String
        /// The node it runs on.
        public var node: String
        /// Its address (``ReplicaStatus/podIP``).
        public var ip: String

        /// Makes a pod.
        public init(tenant: String, application: String, pod: String, replica: String, node: String, ip: String) {
            self.tenant = tenant
            self.application = application
            self.pod = pod
            self.replica = replica
            self.node = node
            self.ip = ip
        }

        /// `<tenant>/<application>`: the group whose pods may reach each other.
        public var group: String { "\(tenant)/\(application)" }
    }

    /// Every other node with a pod subnet and an address.
    public var routes: [Route]
    /// The pods with an address of every application with a replica bound to the asking node.
    public var pods: [Pod]

    /// Makes a view.
    public init(routes: [Route], pods: [Pod]) {
        self.routes = routes
        self.pods = pods
    }

    /// The view for `node`: routes to every other node that has a pod subnet and an address,
    /// and the pods (with an address, not terminating or preempted) of each application that
    /// has a replica bound to `node`.
    public static func make(for node: String, nodes: [Node], replicas: [Replica]) -> PodNetworkView {
        let routes = nodes.compactMap { other -> Route? in
            guard other.metadata.name != node, let address = other.spec.address, let subnet = other.spec.podSubnet else { return nil }
            return Route(node: other.metadata.name, address: address, podSubnet: subnet)
        }
        .sorted { $0.node < $1.node }
        func group(_ replica: Replica) -> String? {
            guard replica.spec.owner.kind == .application else { return nil }
            return "\(replica.metadata.tenant)/\(replica.spec.owner.name)"
        }
        let mine = Set(replicas.filter { $0.binding?.node == node }.compactMap(group))
        let pods = replicas.compactMap { replica -> Pod? in
            guard let key = group(replica), mine.contains(key), let bound = replica.binding?.node, let ip = replica.status.podIP,
                replica.status.phase == .running
            else { return nil }
            return Pod(
                tenant: replica.metadata.tenant, application: replica.spec.owner.name, pod: replica.spec.role,
                replica: replica.metadata.name, node: bound, ip: ip)
        }
        .sorted { ($0.tenant, $0.application, $0.pod, $0.replica) < ($1.tenant, $1.application, $1.pod, $1.replica) }
        return PodNetworkView(routes: routes, pods: pods)
    }
}

/// An IPv4 subnet in CIDR notation (`10.251.3.0/24`).
public struct IPv4CIDR: Sendable, Hashable, CustomStringConvertible {
    /// The network address, host order.
    public let network: UInt32
    /// The prefix length, 0…32.
    public let prefix: Int

    /// Parses `a.b.c.d/n`; nil when it is not one, or has host bits set.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let prefix = Int(parts[1]), (0...32).contains(prefix), let address = Self.address(String(parts[0]))
        else { return nil }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefix)
        guard address & ~mask == 0 else { return nil }
        self.network = address
        self.prefix = prefix
    }

    /// Parses `a.b.c.d/n`, or a bare `a.b.c.d` as `/32`, clearing host bits (`10.0.4.5/24` is
    /// `10.0.4.0/24`: the addresses a firewall rule with that text matches); nil otherwise.
    public init?(covering text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = Self.address(String(parts[0])) else { return nil }
        var prefix = 32
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...32).contains(n) else { return nil }
            prefix = n
        }
        self.prefix = prefix
        self.network = address & (prefix == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefix))
    }

    /// The mask, host order.
    public var mask: UInt32 { prefix == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefix) }

    /// Whether `address` (dotted quad) is inside.
    public func contains(_ address: String) -> Bool {
        guard let value = Self.address(address) else { return false }
        return value & mask == network
    }

    /// Whether the two share an address.
    public func overlaps(_ other: IPv4CIDR) -> Bool {
        let mask = prefix < other.prefix ? self.mask : other.mask
        return network & mask == other.network & mask
    }

    /// The `n`th address of the subnet, dotted (1: the gateway of a bridge).
    public func address(at n: UInt32) -> String { Self.text(network &+ n) }

    public var description: String { "\(Self.text(network))/\(prefix)" }

    /// A dotted quad's value, host order; nil when it is not one.
    public static func address(_ text: String) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for octet in octets {
            guard !octet.isEmpty, octet.count <= 3, octet.allSatisfy(\.isASCII), let byte = UInt8(octet) else { return nil }
            value = value << 8 | UInt32(byte)
        }
        return value
    }

    static func text(_ value: UInt32) -> String {
        "\(value >> 24 & 255).\(value >> 16 & 255).\(value >> 8 & 255).\(value & 255)"
    }
}
