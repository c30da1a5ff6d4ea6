import GPUPlaneCore
import GPUPlaneSystem

/// The CPU and memory limits of this node's containers: each replica's
/// ``ReplicaSpec/resources(onNodeOf:in:)`` on the node's machine type (the same sizing the
/// scheduler accounts), with the CPU capped at the host's CPUs, which engines refuse to exceed
/// (a GPU-H100 replica's 12 CPUs on a smaller host get the host's CPUs; memory limits above
/// the host's memory are accepted and kept). The machine type is learnt at registration.
public final class ContainerSizing: Sendable {
    private let state: Locked<State>
    private let table: MachineTypeTable

    private struct State {
        var machineType: String?
        var hostCPUMilli: Int
    }

    /// Sizing on a host of `hostCPUMilli` CPUs (``HostCapacity/read()``'s), before registration.
    public init(hostCPUMilli: Int, machineTypes: MachineTypeTable = .standard) {
        state = Locked(State(machineType: nil, hostCPUMilli: hostCPUMilli))
        table = machineTypes
    }

    /// The node's machine type, as registered.
    public var machineType: String? {
        get { state.withLock { $0.machineType } }
        set { state.withLock { $0.machineType = newValue } }
    }

    /// The limits of `replica`'s container; nil when it has none (a whole-GPU replica before
    /// the node's type is known, or on a type outside the table).
    public func limits(for replica: Replica) -> ComputeResources? {
        let (type, hostCPU) = state.withLock { ($0.machineType, $0.hostCPUMilli) }
        if replica.spec.holdsWholeGPUs, replica.spec.cpuMilli == nil, type == nil { return nil }
        var size = replica.spec.resources(onNodeOf: type, in: table)
        guard size != .zero else { return nil }
        if hostCPU > 0 { size.cpuMilli = min(size.cpuMilli, hostCPU) }
        return size
    }

    /// The limits of a model server's container: its node's GPU machine type's CPU and memory
    /// for its GPU (a whole-GPU share, as a Mode 1 replica of one GPU gets); nil before
    /// registration or on a type outside the table. The scheduler keeps that share from CPU
    /// pods rather than accounting it (docs/architecture.md, "CPU and memory").
    public func limits(for server: ModelServer) -> ComputeResources? {
        let (type, hostCPU) = state.withLock { ($0.machineType, $0.hostCPUMilli) }
        guard let gpuType = type.flatMap({ table.named($0) }), gpuType.family == .gpu else { return nil }
        var size = ComputeResources(gpuType).times(max(1, server.binding?.gpuIndices.count ?? 1))
        if hostCPU > 0 { size.cpuMilli = min(size.cpuMilli, hostCPU) }
        return size
    }
}
