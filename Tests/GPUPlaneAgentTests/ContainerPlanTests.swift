import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import Testing

/// The container a replica becomes: names, labels, the env contract, the spec hash.
struct ContainerPlanTests {
    func replica(mode: GPUMode?, slug: String? = nil, gpus: [Int], env: [String: String] = [:], uid: String = "u1") -> Replica {
        Replica(
            metadata: ObjectMeta(name: "app.api", tenant: "acme", uid: uid),
            spec: ReplicaSpec(
                owner: OwnerReference(kind: .application, name: "app", uid: "a"), role: "api", mode: mode, modelSlug: slug,
                gpus: gpus.count, vramGB: 0, machineTypes: [], priority: .inference, image: "myorg/api:v1", env: env),
            binding: Binding(node: "gpu-1", gpuIndices: gpus))
    }

    @Test func modeOneGetsItsGPUIndicesAndNoInferenceURL() {
        let plan = ContainerPlan(replica: replica(mode: .dedicated, gpus: [5, 1], env: ["NXL_GPU_INDEX": "7", "A": "b"]), node: "gpu-1", gatewayBaseURL: "http://gw")
        // The engine is given the host's GPUs; the container numbers them from 0.
        #expect(plan.spec.gpuIndices == [1, 5])
        #expect(plan.spec.environment == ["NXL_GPU_INDEX": "0", "NXL_GPU_INDICES": "0,1", "A": "b"])
        #expect(plan.spec.name == "gpuplane_acme_app.api")
        #expect(plan.spec.labels[ContainerPlan.replicaLabel] == "acme/app.api")
        #expect(plan.spec.labels[ContainerPlan.nodeLabel] == "gpu-1")
        #expect(plan.spec.labels[ContainerPlan.specHashLabel] == plan.specHash)
        #expect(throws: Never.self) { try plan.spec.validate() }
    }

    /// "Your container gets NXL_GPU_INDEX=0": the index inside the container, whatever the
    /// host's index of the GPU (CUDA there sees only its own GPUs, from 0); no
    /// CUDA_VISIBLE_DEVICES with a host index that would hide them.
    @Test(arguments: [[0], [3], [7], [2, 6], [4, 5, 6, 7]])
    func modeOneSeesItsGPUsNumberedFromZero(gpus: [Int]) {
        let plan = ContainerPlan(replica: replica(mode: .dedicated, gpus: gpus), node: "gpu-1", gatewayBaseURL: "http://gw")
        #expect(plan.spec.gpuIndices == gpus)
        #expect(plan.spec.environment["NXL_GPU_INDEX"] == "0")
        #expect(plan.spec.environment["NXL_GPU_INDICES"] == (0..<gpus.count).map(String.init).joined(separator: ","))
        #expect(plan.spec.environment["CUDA_VISIBLE_DEVICES"] == nil)
        #expect(ContainerPlan.gpuEnvironment(count: 0).isEmpty)
    }

    @Test func modesTwoAndThreeGetTheOwnerScopedInferenceURL() {
        for mode in [GPUMode.sharedPinned, .largePinned] {
            var keyed = replica(mode: mode, slug: "llama-3.3-70b", gpus: [])
            keyed.spec.inferenceKey = "k3y"
            let plan = ContainerPlan(replica: keyed, node: "n", gatewayBaseURL: "https://gw.example/")
            #expect(plan.spec.environment["NXL_INFERENCE_URL"] == "https://gw.example/v1/inference/acme/llama-3.3-70b/k3y/v1")
            #expect(plan.spec.environment["NXL_GPU_INDEX"] == nil)
        }
        // A replica admitted before keys existed gets a URL the gateway refuses with the fix.
        let old = ContainerPlan(replica: replica(mode: .sharedPinned, slug: "phi-3.5-mini", gpus: []), node: "n", gatewayBaseURL: "http://gw")
        #expect(old.spec.environment["NXL_INFERENCE_URL"] == "http://gw/v1/inference/acme/phi-3.5-mini/no-key/v1")
        let cpu = ContainerPlan(replica: replica(mode: nil, gpus: []), node: "n", gatewayBaseURL: "http://gw")
        #expect(cpu.spec.environment.isEmpty)
    }

