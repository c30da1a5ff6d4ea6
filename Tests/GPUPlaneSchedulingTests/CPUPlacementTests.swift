import Foundation
import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// CPU pods and CPU/memory accounting: placement by CPU and memory, never overcommitted, the
/// refusal reasons, CPU-only nodes, GPU hosts lending only their spare.
@Suite struct CPUPlacementTests {
    /// A CPU-only node as a node-agent without NVML registers it.
    static func cpuNode(_ name: String, cpuMilli: Int, memoryMB: Int, ready: Bool = true, cordoned: Bool = false) -> Node {
        var spec = NodeSpec(machineType: "M", gpus: [], unschedulable: cordoned)
        spec.allocatableCPUMilli = cpuMilli
        spec.allocatableMemoryMB = memoryMB
        return Node(
            metadata: ObjectMeta(name: name, labels: [Node.nodeKindLabel: Node.cpuNodeKind, Node.machineTypeLabel: "M"]),
            spec: spec, status: NodeStatus(conditions: [Condition(type: "Ready", status: ready)]))
    }

    /// A GPU host with allocatable CPU and memory.
    static func gpuNode(_ name: String, gpus: Int, cpuMilli: Int, memoryMB: Int, mode: String = "dedicated") -> Node {
        var node = Fixture.node(name, mode: mode, type: "GPU-H100", gpus: gpus)
        node.spec.allocatableCPUMilli = cpuMilli
        node.spec.allocatableMemoryMB = memoryMB
        return node
    }

    /// A CPU pod's replica, sized by the planner from its machine type.
    static func cpuPod(_ name: String, type: String? = nil, binding: Binding? = nil) -> Replica {
        let pod = Pod(name: name, image: "img", machineTypes: type.map { [$0] } ?? [])
        let spec = ReplicaPlanner(catalog: Fixture.catalog).replicaSpec(
            for: pod, owner: OwnerReference(kind: .application, name: name, uid: "uid-\(name)"))
        return Replica(
            metadata: ObjectMeta(name: name, tenant: "acme", uid: "uid-\(name)"), spec: spec,
            binding: binding, status: ReplicaStatus(phase: binding == nil ? .pending : .running))
    }

    @Test func plannerSizesReplicasByMachineType() throws {
        let planner = ReplicaPlanner(catalog: Fixture.catalog)
        let owner = OwnerReference(kind: .application, name: "app", uid: "u")
        let s = planner.replicaSpec(for: Pod(name: "p", image: "i", machineTypes: ["S"]), owner: owner)
        #expect(s.cpuMilli == 1000 && s.memoryMB == 1024)
        let xs = planner.replicaSpec(for: Pod(name: "p", image: "i"), owner: owner)
        #expect(xs.cpuMilli == 500 && xs.memoryMB == 512)
        // Mode 3: the pod's own container is XS; the model server holds the GPU.
        let shared = planner.replicaSpec(
            for: Pod(name: "p", image: "i", gpu: GPUBlock(enabled: true, model: "llama-3.1-8b")), owner: owner)
        #expect(shared.mode == .sharedPinned && shared.cpuMilli == 500 && shared.memoryMB == 512)
        // Mode 1: the node's GPU machine type per GPU, resolved where it lands.
        let whole = planner.replicaSpec(
            for: Pod(name: "p", image: "i", gpu: GPUBlock(enabled: true, model: "custom", memoryGB: 80, count: 2)),
            owner: owner)
        #expect(whole.cpuMilli == nil && whole.memoryMB == nil)
        #expect(whole.resources(onNodeOf: "GPU-H100") == ComputeResources(cpuMilli: 24_000, memoryMB: 2 * 112 * 1024))
        #expect(whole.resources(onNodeOf: "H100-80GB") == ComputeResources(cpuMilli: 24_000, memoryMB: 2 * 112 * 1024))
    }

