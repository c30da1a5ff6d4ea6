import Foundation
@testable import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// Machine-type CPU and memory as engine limits, read back from the container's own cgroup
/// files (cgroup v1: cpu.cfs_quota_us, memory.limit_in_bytes; v2: cpu.max, memory.max), and
/// what a node registers with.
@Suite("Container CPU and memory limits", .enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct ContainerLimitsTests {
    /// Prints the container's CPU quota and period and memory limit, whichever cgroup version.
    static let printLimits = [
        "sh", "-c",
        """
        if [ -f /sys/fs/cgroup/cpu.max ]; then
          set -- $(cat /sys/fs/cgroup/cpu.max); echo "QUOTA=$1"; echo "PERIOD=$2"; echo "MEMORY=$(cat /sys/fs/cgroup/memory.max)"
        else
          d=/sys/fs/cgroup/cpu; [ -f $d/cpu.cfs_quota_us ] || d=/sys/fs/cgroup/cpu,cpuacct
          echo "QUOTA=$(cat $d/cpu.cfs_quota_us)"; echo "PERIOD=$(cat $d/cpu.cfs_period_us)"
          echo "MEMORY=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
        fi
        sleep 1000
        """,
    ]

    /// The QUOTA, PERIOD and MEMORY lines of the replica's container.
    static func limits(_ world: AgentWorld, _ name: String) async throws -> [String: String] {
        var values: [String: String] = [:]
        // 60 s (× the time scale): a loaded full run took over 90 s to start the container.
        try await eventually("\(name) printed its limits", timeout: 60) {
            guard let id = try await world.containers(of: name).first?.id else { return false }
            values = [:]
            for line in try await world.output(id) {
                let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                if parts.count == 2, ["QUOTA", "PERIOD", "MEMORY"].contains(parts[0]) { values[parts[0]] = parts[1] }
            }
            return values.count == 3
        }
        return values
    }

    /// A pending replica of `world`, then bound with the spec the planner would make.
    static func place(_ world: AgentWorld, _ name: String, mode: GPUMode?, gpus: [Int], size: MachineType?) async throws {
        try await world.createReplica(name, mode: mode, gpus: gpus, command: printLimits, bound: false)
        try await world.updateReplica(name) {
            $0.spec.cpuMilli = size?.cpuMilli
            $0.spec.memoryMB = size?.ramMB
            $0.binding = Binding(node: world.node, gpuIndices: gpus)
            $0.status.phase = .bound
        }
    }

    @Test("a host without NVML registers as a CPU node with its allocatable, and a CPU pod gets its machine type's limits")
    func cpuNodeAndCPUPodLimits() async throws {
        try await withAgentWorld { world in
            world.startAgent(nvmlPath: "/nonexistent/libnvidia-ml.so.1")
            try await eventually("registered") { (try? await world.node()) != nil }
            let node = try await world.node()
            #expect(node.metadata.labels[Node.nodeKindLabel] == Node.cpuNodeKind)
            #expect(node.metadata.labels[Node.gpuModeLabel] == nil)
            #expect(node.spec.gpus.isEmpty)
            let host = HostCapacity.read()
            #expect(node.spec.allocatableCPUMilli == host.cpuMilli - 100)
            #expect(node.spec.allocatableMemoryMB == host.memoryMB - 256)
            let type = try #require(MachineTypeTable.standard.named(node.spec.machineType))
            #expect(type.family == .cpu)
            #expect(type.cpuMilli <= host.cpuMilli && type.ramMB <= host.memoryMB)

            // XS: half a CPU (50 ms per 100 ms) and 512 MB.
            try await Self.place(world, "xs", mode: nil, gpus: [], size: MachineTypeTable.standard.named("XS"))
            let limits = try await Self.limits(world, "xs")
            #expect(limits["QUOTA"] == "50000")
            #expect(limits["PERIOD"] == "100000")
            #expect(limits["MEMORY"] == "\(512 * 1024 * 1024)")
        }
    }

    @Test("a GPU-H100 replica gets 12 CPUs (capped at the host's) and 112 GB per GPU; a configured allocatable is reported")
    func gpuReplicaLimitsAndConfiguredAllocatable() async throws {
        try await withAgentWorld(gpus: 2) { world in
            world.startAgent(configure: {
                $0.allocatableCPUMilli = 30_000
                $0.allocatableMemoryMB = 300 * 1024
            })
            try await eventually("registered with 2 GPUs") { (try? await world.node())?.spec.gpus.count == 2 }
            let node = try await world.node()
            #expect(node.spec.machineType == "GPU-H100")
            #expect(node.spec.allocatableCPUMilli == 30_000)
            #expect(node.spec.allocatableMemoryMB == 300 * 1024)
            #expect(node.metadata.labels[Node.nodeKindLabel] == nil)

            try await Self.place(world, "trainer", mode: .dedicated, gpus: [0, 1], size: nil)
            let limits = try await Self.limits(world, "trainer")
            let hostCPUs = HostCapacity.read().cpuMilli
            #expect(limits["QUOTA"] == "\(min(24_000, hostCPUs) * 100)")
            #expect(limits["MEMORY"] == "\(Int64(2 * 112 * 1024) * 1024 * 1024)")
        }
    }

    @Test func createBodiesCarryTheLimits() throws {
        var spec = ContainerEngine.ContainerSpec(name: "c", image: "i", memoryLimitBytes: 512 << 20)
        spec.cpuLimitMilli = 1500
        try spec.validate()
        let libpod = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(LibpodCreate(spec, labels: [:], cdiKind: "nvidia.com/gpu"))) as? [String: Any]
        let limits = libpod?["resource_limits"] as? [String: Any]
        let cpu = limits?["cpu"] as? [String: Any]
        #expect(cpu?["quota"] as? Int == 150_000)
        #expect(cpu?["period"] as? Int == 100_000)
        #expect((limits?["memory"] as? [String: Any])?["limit"] as? Int == 512 << 20)
        let docker = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(spec, labels: [:]))) as? [String: Any]
        #expect((docker?["HostConfig"] as? [String: Any])?["NanoCpus"] as? Int == 1_500_000_000)
        spec.cpuLimitMilli = 5
        #expect(throws: EngineError.self) { try spec.validate() }
    }

    @Test func planLimitsComeFromTheSizing() throws {
        let sizing = ContainerSizing(hostCPUMilli: 2000)
        let owner = OwnerReference(kind: .application, name: "a", uid: "u")
        var cpuPod = Replica(
            metadata: ObjectMeta(name: "a.web", tenant: "t", uid: "u1"),
            spec: ReplicaSpec(owner: owner, role: "web", mode: nil, modelSlug: nil, gpus: 0, vramGB: 0, machineTypes: ["L"], priority: .default, image: "i"))
        cpuPod.spec.cpuMilli = 4000
        cpuPod.spec.memoryMB = 15 * 1024
        // L's 4 CPUs capped at the host's 2; its 15 GB kept.
        #expect(sizing.limits(for: cpuPod) == ComputeResources(cpuMilli: 2000, memoryMB: 15 * 1024))
        let whole = Replica(
            metadata: ObjectMeta(name: "a.train", tenant: "t", uid: "u2"),
            spec: ReplicaSpec(owner: owner, role: "train", mode: .dedicated, modelSlug: nil, gpus: 1, vramGB: 80, machineTypes: [], priority: .default, image: "i"))
        #expect(sizing.limits(for: whole) == nil, "the node's type is not known before registration")
        sizing.machineType = "GPU-L40"
        #expect(sizing.limits(for: whole) == ComputeResources(cpuMilli: 2000, memoryMB: 100 * 1024))
        let plan = ContainerPlan(replica: whole, node: "n", gatewayBaseURL: "http://gw", limits: sizing.limits(for: whole))
        #expect(plan.spec.cpuLimitMilli == 2000)
        #expect(plan.spec.memoryLimitBytes == Int64(100 * 1024) << 20)
        let unlimited = ContainerPlan(replica: whole, node: "n", gatewayBaseURL: "http://gw")
        #expect(unlimited.specHash != plan.specHash)
        // A model server: its GPU's share.
        let server = ModelServer(
            metadata: ObjectMeta(name: "srv"),
            spec: .init(slug: "llama-3.1-8b", mode: .sharedPinned, vramGB: 20),
            binding: Binding(node: "n", gpuIndices: [0]))
        #expect(sizing.limits(for: server) == ComputeResources(cpuMilli: 2000, memoryMB: 100 * 1024))
    }

    @Test func quantitiesParse() {
        #expect(ResourceQuantity.cpuMilli("2") == 2000)
        #expect(ResourceQuantity.cpuMilli("1.5") == 1500)
        #expect(ResourceQuantity.cpuMilli("500m") == 500)
        #expect(ResourceQuantity.cpuMilli("two") == nil)
        #expect(ResourceQuantity.memoryMB("4096") == 4096)
        #expect(ResourceQuantity.memoryMB("512Mi") == 512)
        #expect(ResourceQuantity.memoryMB("16Gi") == 16 * 1024)
        #expect(ResourceQuantity.memoryMB("1T") == 1024 * 1024)
        #expect(ResourceQuantity.memoryMB("lots") == nil)
    }

    @Test func gpuHostsOfferAtLeastTheirTypesShare() {
        let configuration = NodeAgentConfiguration(nodeName: "n", gpuMode: "dedicated", gatewayBaseURL: "http://gw")
        let h100 = MachineTypeTable.standard.named("GPU-H100")
        let small = HostCapacity(cpuMilli: 2000, memoryMB: 8192)
        #expect(configuration.allocatable(capacity: small, gpuType: h100, gpus: 8)
            == ComputeResources(cpuMilli: 96_000, memoryMB: 8 * 112 * 1024))
        #expect(configuration.allocatable(capacity: small, gpuType: nil, gpus: 0)
            == ComputeResources(cpuMilli: 1900, memoryMB: 8192 - 256))
        let big = HostCapacity(cpuMilli: 128_000, memoryMB: 2 << 20)
        #expect(configuration.allocatable(capacity: big, gpuType: h100, gpus: 1)
            == ComputeResources(cpuMilli: 127_900, memoryMB: (2 << 20) - 256))
    }
}
