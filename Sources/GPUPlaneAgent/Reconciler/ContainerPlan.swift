#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore

/// The container a bound replica runs: its engine spec, the env contract, and the labels that
/// let a restarted agent find and adopt it.
public struct ContainerPlan: Sendable, Hashable {
    /// The label carrying `<tenant>/<name>` of the replica (``ContainerEngine/replicaLabelKey``).
    public static let replicaLabel = ContainerEngine.replicaLabelKey
    /// The label naming the node whose agent made the container.
    public static let nodeLabel = "gpuplane.io/node"
    /// The label carrying ``specHash``.
    public static let specHashLabel = "gpuplane.io/spec-hash"
    /// The env var with a Mode 1 container's first GPU, as the container numbers its GPUs:
    /// always `0` ("Your container gets NXL_GPU_INDEX=0"), whatever the host calls it.
    public static let gpuIndexVariable = "NXL_GPU_INDEX"
    /// The env var listing every GPU of a Mode 1 container as the container numbers them:
    /// `0,1,…,n-1`, in the order of the host's indices.
    public static let gpuIndicesVariable = "NXL_GPU_INDICES"
    /// The env var with a Mode 2/3 container's owner-scoped inference URL.
    public static let inferenceURLVariable = "NXL_INFERENCE_URL"
    /// The label naming the model server a container serves (model servers only).
    public static let modelServerLabel = "gpuplane.io/modelserver"
    /// The label carrying the host port a model server is published on.
    public static let hostPortLabel = "gpuplane.io/host-port"
    /// The label listing the GPU indices a container was given (`0,3`; empty for none), so the
    /// reconciler knows which GPUs a container it is stopping still uses.
    public static let gpusLabel = "gpuplane.io/gpus"
    /// The label naming the group of containers that may share their GPU (``gpuSharingGroup``).
    public static let gpuSharingLabel = "gpuplane.io/gpu-sharing"
    /// The label carrying the weights-cache address a container mounts (``weights``), so the
    /// cache never evicts weights an existing container uses, across agent restarts too.
    public static let weightsLabel = "gpuplane.io/weights"

    /// `<tenant>/<name>`: the replica's key and label value.
    public let replicaKey: String
    /// What the engine is asked for.
    public let spec: ContainerEngine.ContainerSpec
    /// A stable hash (FNV-1a 64, hex) of everything the container is made from; a container
    /// whose label differs is replaced.
    public let specHash: String
    /// For a model server, the container port its API listens on: published on a host port
    /// the reconciler picks when it creates the container (kept out of ``specHash``).
    public let servingPort: Int?
    /// For an application's pod with a `path`: the container port the api-server's ingress
    /// proxies to (``ReplicaSpec/ingressPort``), published on a host port like
    /// ``servingPort`` (kept out of ``specHash``'s port list); readiness is a TCP connect.
    public let ingressPort: Int?
    /// The weights the reconciler fetches (or finds) and mounts read-only at
    /// ``ServingWeights/mountPath`` before it creates the container (a model server's
    /// ``ModelServer/Serving/weights``, a deployment instance's ``ReplicaSpec/weights``); in
    /// ``specHash`` when set.
    public let weights: ServingWeights?

    /// The container port published on a host port, if any: the serving port, else the
    /// ingress port. The pod's other servicePorts are never published.
    public var publishedPort: Int? { servingPort ?? ingressPort }

    /// The key of a replica: `<tenant>/<name>`.
    public static func key(tenant: String, name: String) -> String { "\(tenant)/\(name)" }

    /// The key of `replica`.
    public static func key(_ replica: Replica) -> String { key(tenant: replica.metadata.tenant, name: replica.metadata.name) }

