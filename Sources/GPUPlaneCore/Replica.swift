/// What a replica belongs to.
public struct OwnerReference: Codable, Sendable, Hashable {
    /// The owner's kind.
    public var kind: ResourceKind
    /// The owner's name (same tenant as the replica).
    public var name: String
    /// The owner's uid, so a re-created owner does not adopt old replicas.
    public var uid: String

    /// Makes a reference.
    public init(kind: ResourceKind, name: String, uid: String) {
        self.kind = kind
        self.name = name
        self.uid = uid
    }
}

/// What a replica needs from the fleet.
public struct ReplicaSpec: Codable, Sendable, Hashable {
    /// The application or deployment that wants it.
    public var owner: OwnerReference
    /// The pod name (applications) or instance index (deployments) it serves.
    public var role: String
    /// How it is served.
    public var mode: GPUMode?
    /// The catalog slug for Mode 2/3; nil for Mode 1 and CPU pods.
    public var modelSlug: String?
    /// Whole GPUs wanted (Mode 1 and deployments); 0 for shared attachments and CPU pods.
    public var gpus: Int
    /// VRAM needed per GPU (or on the shared GPU), in GB.
    public var vramGB: Int
    /// Machine types allowed, in order of preference; empty means any that fits.
    public var machineTypes: [String]
    /// The QoS tier.
    public var priority: GPUPriority
    /// The container image.
    public var image: String
    /// Environment the container gets (the user's vars; the agent adds the NXL_* contract).
    public var env: [String: String]
    /// Container ports.
    public var ports: [Int]
    /// Entrypoint and command overrides.
    public var entrypoint: [String]?
    /// Command override.
    public var command: [String]?
    /// For Mode 2/3: the key that scopes the inference URL to this replica's tenant and model
    /// (set by the api-server at admission; see `NXL_INFERENCE_URL`).
    public var inferenceKey: String?
    /// For replicas that serve the OpenAI protocol themselves (deployment instances): the
    /// container port it listens on. The node-agent publishes it on a host port and reports the
    /// replica ready once `/v1/models` answers there.
    public var servingPort: Int?

    /// Makes a spec.
    public init(
        owner: OwnerReference, role: String, mode: GPUMode?, modelSlug: String?, gpus: Int,
        vramGB: Int, machineTypes: [String], priority: GPUPriority, image: String,
        env: [String: String] = [:], ports: [Int] = [], entrypoint: [String]? = nil,
        command: [String]? = nil, inferenceKey: String? = nil, servingPort: Int? = nil
    ) {
        self.owner = owner
        self.role = role
        self.mode = mode
        self.modelSlug = modelSlug
        self.gpus = gpus
        self.vramGB = vramGB
        self.machineTypes = machineTypes
        self.priority = priority
        self.image = image
        self.env = env
        self.ports = ports
        self.entrypoint = entrypoint
        self.command = command
        self.inferenceKey = inferenceKey
        self.servingPort = servingPort
    }
}

/// Where a placed replica runs.
public struct Binding: Codable, Sendable, Hashable {
    /// The node.
    public var node: String
    /// GPU indices on that node (Mode 1, Mode 2 and deployments).
    public var gpuIndices: [Int]
    /// The shared model server it is attached to (Mode 3).
    public var modelServer: String?
    /// The scheduler leader's election revision that made the binding.
    public var leaderRevision: Int64

    /// Makes a binding.
    public init(node: String, gpuIndices: [Int], modelServer: String? = nil, leaderRevision: Int64 = 0) {
        self.node = node
        self.gpuIndices = gpuIndices
        self.modelServer = modelServer
        self.leaderRevision = leaderRevision
    }
}

/// Where a replica stands.
public struct ReplicaStatus: Codable, Sendable, Hashable {
    /// Phases of a replica's life.
    public enum Phase: String, Codable, Sendable {
        case pending, bound, starting, running, failed, preempted, terminating
    }

    /// The phase.
    public var phase: Phase
    /// Why, in words ("0/12 nodes: 8 insufficient VRAM, 4 gpu-mode is shared").
    public var message: String?
    /// The container engine's id, once created.
    public var containerID: String?
    /// The exit code of the last run, when it exited.
    public var exitCode: Int?
    /// Restarts so far.
    public var restarts: Int
    /// For replicas with a ``ReplicaSpec/servingPort``: whether its `/v1/models` answers.
    public var ready: Bool?
    /// For replicas with a ``ReplicaSpec/servingPort``: the URL it is published on
    /// (`http://<node address>:<host port>`), once its container exists.
    public var endpoint: String?