    @Test func replicaSpecsWithoutTheFieldsStillDecode() throws {
        // JSON of a replica spec written before cpuMilli/memoryMB existed.
        let spec = ReplicaSpec(
            owner: OwnerReference(kind: .application, name: "a", uid: "u"), role: "p", mode: nil, modelSlug: nil,
            gpus: 0, vramGB: 0, machineTypes: [], priority: .default, image: "i")
        var object = try #require(try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        object.removeValue(forKey: "cpuMilli")
        object.removeValue(forKey: "memoryMB")
        let decoded = try JSONDecoder().decode(ReplicaSpec.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(decoded.cpuMilli == nil)
        #expect(decoded.resources(onNodeOf: nil) == ComputeResources(cpuMilli: 500, memoryMB: 512))
    }

    @Test func cpuPodsGoToCPUOnlyNodesFirst() throws {
        var snapshot = Fixture.snapshot([
            Self.gpuNode("gpu-a", gpus: 1, cpuMilli: 64_000, memoryMB: 512 * 1024),
            Self.cpuNode("cpu-a", cpuMilli: 4000, memoryMB: 8192),
            Self.gpuNode("gpu-b", gpus: 1, cpuMilli: 64_000, memoryMB: 512 * 1024),
        ])
        let result = Fixture.pipeline.place(Fixture.request(Self.cpuPod("web", type: "S")), in: &snapshot)
        let placement = try #require(result.placement)
        #expect(placement.binding.node == "cpu-a")
        #expect(placement.binding.gpuIndices.isEmpty)
        #expect(snapshot.node(named: "cpu-a")?.allocated == ComputeResources(cpuMilli: 1000, memoryMB: 1024))
    }

    @Test func cpuPodsAreNeverOvercommitted() throws {
        var snapshot = Fixture.snapshot([Self.cpuNode("cpu-a", cpuMilli: 2000, memoryMB: 8192)])
        // 0.5 CPU each: four fit in 2 cores, the fifth doesn't.
        let pods = (0..<5).map { Self.cpuPod("p\($0)") }
        let result = Fixture.pipeline.placeBatch(pods, in: &snapshot)
        var bound = 0
        var refusals: [String] = []
        for entry in result.entries {
            switch entry.outcome {
            case .bound: bound += 1
            case .refused(let refusal): refusals.append(refusal.summary)
            default: Issue.record("unexpected \(entry.outcome)")
            }
        }
        #expect(bound == 4)
        #expect(refusals == ["0/1 nodes: 1 insufficient cpu"])
        #expect(snapshot.node(named: "cpu-a")?.allocated.cpuMilli == 2000)
    }

    @Test func refusalsNameCPUMemoryAndTheOtherReasons() {
        let snapshot = Fixture.snapshot([
            Self.cpuNode("a", cpuMilli: 8000, memoryMB: 1024),
            Self.cpuNode("b", cpuMilli: 8000, memoryMB: 2048),
            Self.cpuNode("c", cpuMilli: 8000, memoryMB: 64 * 1024, cordoned: true),
        ])
        // L: 4 CPUs and 15 GB.
        let result = Fixture.pipeline.evaluate(Fixture.request(Self.cpuPod("big", type: "L")), in: snapshot)
        #expect(result.refusal?.summary == "0/3 nodes: 2 insufficient memory, 1 node cordoned")
    }

    @Test func boundReplicasHoldTheirCPUAndMemory() throws {
        let node = Self.cpuNode("cpu-a", cpuMilli: 2000, memoryMB: 4096)
        let held = Self.cpuPod("held", type: "M", binding: Binding(node: "cpu-a", gpuIndices: []))
        var snapshot = Fixture.snapshot([node], replicas: [held])
        #expect(snapshot.node(named: "cpu-a")?.allocated == ComputeResources(cpuMilli: 2000, memoryMB: 2048))
        #expect(Fixture.pipeline.evaluate(Fixture.request(Self.cpuPod("more")), in: snapshot).refusal?.summary
            == "0/1 nodes: 1 insufficient cpu")
        snapshot.release(replica: "acme/held")
        #expect(snapshot.node(named: "cpu-a")?.allocated == .zero)
        #expect(Fixture.pipeline.place(Fixture.request(Self.cpuPod("more")), in: &snapshot).placement != nil)
    }

    @Test func cpuOnlyNodesTakeNoGPUWork() {
        let snapshot = Fixture.snapshot([Self.cpuNode("cpu-a", cpuMilli: 64_000, memoryMB: 1 << 20)])
        let result = Fixture.pipeline.evaluate(Fixture.dedicated(), in: snapshot)
        #expect(result.refusal?.summary == "0/1 nodes: 1 cpu-only node")
    }

    @Test func gpuHostsLendOnlyWhatTheirFreeGPUsLeave() throws {
        // Two H100s keep 2 × (12 CPUs, 112 GB); 30 CPUs and 300 GB leave 6 CPUs and 76 GB spare.
        var snapshot = Fixture.snapshot([Self.gpuNode("gpu-a", gpus: 2, cpuMilli: 30_000, memoryMB: 300 * 1024)])
        let xl = Fixture.pipeline.evaluate(Fixture.request(Self.cpuPod("xl", type: "XL")), in: snapshot)
        #expect(xl.refusal?.summary == "0/1 nodes: 1 insufficient cpu")
        let l = Fixture.pipeline.place(Fixture.request(Self.cpuPod("l", type: "L")), in: &snapshot)
        #expect(l.placement?.binding.node == "gpu-a")
        // The GPUs' work still fits: a 2-GPU Mode 1 replica takes 24 CPUs and 224 GB.
        let whole = Fixture.pipeline.place(Fixture.dedicated("whole", gpus: 2), in: &snapshot)
        #expect(whole.placement?.binding.gpuIndices.count == 2)
        #expect(snapshot.node(named: "gpu-a")?.allocated == ComputeResources(cpuMilli: 28_000, memoryMB: 239 * 1024))
    }