    /// The plan for `replica`, bound to `node`.
    ///
    /// The environment is the pod's vars, then the contract, which wins over them:
    /// for Mode 1, `NXL_GPU_INDEX` and `NXL_GPU_INDICES` (``containerGPUIndices(count:)``:
    /// the container's own numbering, never the host's), and for Mode 2/3 `NXL_INFERENCE_URL`
    /// (``InferenceEndpoint/url(gatewayBaseURL:tenant:slug:key:)``). The container gets exactly
    /// the bound GPUs (by host index) and no other device. It joins the
    /// engine's bridge network and publishes no host port, except a serving replica's
    /// (``ReplicaSpec/servingPort``: a deployment instance, which the gateway reaches there).
    ///
    /// With `podNetwork` (the node's pod network, ``PodNetwork``), an application's pod joins
    /// that engine network instead of the default bridge.
    ///
    /// With `limits` (``ContainerSizing/limits(for:)``: the replica's machine type's CPU and
    /// memory, CPU capped at the host's), the container gets them as engine limits.
    public init(
        replica: Replica, node: String, gatewayBaseURL: String, podNetwork: String? = nil,
        limits: ComputeResources? = nil
    ) {
        let tenant = replica.metadata.tenant
        let name = replica.metadata.name
        let key = Self.key(tenant: tenant, name: name)
        let indices = (replica.binding?.gpuIndices ?? []).sorted()
        var environment = replica.spec.env
        switch replica.spec.mode {
        case .dedicated:
            for (variable, value) in Self.gpuEnvironment(count: indices.count) { environment[variable] = value }
        case .largePinned, .sharedPinned:
            if let slug = replica.spec.modelSlug {
                environment[Self.inferenceURLVariable] = Self.inferenceURL(
                    gatewayBaseURL: gatewayBaseURL, tenant: tenant, slug: slug, key: replica.spec.inferenceKey)
            }
        case nil:
            break
        }
        var spec = ContainerEngine.ContainerSpec(
            name: Self.containerName(tenant: tenant, name: name), image: replica.spec.image, command: replica.spec.command,
            entrypoint: replica.spec.entrypoint, environment: environment, labels: [:], ports: [], gpuIndices: indices,
            network: .bridge)
        var hash = Self.hash(spec: spec, uid: replica.metadata.uid, ports: replica.spec.ports)
        if let ingress = replica.spec.ingressPort {
            // Only when there is one, so the hashes of containers without stay as they were.
            hash = Self.fnv1a(Data("\(hash)\ningress:\(ingress)".utf8))
        }
        if SecretEnvironment.needed(replica) {
            // The secret references and versions, never the values (see SecretEnvironment);
            // only when there are some, so the hashes of other containers stay as they were.
            hash = Self.fnv1a(Data("\(hash)\nsecrets:\(SecretEnvironment.hashText(replica))".utf8))
        }
        if let limits {
            // Only when there are some, so the hashes of containers without stay as they were.
            if limits.cpuMilli > 0 { spec.cpuLimitMilli = max(limits.cpuMilli, ContainerEngine.ContainerSpec.minimumCPUMilli) }
            if limits.memoryMB > 0 { spec.memoryLimitBytes = max(limits.memoryBytes, ContainerEngine.ContainerSpec.minimumMemoryBytes) }
            hash = Self.fnv1a(Data("\(hash)\nlimits:\(spec.cpuLimitMilli ?? 0)/\(spec.memoryLimitBytes ?? 0)".utf8))
        }
        if let shm = replica.spec.shmMiB, shm > 0 {
            // Only when there is one, so the hashes of containers without stay as they were.
            spec.shmSizeBytes = Int64(shm) << 20
            hash = Self.fnv1a(Data("\(hash)\nshm:\(shm)".utf8))
        }
        if let podNetwork, replica.spec.owner.kind == .application {
            spec.networkName = podNetwork
            hash = Self.fnv1a(Data("\(hash)\nnetwork:\(podNetwork)".utf8))
        }
        if let weights = replica.spec.weights {
            // Only when there are some, so the hashes of containers without stay as they were.
            hash = Self.fnv1a(Data("\(hash)\n\(Self.weightsHashText(weights))".utf8))
        }
        self.weights = replica.spec.weights
        spec.labels = [
            Self.replicaLabel: key, Self.nodeLabel: node, Self.specHashLabel: hash, Self.gpusLabel: Self.gpusLabelValue(indices),
        ]
        if replica.spec.owner.kind != .deployment,
            let group = Self.group(mode: replica.spec.mode, server: replica.binding?.modelServer)
        {
            spec.labels[Self.gpuSharingLabel] = group
        }
        self.replicaKey = key
        self.spec = spec
        self.specHash = hash
        self.servingPort = replica.spec.servingPort
        self.ingressPort = replica.spec.servingPort == nil ? replica.spec.ingressPort : nil
    }

