/// Hugging Face weights of a deployment.
public struct HuggingFaceWeights: Codable, Sendable, Hashable {
    /// `owner/name` of the repository.
    public var repo: String
    /// A revision (branch, tag or commit); the default branch when absent.
    public var revision: String?
    /// Name of a tenant secret holding a token for private repositories (never the token itself).
    public var tokenSecret: String?

    /// Makes a weights reference.
    public init(repo: String, revision: String? = nil, tokenSecret: String? = nil) {
        self.repo = repo
        self.revision = revision
        self.tokenSecret = tokenSecret
    }

    private enum CodingKeys: String, CodingKey {
        case repo, revision
        case tokenSecret = "token_secret"
    }
}

/// Scaling settings, changeable while the deployment runs.
public struct DeploymentSettings: Codable, Sendable, Hashable {
    /// Copies to run at least.
    public var minInstances: Int
    /// Copies to scale up to under load.
    public var maxInstances: Int

    /// Makes settings.
    public init(minInstances: Int, maxInstances: Int) {
        self.minInstances = minInstances
        self.maxInstances = maxInstances
    }

    private enum CodingKeys: String, CodingKey {
        case minInstances = "min_instances"
        case maxInstances = "max_instances"
    }
}

/// A custom model deployment as `reference/custom-llm-deployments.txt` describes: the request
/// body of `POST /deploy` uses these field names.
public struct DeploymentSpec: Codable, Sendable, Hashable {
    /// The name used at inference time; the full name is `owner/model_name`.
    public var modelName: String
    /// The GPU type, a machine type name or alias (`A100-80GB`, `H100-80GB`, `GPU-H100`…).
    public var gpu: String
    /// GPUs per instance.
    public var numGPUs: Int
    /// Requests run in parallel per instance at most; the rest queue.
    public var maxBatchSize: Int
    /// The weights.
    public var hf: HuggingFaceWeights
    /// Size of the weights in GB when it can't be read off the repository name.
    public var weightsGB: Double?
    /// Scaling settings.
    public var settings: DeploymentSettings
    /// The image its instances run, fixed by the api-server at creation (its
    /// `deployment-image`), so every instance the autoscaler adds later runs the same one.
    /// Not part of the request body.
    public var servingImage: String?
    /// Whether its instances' node-agents fetch the weights into their weights caches and mount
    /// them at `/weights` (``ReplicaSpec/weights``), rather than the engine fetching `hf.repo`
    /// itself; fixed by the api-server at creation (its `deployment-weights` setting), like
    /// ``servingImage``. Not part of the request body.
    public var fetchWeights: Bool? = nil

    /// Makes a spec.
    public init(
        modelName: String, gpu: String, numGPUs: Int, maxBatchSize: Int, hf: HuggingFaceWeights,
        weightsGB: Double? = nil, settings: DeploymentSettings, servingImage: String? = nil
    ) {
        self.servingImage = servingImage
        self.modelName = modelName
        self.gpu = gpu
        self.numGPUs = numGPUs
        self.maxBatchSize = maxBatchSize
        self.hf = hf
        self.weightsGB = weightsGB
        self.settings = settings
    }

    private enum CodingKeys: String, CodingKey {
        case modelName = "model_name"
        case gpu
        case numGPUs = "num_gpus"
        case maxBatchSize = "max_batch_size"
        case hf
        case weightsGB = "weights_gb"
        case settings
        case servingImage = "serving_image"
        case fetchWeights = "fetch_weights"
    }
}

/// Where a deployment stands.
public struct DeploymentStatus: Codable, Sendable, Hashable {
    /// Lifecycle states of a deployment.
    public enum State: String, Codable, Sendable {
        case initializing, deploying, running, partial, stopped, failed, deleting
    }

    /// The state.
    public var state: State
    /// Instances running now (the only ones billed).
    public var instancesRunning: Int
    /// Instances wanted now (between min and max).
    public var instancesWanted: Int
    /// Why the rest wait, e.g. "2/3 running, waiting for capacity".
    public var message: String?
    /// Each instance's phase and loading stage (fetching weights with bytes, loading, ready,
    /// failed with the reason), by instance name; nil in statuses written before this field.
    public var instances: [DeploymentInstanceStatus]? = nil

    /// Makes a status.
    public init(
        state: State = .initializing, instancesRunning: Int = 0, instancesWanted: Int = 0,
        message: String? = nil
    ) {
        self.state = state
        self.instancesRunning = instancesRunning
        self.instancesWanted = instancesWanted
        self.message = message
    }

    private enum CodingKeys: String, CodingKey {
        case state
        case instancesRunning = "instances_running"
        case instancesWanted = "instances_wanted"
        case message
        case instances
    }
}

/// One instance of a deployment as its status shows it.
public struct DeploymentInstanceStatus: Codable, Sendable, Hashable {
    /// The replica's name (`deploy.<model_name>.<n>`).
    public var name: String
    /// Its phase.
    public var phase: ReplicaStatus.Phase
    /// Its node, once bound.
    public var node: String?
    /// Where it is with its weights and engine (``ReplicaStatus/loading``).
    public var loading: LoadingStatus?

    /// Makes an instance status.
    public init(name: String, phase: ReplicaStatus.Phase, node: String? = nil, loading: LoadingStatus? = nil) {
        self.name = name
        self.phase = phase
        self.node = node
        self.loading = loading
    }
}

/// A model deployment; its name is `model_name`, its tenant the owner, its full name `owner/model_name`.
public struct Deployment: Resource, Hashable {
    public static let kind = ResourceKind.deployment
    public var metadata: ObjectMeta
    public var spec: DeploymentSpec
    public var status: DeploymentStatus

    /// Makes a deployment.
    public init(metadata: ObjectMeta, spec: DeploymentSpec, status: DeploymentStatus = .init()) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    /// `owner/model_name`.
    public var fullName: String { "\(metadata.tenant)/\(spec.modelName)" }

    /// The deploy id returned on creation: the object's uid.
    public var deployID: String { metadata.uid }
}