    @Test func specHashIsStableAndFollowsWhatMatters() {
        let a = ContainerPlan(replica: replica(mode: .dedicated, gpus: [1]), node: "n", gatewayBaseURL: "http://gw")
        let same = ContainerPlan(replica: replica(mode: .dedicated, gpus: [1]), node: "n", gatewayBaseURL: "http://gw")
        #expect(a.specHash == same.specHash)
        #expect(a.specHash.count == 16)
        #expect(ContainerPlan(replica: replica(mode: .dedicated, gpus: [2]), node: "n", gatewayBaseURL: "http://gw").specHash != a.specHash)
        #expect(ContainerPlan(replica: replica(mode: .dedicated, gpus: [1], env: ["X": "1"]), node: "n", gatewayBaseURL: "http://gw").specHash != a.specHash)
        #expect(ContainerPlan(replica: replica(mode: .dedicated, gpus: [1], uid: "u2"), node: "n", gatewayBaseURL: "http://gw").specHash != a.specHash)
    }

    @Test func longNamesStayValid() {
        let name = String(repeating: "a", count: 60) + "." + String(repeating: "b", count: 60)
        let container = ContainerPlan.containerName(tenant: String(repeating: "t", count: 40), name: name)
        #expect(container.count <= 128)
        #expect(container != ContainerPlan.containerName(tenant: String(repeating: "t", count: 40), name: name + "c"))
    }

    /// The labels the reconciler reads to know which GPUs a container uses and with whom it may
    /// share them (issue 12, item 4).
    @Test func gpuLabelsSayWhichGPUsAndWhoMayShareThem() throws {
        let raw = ContainerPlan(replica: replica(mode: .dedicated, gpus: [5, 1]), node: "n", gatewayBaseURL: "http://gw")
        #expect(raw.spec.labels[ContainerPlan.gpusLabel] == "1,5")
        #expect(raw.gpuSharingGroup == nil)
        #expect(ContainerPlan.gpus(fromLabel: "1,5") == [1, 5])
        #expect(ContainerPlan.gpus(fromLabel: "") == [])
        #expect(ContainerPlan.gpus(fromLabel: "1,x") == nil)

        var attached = replica(mode: .sharedPinned, slug: "phi-3.5-mini", gpus: [0])
        attached.binding?.modelServer = "phi-a"
        #expect(ContainerPlan(replica: attached, node: "n", gatewayBaseURL: "http://gw").gpuSharingGroup == "shared")
        var large = replica(mode: .largePinned, slug: "llama-3.3-70b", gpus: [2])
        large.binding?.modelServer = "big"
        #expect(ContainerPlan(replica: large, node: "n", gatewayBaseURL: "http://gw").gpuSharingGroup == "server:big")

        let serving = ModelServer.Serving(image: "vllm", args: [], port: 8000)
        let shared = try #require(ContainerPlan(
            server: ModelServer(metadata: ObjectMeta(name: "phi-a"), spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 8, serving: serving),
                                binding: Binding(node: "n", gpuIndices: [0])), node: "n"))
        #expect(shared.gpuSharingGroup == "shared")
        #expect(shared.spec.labels[ContainerPlan.gpusLabel] == "0")
        let dedicatedServer = try #require(ContainerPlan(
            server: ModelServer(metadata: ObjectMeta(name: "big"), spec: .init(slug: "llama-3.3-70b", mode: .largePinned, vramGB: 96, serving: serving),
                                binding: Binding(node: "n", gpuIndices: [2])), node: "n"))
        #expect(dedicatedServer.gpuSharingGroup == "server:big")
    }
}