    /// Makes a status.
    public init(
        phase: Phase = .pending, message: String? = nil, containerID: String? = nil,
        exitCode: Int? = nil, restarts: Int = 0, ready: Bool? = nil, endpoint: String? = nil
    ) {
        self.phase = phase
        self.message = message
        self.containerID = containerID
        self.exitCode = exitCode
        self.restarts = restarts
        self.ready = ready
        self.endpoint = endpoint
    }
}

/// One unit the scheduler places.
public struct Replica: Resource, Hashable {
    public static let kind = ResourceKind.replica
    public var metadata: ObjectMeta
    public var spec: ReplicaSpec
    /// Set once the scheduler binds the replica.
    public var binding: Binding?
    public var status: ReplicaStatus

    /// Makes a replica.
    public init(
        metadata: ObjectMeta, spec: ReplicaSpec, binding: Binding? = nil,
        status: ReplicaStatus = .init()
    ) {
        self.metadata = metadata
        self.spec = spec
        self.binding = binding
        self.status = status
    }
}

/// A running pinned model (Mode 3 shared or Mode 2 large) that tenants attach to.
public struct ModelServer: Resource, Hashable {
    public static let kind = ResourceKind.modelServer

    /// Desired shape of the server.
    public struct Spec: Codable, Sendable, Hashable {
        /// The catalog slug served.
        public var slug: String
        /// Mode 3 or Mode 2.
        public var mode: GPUMode
        /// VRAM the server holds, in GB.
        public var vramGB: Int
        /// Kept running with no tenant attached (warm pool).
        public var warm: Bool
        /// How the node-agent runs it: the catalog's serving image, arguments and port, copied
        /// when the server is created so a later catalog change does not restart it.
        public var serving: Serving?

        /// Makes a spec.
        public init(slug: String, mode: GPUMode, vramGB: Int, warm: Bool = false, serving: Serving? = nil) {
            self.slug = slug
            self.mode = mode
            self.vramGB = vramGB
            self.warm = warm
            self.serving = serving
        }
    }

    /// The container a model server runs.
    public struct Serving: Codable, Sendable, Hashable {
        /// The serving image (vLLM or compatible), already on the node.
        public var image: String
        /// Arguments to the image's entrypoint.
        public var args: [String]
        /// The port its OpenAI-protocol API listens on inside the container.
        public var port: Int

        /// Makes a serving description.
        public init(image: String, args: [String] = [], port: Int = 8000) {
            self.image = image
            self.args = args
            self.port = port
        }

        /// What the catalog says of `model`.
        public init(_ model: CatalogModel) {
            self.init(image: model.image, args: model.args, port: model.port)
        }
    }

    /// Where the server runs and who uses it.
    public struct Status: Codable, Sendable, Hashable {
        /// Whether `/v1/models` answers.
        public var ready: Bool
        /// The URL of its OpenAI-protocol API, once running.
        public var endpoint: String?
        /// Tenants attached, by replica name.
        public var attachedReplicas: [String]
        /// The server's container as its node-agent last reported it (phase, reason, restarts).
        public var container: ReplicaStatus?

        /// Makes a status.
        public init(
            ready: Bool = false, endpoint: String? = nil, attachedReplicas: [String] = [], container: ReplicaStatus? = nil
        ) {
            self.ready = ready
            self.endpoint = endpoint
            self.attachedReplicas = attachedReplicas
            self.container = container
        }
    }

    /// What a node-agent reports of a model server it runs (`PUT /v1/modelservers/{name}/status`):
    /// everything of ``Status`` but the attachments, which are the scheduler's.
    public struct Report: Codable, Sendable, Hashable {
        /// Whether `/v1/models` answered.
        public var ready: Bool
        /// The URL of its OpenAI-protocol API on the node (`http://<address>:<port>`), once published.
        public var endpoint: String?
        /// The container's state.
        public var container: ReplicaStatus

        /// Makes a report.
        public init(ready: Bool, endpoint: String?, container: ReplicaStatus) {
            self.ready = ready
            self.endpoint = endpoint
            self.container = container
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec
    /// Node and GPU, once placed.
    public var binding: Binding?
    public var status: Status

    /// Makes a model server.
    public init(metadata: ObjectMeta, spec: Spec, binding: Binding? = nil, status: Status = .init()) {
        self.metadata = metadata
        self.spec = spec
        self.binding = binding
        self.status = status
    }
}
