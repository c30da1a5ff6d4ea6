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
    /// For an application's pod with a `path`: the container port its path serves (the pod's
    /// first servicePort). The node-agent publishes this port, and no other servicePort, on a
    /// host port, reports it as ``ReplicaStatus/endpoint`` and ``ReplicaStatus/ready`` once a
    /// TCP connection to it succeeds, and the api-server's ingress proxies
    /// `/apps/<tenant>/<app>/<path>/…` to it. Nil (the default) publishes nothing.
    public var ingressPort: Int?
    /// Environment variables whose values come from the tenant's secrets (the pod's
    /// ``Pod/secretVars``): references only, never values. The node-agent gets the values from
    /// `GET /v1/replicas/{tenant}/{name}/runtime` (``ReplicaRuntime/env``) when it creates the
    /// container. Nil or empty when none.
    public var secretEnv: [String: SecretReference]?
    /// CPU the container gets and holds on its node, in thousandths of a core: its CPU machine
    /// type's (CPU pods: the first CPU type the pod names, XS by default; Mode 2/3 pods: XS).
    /// Nil for whole-GPU replicas (Mode 1, deployments), which get their node's GPU machine
    /// type's CPU per GPU held; see ``resources(onNodeOf:in:)`` and docs/architecture.md
    /// ("CPU and memory"). Nil in replicas written before this field existed.
    public var cpuMilli: Int? = nil
    /// Memory the container gets and holds on its node, in MB (the same rules as ``cpuMilli``).
    public var memoryMB: Int? = nil
    /// The size of the container's `/dev/shm`, MiB: deployment instances run vLLM, whose tensor
    /// parallelism needs more than the engine's 64 MiB default
    /// (``ServingCommand/shmMiB(engine:gpus:)``). Nil: the engine's default.
    public var shmMiB: Int? = nil
    /// For a deployment instance: the weights its node-agent fetches into its cache (with the
    /// tenant's token secret for a private Hugging Face repository) and mounts read-only at
    /// ``ServingWeights/mountPath`` before the container starts; its command then names that
    /// mount. Nil: nothing is fetched or mounted.
    public var weights: ServingWeights? = nil

    /// Makes a spec.
    public init(
        owner: OwnerReference, role: String, mode: GPUMode?, modelSlug: String?, gpus: Int,
        vramGB: Int, machineTypes: [String], priority: GPUPriority, image: String,
        env: [String: String] = [:], ports: [Int] = [], entrypoint: [String]? = nil,
        command: [String]? = nil, inferenceKey: String? = nil, servingPort: Int? = nil, ingressPort: Int? = nil
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
        self.ingressPort = ingressPort
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
///
/// The lifecycle (see "Replica lifecycle" in docs/architecture.md) is decided here and only
/// here: ``Phase/holdsCapacity`` and ``Replica/holdsCapacity`` say whether a replica's GPUs are
/// taken, ``Phase/isReportedByNodeAgents`` which phases a node-agent may report.
public struct ReplicaStatus: Codable, Sendable, Hashable {
    /// Phases of a replica's life, and who moves a replica into each:
    ///
    /// - ``pending``: no binding. Written by the api-server (admission, a re-apply that changed
    ///   the spec, drain, node deletion) and by the scheduler (eviction, preemption).
    /// - ``bound``: the scheduler bound it to a node and GPUs; its node-agent has not reported yet.
    /// - ``starting``, ``running``, ``failed``: reported by the node-agent of the bound node
    ///   (`failed` covers a crashed container waiting out its restart backoff, an image that
    ///   cannot be pulled, an unhealthy GPU: see ``ReplicaStatus/reason``). The agent keeps
    ///   trying, so a failed replica still holds its GPUs: an image missing from its registry
    ///   (``Reason/imagePullBackOff``) too, since the agent would start the container on them
    ///   the moment the image appears; a re-apply with another image unbinds it.
    /// - ``preempted``, ``terminating``: kept for JSON compatibility; gpuplane writes neither
    ///   today. A node-agent stops such a replica's container, and neither holds capacity.
    public enum Phase: String, Codable, Sendable, CaseIterable {
        case pending, bound, starting, running, failed, preempted, terminating

        /// Whether a replica in this phase holds the GPUs (or model-server attachment) of its
        /// binding: a container may be running on them or be started on them again. Every
        /// decision about free capacity (scheduler snapshot, attachments) goes through this.
        public var holdsCapacity: Bool {
            switch self {
            case .bound, .starting, .running, .failed: return true
            case .pending, .preempted, .terminating: return false
            }
        }

        /// Whether a node-agent may report this phase for a replica bound to its node (the
        /// others are written by the api-server and the scheduler).
        public var isReportedByNodeAgents: Bool {
            switch self {
            case .starting, .running, .failed: return true
            case .pending, .bound, .preempted, .terminating: return false
            }
        }
    }

    /// A machine-readable cause of the phase, next to the words of ``message`` (a string, so
    /// readers of an older version decode a newer reason).
    public struct Reason: RawRepresentable, Codable, Sendable, Hashable {
        /// The cause's name (`CrashLoopBackOff`).
        public var rawValue: String

        /// Makes a reason.
        public init(rawValue: String) { self.rawValue = rawValue }

        /// Decodes a bare string.
        public init(from decoder: any Decoder) throws {
            rawValue = try decoder.singleValueContainer().decode(String.self)
        }

        /// Encodes a bare string.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            try container.encode(rawValue)
        }

        /// `failed`: the container exited (or was OOM-killed) and is started again after a backoff.
        public static let crashLoopBackOff = Reason(rawValue: "CrashLoopBackOff")
        /// `failed`: creating or starting the container failed (image missing, engine error); retried after a backoff.
        public static let startFailed = Reason(rawValue: "StartFailed")
        /// `failed`: a bound GPU is unhealthy; the container is not started on it.
        public static let gpuUnhealthy = Reason(rawValue: "GPUUnhealthy")
        /// `starting`: another container on the node still uses a bound GPU; the agent waits for it.
        public static let waitingForGPU = Reason(rawValue: "WaitingForGPU")
        /// `starting`: this replica's previous container on the node is still being stopped.
        public static let waitingForPreviousContainer = Reason(rawValue: "WaitingForPreviousContainer")
        /// `starting`: the node-agent pulls the image (the message tells how far: layers and MB).
        public static let pullingImage = Reason(rawValue: "PullingImage")
        /// `failed`: the last pull of the image failed; the message says why ("image X not found
        /// in registry R", "registry R refused the credentials of secret S", "no credentials
        /// for registry R"). Shown once per failure, then ``imagePullBackOff``.
        public static let errImagePull = Reason(rawValue: "ErrImagePull")
        /// `failed`: waiting out the backoff after a failed pull (it doubles per failure, up to
        /// the agent's cap) before pulling again; the message says why the last pull failed.
        public static let imagePullBackOff = Reason(rawValue: "ImagePullBackOff")
        /// `failed`: the container cannot be made because a secret (or a key of one) a var
        /// references does not exist, or the api-server could not give the values; the message
        /// names the var and the secret, never a value. The agent asks again after its restart
        /// backoff (Kubernetes' CreateContainerConfigError).
        public static let createContainerConfigError = Reason(rawValue: "CreateContainerConfigError")
        /// `starting`: the node-agent fetches the weights into its cache (the message tells how
        /// far; ``ReplicaStatus/loading`` has the bytes).
        public static let fetchingWeights = Reason(rawValue: "FetchingWeights")
        /// `failed`: the weights could not be fetched, verified or found (the message says why;
        /// ``ReplicaStatus/loading`` has the reason); fetched again after the restart backoff.
        public static let weightsFailed = Reason(rawValue: "WeightsFailed")
    }

    /// The phase.
    public var phase: Phase
    /// Why, in words ("0/12 nodes: 8 insufficient VRAM, 4 gpu-mode is shared").
    public var message: String?
    /// Why, as a name a program can match (``Reason/crashLoopBackOff``); nil when there is none.
    public var reason: Reason?
    /// The container engine's id, once created.
    public var containerID: String?
    /// The exit code of the last run, when it exited.
    public var exitCode: Int?
    /// Restarts so far.
    public var restarts: Int
    /// For replicas with a ``ReplicaSpec/servingPort``: whether its `/v1/models` answers; with
    /// an ``ReplicaSpec/ingressPort``: whether a TCP connection to its published port succeeds.
    public var ready: Bool?
    /// For replicas with a ``ReplicaSpec/servingPort`` or ``ReplicaSpec/ingressPort``: the URL
    /// it is published on (`http://<node address>:<host port>`), once its container exists.
    public var endpoint: String?
    /// The binding a node-agent's report was made for. The api-server refuses a report whose
    /// binding is no longer the replica's, so a late report cannot overwrite the status of a
    /// newer binding; nil in statuses written by the api-server and the scheduler.
    public var observedBinding: Binding?
    /// The container's address on its node's pod network (``NodeSpec/podSubnet``), which the
    /// application's other pods reach it on as `<pod>.pod`; nil without a pod network.
    public var podIP: String? = nil
    /// For a model server and a deployment instance: where it is with its weights and engine
    /// (fetching with bytes, loading, ready, failed with the reason and the engine's last log
    /// lines); nil for other replicas and in statuses written before this field existed.
    public var loading: LoadingStatus? = nil

    /// Makes a status.
    public init(
        phase: Phase = .pending, message: String? = nil, reason: Reason? = nil, containerID: String? = nil,
        exitCode: Int? = nil, restarts: Int = 0, ready: Bool? = nil, endpoint: String? = nil,
        observedBinding: Binding? = nil
    ) {
        self.phase = phase
        self.message = message
        self.reason = reason
        self.observedBinding = observedBinding
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

    /// The fields, boxed (``CopyOnWrite``): copies of a replica share them until one changes.
    private var fields: CopyOnWrite<Fields>

    private struct Fields: Codable, Sendable, Hashable {
        var metadata: ObjectMeta
        var spec: ReplicaSpec
        var binding: Binding?
        var status: ReplicaStatus
        var secretVersions: [String: String]?
    }

    /// Name, tenant, uid, version and labels.
    public var metadata: ObjectMeta {
        _read { yield fields.value.metadata }
        _modify { yield &fields.value.metadata }
    }

    /// What to run and what it needs, from its application or deployment.
    public var spec: ReplicaSpec {
        _read { yield fields.value.spec }
        _modify { yield &fields.value.spec }
    }

    /// Set once the scheduler binds the replica.
    public var binding: Binding? {
        _read { yield fields.value.binding }
        _modify { yield &fields.value.binding }
    }

    /// Where it stands, as the scheduler and its node-agent report it.
    public var status: ReplicaStatus {
        _read { yield fields.value.status }
        _modify { yield &fields.value.status }
    }

    /// For a replica with ``ReplicaSpec/secretEnv``: the ``Secret/Spec/version`` of each secret
    /// it references, written by the api-server in the same transaction as each create or
    /// replace of such a secret (absent until the first). The node-agent puts them in the
    /// container's spec hash, so a changed value replaces the running container. Kept out of
    /// ``spec`` so a re-apply of the application does not see a change.
    public var secretVersions: [String: String]? {
        _read { yield fields.value.secretVersions }
        _modify { yield &fields.value.secretVersions }
    }

    /// Makes a replica.
    public init(
        metadata: ObjectMeta, spec: ReplicaSpec, binding: Binding? = nil,
        status: ReplicaStatus = .init()
    ) {
        fields = CopyOnWrite(Fields(metadata: metadata, spec: spec, binding: binding, status: status))
    }

    /// Decodes the replica's JSON (its fields at the top level).
    public init(from decoder: any Decoder) throws {
        fields = try CopyOnWrite(from: decoder)
    }

    /// Encodes the replica's JSON (its fields at the top level).
    public func encode(to encoder: any Encoder) throws {
        try fields.encode(to: encoder)
    }

    /// Whether the replica holds the GPUs (or the model-server attachment) of its binding: it
    /// is bound and its phase ``ReplicaStatus/Phase/holdsCapacity``. A GPU is free only when no
    /// replica holding capacity is bound to it.
    public var holdsCapacity: Bool { binding != nil && status.phase.holdsCapacity }

    /// Takes the binding away (eviction, preemption, drain): the replica goes back to
    /// `pending` with `message` saying why, and its node-agent stops its container. The restart
    /// count is kept.
    public mutating func unbind(message: String) {
        binding = nil
        status.phase = .pending
        status.message = message
        status.reason = nil
        status.containerID = nil
        status.exitCode = nil
        status.ready = nil
        status.endpoint = nil
        status.observedBinding = nil
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
        /// The size of the container's `/dev/shm`, MiB (vLLM's tensor parallelism needs more
        /// than an engine's 64 MiB default: ``ServingCommand/shmMiB(engine:gpus:)``); the
        /// engine's default when nil.
        public var shmMiB: Int?
        /// The weights the node-agent fetches (or mounts) before it starts the container,
        /// mounted read-only at ``ServingWeights/mountPath``; `args` then name that mount. Nil:
        /// nothing is mounted (a Hugging Face id the engine fetches itself).
        public var weights: ServingWeights? = nil

        /// Makes a serving description.
        public init(image: String, args: [String] = [], port: Int = 8000, shmMiB: Int? = nil, weights: ServingWeights? = nil) {
            self.image = image
            self.args = args
            self.port = port
            self.shmMiB = shmMiB
            self.weights = weights
        }

        /// What the catalog says of `model`, on one GPU of unknown size.
        public init(_ model: CatalogModel) {
            self.init(model, shape: ServingShape(gpus: 1))
        }

        /// What the catalog says of `model`, placed as `shape`: its image, the engine's
        /// command line (``ServingCommand/arguments(for:shape:weightsPath:)``, naming the
        /// weights' mount when the node-agent fetches them: ``CatalogModel/servingWeights``),
        /// `/dev/shm` and the weights.
        public init(_ model: CatalogModel, shape: ServingShape) {
            let weights = model.servingWeights
            self.init(
                image: model.image, args: model.servingArguments(shape, weightsPath: weights?.enginePath), port: model.port,
                shmMiB: ServingCommand.shmMiB(engine: model.engine, gpus: shape.gpus), weights: weights)
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

    /// The fields, boxed (``CopyOnWrite``): copies of a model server share them until one changes.
    private var fields: CopyOnWrite<Fields>

    private struct Fields: Codable, Sendable, Hashable {
        var metadata: ObjectMeta
        var spec: Spec
        var binding: Binding?
        var status: Status
    }

    /// Name, tenant, uid, version and labels.
    public var metadata: ObjectMeta {
        _read { yield fields.value.metadata }
        _modify { yield &fields.value.metadata }
    }

    /// The model it serves, its mode and its VRAM.
    public var spec: Spec {
        _read { yield fields.value.spec }
        _modify { yield &fields.value.spec }
    }

    /// Node and GPU, once placed.
    public var binding: Binding? {
        _read { yield fields.value.binding }
        _modify { yield &fields.value.binding }
    }

    /// Whether it is ready, where, and who is attached.
    public var status: Status {
        _read { yield fields.value.status }
        _modify { yield &fields.value.status }
    }

    /// Makes a model server.
    public init(metadata: ObjectMeta, spec: Spec, binding: Binding? = nil, status: Status = .init()) {
        fields = CopyOnWrite(Fields(metadata: metadata, spec: spec, binding: binding, status: status))
    }

    /// Decodes the model server's JSON (its fields at the top level).
    public init(from decoder: any Decoder) throws {
        fields = try CopyOnWrite(from: decoder)
    }

    /// Encodes the model server's JSON (its fields at the top level).
    public func encode(to encoder: any Encoder) throws {
        try fields.encode(to: encoder)
    }
}
