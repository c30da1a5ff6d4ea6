/// The QoS tier of a GPU pod: drives preemption order (highest first) and billing.
public enum GPUPriority: String, Codable, Sendable, CaseIterable, Comparable {
    case interactive, inference, training, batch

    /// The tier used when `gpu.priority` is absent.
    public static let `default` = GPUPriority.inference

    /// Larger is more important: interactive 3, inference 2, training 1, batch 0.
    public var rank: Int {
        switch self {
        case .interactive: return 3
        case .inference: return 2
        case .training: return 1
        case .batch: return 0
        }
    }

    public static func < (lhs: GPUPriority, rhs: GPUPriority) -> Bool { lhs.rank < rhs.rank }
}

/// A pod's `gpu:` block.
public struct GPUBlock: Codable, Sendable, Hashable {
    /// Must be `true` when the block is present.
    public var enabled: Bool?
    /// A catalog slug, `auto`, or `custom`.
    public var model: String?
    /// The QoS tier; `inference` when absent.
    public var priority: GPUPriority?
    /// VRAM wanted per GPU, only (and always) with `model: custom`.
    public var memoryGB: Int?
    /// Whole GPUs wanted on one node, only with `model: custom` (default 1).
    public var count: Int?

    /// Makes a gpu block.
    public init(
        enabled: Bool? = true, model: String? = nil, priority: GPUPriority? = nil,
        memoryGB: Int? = nil, count: Int? = nil
    ) {
        self.enabled = enabled
        self.model = model
        self.priority = priority
        self.memoryGB = memoryGB
        self.count = count
    }

    /// The tier in force.
    public var effectivePriority: GPUPriority { priority ?? .default }
}

/// One pod of an application manifest.
public struct Pod: Codable, Sendable, Hashable {
    /// A DNS label, unique in the application.
    public var name: String
    /// The URL path the pod serves under, e.g. `/api`.
    public var path: String?
    /// The container image reference.
    public var image: String
    /// Ports the container listens on.
    public var servicePorts: [Int]
    /// Environment variables for the container.
    public var vars: [String: String]
    /// The GPU request, when the pod uses a GPU.
    public var gpu: GPUBlock?
    /// Machine types the pod may run on, tried in order; empty means "the smallest that fits".
    public var machineTypes: [String]
    /// Overrides the image's entrypoint.
    public var entrypoint: [String]?
    /// Overrides the image's command.
    public var command: [String]?
    /// Environment variables whose values come from the tenant's secrets
    /// (`vars: {NAME: {secret: name, key: k}}` in a manifest); nil or empty when none. A name
    /// is in ``vars`` or here, never both. The values reach only the container's environment.
    public var secretVars: [String: SecretReference]?

    /// Makes a pod.
    public init(
        name: String, path: String? = nil, image: String, servicePorts: [Int] = [],
        vars: [String: String] = [:], gpu: GPUBlock? = nil, machineTypes: [String] = [],
        entrypoint: [String]? = nil, command: [String]? = nil
    ) {
        self.name = name
        self.path = path
        self.image = image
        self.servicePorts = servicePorts
        self.vars = vars
        self.gpu = gpu
        self.machineTypes = machineTypes
        self.entrypoint = entrypoint
        self.command = command
    }
}

/// What an application manifest asks for.
public struct ApplicationSpec: Codable, Sendable, Hashable {
    /// The pods, in manifest order.
    public var pods: [Pod]

    /// Makes a spec.
    public init(pods: [Pod]) { self.pods = pods }
}

/// One `path` of an application as reachable from outside: the pod that serves it, and where.
public struct ApplicationRoute: Codable, Sendable, Hashable {
    /// The pod with the path.
    public var pod: String
    /// The pod's `path` (`/api`).
    public var path: String
    /// The container port the path is proxied to (the pod's first servicePort); nil when the
    /// pod lists none, and then the path serves nothing.
    public var port: Int?
    /// The application's URL plus the path: `<api-server>/apps/<tenant>/<app>/api`.
    public var url: String
    /// Whether a replica of the pod is ready to take requests there.
    public var ready: Bool

    /// Makes a route.
    public init(pod: String, path: String, port: Int?, url: String, ready: Bool) {
        self.pod = pod
        self.path = path
        self.port = port
        self.url = url
        self.ready = ready
    }
}

/// Where an application stands.
public struct ApplicationStatus: Codable, Sendable, Hashable {
    /// Pods running out of pods wanted.
    public var podsRunning: Int
    /// Pods wanted.
    public var podsWanted: Int
    /// Why the rest wait, when some do.
    public var message: String?
    /// The application's URL, `<api-server>/apps/<tenant>/<app>`: each pod's `path` is served
    /// below it (see ``routes``). Set in API answers; nil in what is stored.
    public var url: String?
    /// One entry per pod with a `path`, in manifest order. Set in API answers.
    public var routes: [ApplicationRoute]?

    /// Makes a status.
    public init(
        podsRunning: Int = 0, podsWanted: Int = 0, message: String? = nil, url: String? = nil, routes: [ApplicationRoute]? = nil
    ) {
        self.podsRunning = podsRunning
        self.podsWanted = podsWanted
        self.message = message
        self.url = url
        self.routes = routes
    }
}

/// An application manifest (`application:` in YAML): pods, some with a `gpu:` block.
public struct Application: Resource, Hashable {
    public static let kind = ResourceKind.application
    public var metadata: ObjectMeta
    public var spec: ApplicationSpec
    public var status: ApplicationStatus

    /// Makes an application.
    public init(metadata: ObjectMeta, spec: ApplicationSpec, status: ApplicationStatus = .init()) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }
}
