/// Turns what users ask for (applications, deployments) into the Replicas the scheduler places.
/// Pure: the api-server writes what it returns in the same transaction as the owner.
public struct ReplicaPlanner: Sendable {
    /// The catalog that fixes modes and footprints.
    public let catalog: Catalog
    /// The machine types.
    public let machineTypes: MachineTypeTable
    /// The image custom LLM deployments run: vLLM's server (``VLLM/image``) unless the operator
    /// set another (`deployment-image`), which must take `vllm serve`'s arguments.
    public let deploymentImage: String

    /// Makes a planner.
    public init(catalog: Catalog, machineTypes: MachineTypeTable = .standard, deploymentImage: String = VLLM.image) {
        self.catalog = catalog
        self.machineTypes = machineTypes
        self.deploymentImage = deploymentImage
    }

    /// The replica name of an application's pod: `<app>.<pod>` (a dot never appears in DNS
    /// labels, so names of different applications never collide).
    public static func replicaName(application: String, pod: String) -> String { replicaPrefix(application: application) + pod }

    /// The replica name of a deployment's instance: `deploy.<model_name>.<index>`.
    public static func replicaName(deployment: String, index: Int) -> String { replicaPrefix(deployment: deployment) + "\(index)" }

    /// The prefix every replica name of an application starts with.
    public static func replicaPrefix(application: String) -> String { "\(application)." }

    /// The prefix every replica name of a deployment starts with.
    public static func replicaPrefix(deployment: String) -> String { "deploy.\(deployment)." }

    /// One replica per pod of `application`, unbound.
    public func replicas(for application: Application) -> [Replica] {
        let owner = OwnerReference(kind: .application, name: application.metadata.name, uid: application.metadata.uid)
        return application.spec.pods.map { pod in
            let spec = replicaSpec(for: pod, owner: owner)
            let meta = ObjectMeta(
                name: ReplicaPlanner.replicaName(application: application.metadata.name, pod: pod.name),
                tenant: application.metadata.tenant,
                labels: ["gpuplane.io/application": application.metadata.name, "gpuplane.io/pod": pod.name])
            return Replica(metadata: meta, spec: spec)
        }
    }

    /// What one pod needs.
    public func replicaSpec(for pod: Pod, owner: OwnerReference) -> ReplicaSpec {
        var mode: GPUMode?
        var slug: String?
        var gpus = 0
        var vram = 0
        if let gpu = pod.gpu, gpu.enabled == true, let model = gpu.model {
            if model == Catalog.custom {
                mode = .dedicated
                gpus = gpu.count ?? 1
                vram = gpu.memoryGB ?? 0
            } else {
                let entry = model == Catalog.auto ? catalog.autoModel : catalog.model(model)
                slug = entry?.slug
                mode = entry?.mode
                vram = entry?.vramGB ?? 0
                if entry?.mode == .largePinned {
                    gpus = 1
                    vram = max(vram, 96)
                }
            }
        }
        var spec = ReplicaSpec(
            owner: owner, role: pod.name, mode: mode, modelSlug: slug, gpus: gpus, vramGB: vram,
            machineTypes: pod.machineTypes, priority: pod.gpu?.effectivePriority ?? .default, image: pod.image,
            env: pod.vars, ports: pod.servicePorts, entrypoint: pod.entrypoint, command: pod.command,
            ingressPort: Self.ingressPort(of: pod))
        if let secretVars = pod.secretVars, !secretVars.isEmpty { spec.secretEnv = secretVars }
        // CPU and memory: a CPU pod's first CPU type (XS by default); a Mode 2/3 pod's own
        // container (the model server holds the GPU) is XS; whole-GPU pods take their node's
        // GPU type per GPU, resolved where they land (ReplicaSpec.resources(onNodeOf:in:)).
        if !spec.holdsWholeGPUs, let size = machineTypes.cpuType(named: mode == nil ? pod.machineTypes : []) {
            spec.cpuMilli = size.cpuMilli
            spec.memoryMB = size.ramMB
        }
        return spec
    }

    /// The container port a pod's `path` serves: its first servicePort; nil for a pod without
    /// a path (its servicePorts stay private to the application).
    public static func ingressPort(of pod: Pod) -> Int? {
        pod.path == nil ? nil : pod.servicePorts.first
    }

    /// The replica of instance `index` of `deployment`: whole GPUs of the deployment's type on a
    /// dedicated node, serving the weights with the deployment's image (else ``deploymentImage``).
    public func replica(for deployment: Deployment, index: Int) -> Replica {
        let spec = deployment.spec
        let type = machineTypes.named(spec.gpu)
        let owner = OwnerReference(kind: .deployment, name: deployment.metadata.name, uid: deployment.metadata.uid)
        // The node-agent fetches the weights when the deployment says so; the engine otherwise.
        let weights = spec.fetchWeights == true
            ? (try? WeightsSource.parse(spec.hf.repo, revision: spec.hf.revision)).map {
                ServingWeights(source: $0.description, tokenSecret: spec.hf.tokenSecret)
            }
            : nil
        let args = ServingCommand.deploymentArguments(
            spec, servedName: deployment.fullName, port: 8000, weightsPath: weights?.enginePath)
        var replicaSpec = ReplicaSpec(
            owner: owner, role: "\(index)", mode: .dedicated, modelSlug: nil, gpus: spec.numGPUs,
            vramGB: type?.vramGB ?? 0, machineTypes: [type?.name ?? spec.gpu], priority: .inference,
            image: spec.servingImage ?? deploymentImage, env: [:], ports: [8000], entrypoint: nil, command: args,
            servingPort: 8000)
        replicaSpec.shmMiB = ServingCommand.shmMiB(engine: .vllm, gpus: spec.numGPUs)
        replicaSpec.weights = weights
        if let secret = spec.hf.tokenSecret {
            // The token reaches the node-agent (to fetch) and the engine (huggingface_hub reads
            // HF_TOKEN) as a secret var: its value only when the container is made.
            replicaSpec.secretEnv = [ServingWeights.tokenVariable: SecretReference(secret: secret)]
        }
        let meta = ObjectMeta(
            name: ReplicaPlanner.replicaName(deployment: deployment.metadata.name, index: index),
            tenant: deployment.metadata.tenant,
            labels: ["gpuplane.io/deployment": deployment.metadata.name, "gpuplane.io/instance": "\(index)"])
        return Replica(metadata: meta, spec: replicaSpec)
    }

    /// Whole GPUs the replicas hold against the per-user limit.
    public static func wholeGPUs(_ replicas: [Replica]) -> Int {
        replicas.reduce(0) { $0 + $1.spec.gpus }
    }
}