    /// The plan for a model server bound to `node`, or nil when it says nothing of how to serve
    /// (no ``ModelServer/Spec/serving``).
    ///
    /// Its key is `_cluster/<name>` (tenants are DNS labels, so no replica's key can match). It
    /// runs the serving image with the catalog's arguments on exactly its GPU, with
    /// `GPUPLANE_MODEL_SLUG` and `GPUPLANE_MODEL_SERVER` set, on the bridge network.
    /// With `limits` (``ContainerSizing/limits(for:)``), the container gets them
    /// as engine limits.
    public init?(server: ModelServer, node: String, limits: ComputeResources? = nil) {
        guard let serving = server.spec.serving else { return nil }
        let name = server.metadata.name
        let key = Self.key(server)
        var spec = ContainerEngine.ContainerSpec(
            name: Self.containerName(tenant: ObjectMeta.clusterTenant, name: name), image: serving.image,
            command: serving.args.isEmpty ? nil : serving.args,
            environment: ["GPUPLANE_MODEL_SLUG": server.spec.slug, "GPUPLANE_MODEL_SERVER": name], labels: [:], ports: [],
            gpuIndices: (server.binding?.gpuIndices ?? []).sorted(), network: .bridge)
        var hash = Self.hash(spec: spec, uid: server.metadata.uid, ports: [serving.port])
        if let shm = serving.shmMiB, shm > 0 {
            // Only when there is one, so the hashes of servers without stay as they were.
            spec.shmSizeBytes = Int64(shm) << 20
            hash = Self.fnv1a(Data("\(hash)\nshm:\(shm)".utf8))
        }
        if let limits {
            if limits.cpuMilli > 0 { spec.cpuLimitMilli = max(limits.cpuMilli, ContainerEngine.ContainerSpec.minimumCPUMilli) }
            if limits.memoryMB > 0 { spec.memoryLimitBytes = max(limits.memoryBytes, ContainerEngine.ContainerSpec.minimumMemoryBytes) }
            hash = Self.fnv1a(Data("\(hash)\nlimits:\(spec.cpuLimitMilli ?? 0)/\(spec.memoryLimitBytes ?? 0)".utf8))
        }
        if let weights = serving.weights {
            // Only when there are some, so the hashes of servers without stay as they were.
            hash = Self.fnv1a(Data("\(hash)\n\(Self.weightsHashText(weights))".utf8))
        }
        self.weights = serving.weights
        spec.labels = [
            Self.replicaLabel: key, Self.nodeLabel: node, Self.specHashLabel: hash, Self.modelServerLabel: name,
            Self.gpusLabel: Self.gpusLabelValue(spec.gpuIndices),
        ]
        if let group = Self.group(mode: server.spec.mode, server: name) { spec.labels[Self.gpuSharingLabel] = group }
        self.replicaKey = key
        self.spec = spec
        self.specHash = hash
        self.servingPort = serving.port
        self.ingressPort = nil
    }

    /// What the spec hash covers of the weights: the source, file and token secret's name.
    static func weightsHashText(_ weights: ServingWeights) -> String {
        "weights:\(weights.source)|\(weights.file ?? "-")|\(weights.tokenSecret ?? "-")"
    }

    /// The key of a model server: `_cluster/<name>`.
    public static func key(_ server: ModelServer) -> String { key(tenant: ObjectMeta.clusterTenant, name: server.metadata.name) }