    @Test func modelServersKeepTheirGPUsShareFromCPUPods() throws {
        // One shared H100 with a Mode 3 server on it: 20 CPUs minus its 12 leave 8 for CPU pods.
        let node = Self.gpuNode("shr", gpus: 1, cpuMilli: 20_000, memoryMB: 200 * 1024, mode: "shared")
        let server = Fixture.server("llama-3.1-8b-shr-gpu0", slug: "llama-3.1-8b", node: "shr", gpu: 0, vramGB: 20)
        var snapshot = Fixture.snapshot([node], servers: [server])
        #expect(snapshot.node(named: "shr")?.freeWholeGPUs == 0)
        #expect(Fixture.pipeline.place(Fixture.request(Self.cpuPod("xl", type: "XL")), in: &snapshot).placement != nil)
        #expect(Fixture.pipeline.evaluate(Fixture.request(Self.cpuPod("s", type: "S")), in: snapshot).refusal?.summary
            == "0/1 nodes: 1 insufficient cpu")
        // A Mode 3 tenant still attaches: its XS comes out of the node's free CPU, not the server's share.
        #expect(Fixture.pipeline.place(Fixture.request(Fixture.shared("tenant")), in: &snapshot).placement != nil)
    }

    @Test func gpuReplicasNeedTheirShareOfCPUAndMemory() throws {
        // A host declaring 20 CPUs holds one H100 replica's 12, not two.
        var snapshot = Fixture.snapshot([Self.gpuNode("small", gpus: 2, cpuMilli: 20_000, memoryMB: 1 << 20)])
        #expect(Fixture.pipeline.place(Fixture.dedicated("one"), in: &snapshot).placement != nil)
        let second = Fixture.pipeline.evaluate(Fixture.dedicated("two"), in: snapshot)
        #expect(second.refusal?.summary == "0/1 nodes: 1 insufficient cpu")
        // Bound whole-GPU replicas are accounted from their node's machine type too.
        let bound = Fixture.replica("b", gpus: 1, binding: Binding(node: "small", gpuIndices: [0]), phase: .running)
        let rebuilt = Fixture.snapshot([Self.gpuNode("small", gpus: 2, cpuMilli: 20_000, memoryMB: 1 << 20)], replicas: [bound])
        #expect(rebuilt.node(named: "small")?.allocated == ComputeResources(cpuMilli: 12_000, memoryMB: 112 * 1024))
    }

    @Test func aNodeOutOfGPUsSaysSoRatherThanCPU() throws {
        // Allocatable exactly its GPUs' share, as an agent on a small host with fake GPUs reports.
        var snapshot = Fixture.snapshot([Self.gpuNode("gpu-a", gpus: 1, cpuMilli: 12_000, memoryMB: 112 * 1024)])
        #expect(Fixture.pipeline.place(Fixture.dedicated("one"), in: &snapshot).placement != nil)
        #expect(Fixture.pipeline.evaluate(Fixture.dedicated("two"), in: snapshot).refusal?.summary
            == "0/1 nodes: 1 not enough free GPUs")
        // A CPU pod finds nothing spare there either.
        #expect(Fixture.pipeline.evaluate(Fixture.request(Self.cpuPod("web")), in: snapshot).refusal?.summary
            == "0/1 nodes: 1 insufficient cpu")
    }

    @Test func nodesReportingNoAllocatableAreNotAccounted() throws {
        // Old agents and benchmark hollow nodes: CPU and memory always fit.
        var snapshot = Fixture.snapshot([Fixture.node("gpu-a", gpus: 1)])
        for i in 0..<50 {
            #expect(Fixture.pipeline.place(Fixture.request(Self.cpuPod("p\(i)", type: "XL")), in: &snapshot).placement != nil)
        }
        #expect(Fixture.pipeline.place(Fixture.dedicated(), in: &snapshot).placement != nil)
    }

    @Test func cpuPodsDoNotPreempt() {
        let node = Self.cpuNode("cpu-a", cpuMilli: 1000, memoryMB: 4096)
        var low = Self.cpuPod("low", type: "S", binding: Binding(node: "cpu-a", gpuIndices: []))
        low.spec.priority = .batch
        let snapshot = Fixture.snapshot([node], replicas: [low])
        var high = Fixture.request(Self.cpuPod("high", type: "S"))
        high.priority = .inference
        #expect(Fixture.pipeline.preemption(for: high, in: snapshot) == nil)
    }
}