    /// The containers this one may share its GPUs with: those of the same group. `shared` for
    /// Mode 3 model servers (packed on one GPU by VRAM) and the replicas attached to them;
    /// `server:<name>` for a Mode 2 model server and the replicas bound to it. Nil for every
    /// other container: it needs its GPUs to itself.
    public var gpuSharingGroup: String? { spec.labels[Self.gpuSharingLabel] }

    static let sharedGroup = "shared"

    static func group(mode: GPUMode?, server: String?) -> String? {
        guard let server else { return nil }
        switch mode {
        case .sharedPinned: return sharedGroup
        case .largePinned: return "server:\(server)"
        case .dedicated, nil: return nil
        }
    }

    /// The value of ``gpusLabel`` for `indices`.
    public static func gpusLabelValue(_ indices: [Int]) -> String {
        indices.sorted().map(String.init).joined(separator: ",")
    }

    /// The GPU indices a ``gpusLabel`` value lists; nil when it is not such a list.
    public static func gpus(fromLabel value: String) -> Set<Int>? {
        guard !value.isEmpty else { return [] }
        var indices = Set<Int>()
        for part in value.split(separator: ",", omittingEmptySubsequences: false) {
            guard let index = Int(part), index >= 0 else { return nil }
            indices.insert(index)
        }
        return indices
    }

    /// The indices a container given `count` GPUs sees them at: `0…count-1`, its GPUs in the
    /// order of their host indices. Both engines inject only the bound GPUs (Docker's device
    /// request, Podman's CDI devices), and CUDA and NVML inside the container number what they
    /// see from 0, so a host index such as 5 would name no device there. For the same reason
    /// `CUDA_VISIBLE_DEVICES` is left unset: every GPU the container sees is its own, and a
    /// value a pod sets itself is read in this numbering.
    public static func containerGPUIndices(count: Int) -> [Int] { Array(0..<max(0, count)) }

    /// The GPU variables of a Mode 1 container given `count` GPUs: `NXL_GPU_INDEX` (its first
    /// GPU, `0`) and `NXL_GPU_INDICES` (all of them, `0,1,…`); none without a GPU.
    public static func gpuEnvironment(count: Int) -> [String: String] {
        let indices = containerGPUIndices(count: count)
        guard let first = indices.first else { return [:] }
        return [
            gpuIndexVariable: String(first),
            gpuIndicesVariable: indices.map(String.init).joined(separator: ","),
        ]
    }

    /// `NXL_INFERENCE_URL` for a tenant's model: see ``InferenceEndpoint``.
    public static func inferenceURL(gatewayBaseURL: String, tenant: String, slug: String, key: String?) -> String {
        InferenceEndpoint.url(gatewayBaseURL: gatewayBaseURL, tenant: tenant, slug: slug, key: key)
    }

    /// `gpuplane_<tenant>_<name>`, shortened with a hash when over the engines' 128 characters.
    /// Tenants and replica names never contain `_`, so the name is unique per replica.
    public static func containerName(tenant: String, name: String) -> String {
        let raw = "gpuplane_\(tenant)_\(name)"
        let cleaned = String(raw.map { $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) ? $0 : "-" })
        guard cleaned.count > 128 else { return cleaned }
        return String(cleaned.prefix(110)) + "_" + fnv1a(Data(raw.utf8))
    }

    static func hash(spec: ContainerEngine.ContainerSpec, uid: String, ports: [Int]) -> String {
        var text = "v1\n\(uid)\n\(spec.image)\n"
        text += "cmd:" + (spec.command.map { $0.joined(separator: "\u{1}") } ?? "-") + "\n"
        text += "ep:" + (spec.entrypoint.map { $0.joined(separator: "\u{1}") } ?? "-") + "\n"
        for (key, value) in spec.environment.sorted(by: { $0.key < $1.key }) { text += "env:\(key)=\(value)\u{1}" }
        text += "\ngpus:" + spec.gpuIndices.map(String.init).joined(separator: ",")
        text += "\nports:" + ports.map(String.init).joined(separator: ",")
        return fnv1a(Data(text.utf8))
    }

    /// FNV-1a 64 as 16 hex digits: stable across processes, unlike `Hasher`.
    static func fnv1a(_ data: Data) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
