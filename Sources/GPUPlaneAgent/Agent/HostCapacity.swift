#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// The host's CPU and memory, as the node-agent reports them (``NodeSpec/allocatableCPUMilli``,
/// ``NodeSpec/allocatableMemoryMB``) and caps container limits with.
///
/// - CPU: the host's online CPUs (`sysconf`), lowered
///   to the agent's cgroup CPU quota when there is one (`cpu.max` on cgroup v2,
///   `cpu.cfs_quota_us`/`cpu.cfs_period_us` on v1).
/// - Memory: `MemTotal` of `/proc/meminfo`, lowered to the agent's cgroup memory limit when
///   there is one (`memory.max` on v2, `memory.limit_in_bytes` on v1).
public struct HostCapacity: Sendable, Hashable {
    /// CPU in thousandths of a core.
    public var cpuMilli: Int
    /// Memory in MB (MiB).
    public var memoryMB: Int

    /// Makes a capacity.
    public init(cpuMilli: Int, memoryMB: Int) {
        self.cpuMilli = cpuMilli
        self.memoryMB = memoryMB
    }

    /// The capacity of this host, read now.
    public static func read() -> HostCapacity {
        var cpu = onlineCPUs() * 1000
        if let quota = cgroupCPUQuotaMilli(), quota > 0 { cpu = min(cpu, quota) }
        var memory = memTotalMB() ?? 0
        if let limit = cgroupMemoryLimitMB(), limit > 0 { memory = memory > 0 ? min(memory, limit) : limit }
        return HostCapacity(cpuMilli: cpu, memoryMB: memory)
    }

    /// CPUs this process may use.
    static func onlineCPUs() -> Int {
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// The cgroup CPU quota of this process in thousandths of a core; nil when unlimited.
    static func cgroupCPUQuotaMilli() -> Int? {
        if let v2 = readFile("/sys/fs/cgroup/cpu.max") {
            let parts = v2.split(separator: " ")
            guard parts.count == 2, let quota = Int(parts[0]), let period = Int(parts[1]), period > 0 else { return nil }
            return quota * 1000 / period
        }
        guard let quota = readFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").flatMap({ Int($0) }), quota > 0,
            let period = readFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us").flatMap({ Int($0) }), period > 0
        else { return nil }
        return quota * 1000 / period
    }

    /// The cgroup memory limit of this process in MB; nil when unlimited.
    static func cgroupMemoryLimitMB() -> Int? {
        let text = readFile("/sys/fs/cgroup/memory.max") ?? readFile("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        guard let text, let bytes = Int64(text), bytes > 0, bytes < Int64(1) << 60 else { return nil }
        return Int(bytes / (1024 * 1024))
    }

    /// `MemTotal` in MB.
    static func memTotalMB() -> Int? {
        guard let text = readFile("/proc/meminfo") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, let kB = Int(fields[1]) { return kB / 1024 }
        }
        return nil
    }

    private static func readFile(_ path: String) -> String? {
        guard let text = try? SystemFile.readText(path) else { return nil }
        let trimmed = text.trimmingWhitespace()
        return trimmed.isEmpty ? nil : trimmed
    }
}

/// Quantities of the agent's configuration: CPU (`2`, `1.5`, `500m`) and memory (`4096` MB,
/// `512Mi`, `16Gi`, `1Ti`; `M`, `G`, `T` are read as Mi, Gi, Ti, as the machine-type table counts).
public enum ResourceQuantity {
    /// CPU in thousandths of a core; nil when `text` is no CPU quantity.
    public static func cpuMilli(_ text: String) -> Int? {
        let t = text.trimmingWhitespace()
        if t.hasSuffix("m") { return Int(t.dropLast()).flatMap { $0 >= 0 ? $0 : nil } }
        guard let cores = Double(t), cores >= 0, cores.isFinite, cores < 1e9 else { return nil }
        return Int((cores * 1000).rounded())
    }

    /// Memory in MB; nil when `text` is no memory quantity.
    public static func memoryMB(_ text: String) -> Int? {
        var t = text.trimmingWhitespace()
        if t.hasSuffix("i") { t.removeLast() }
        let factor: Int
        switch t.last {
        case "M": factor = 1; t.removeLast()
        case "G": factor = 1024; t.removeLast()
        case "T": factor = 1024 * 1024; t.removeLast()
        default: factor = 1
        }
        guard let value = Double(t), value >= 0, value.isFinite, value < 1e12 else { return nil }
        return Int((value * Double(factor)).rounded())
    }
}

extension NodeAgentConfiguration {
    /// What the node offers replicas, given the host's `capacity` and its GPUs of `gpuType`:
    ///
    /// - ``allocatableCPUMilli``/``allocatableMemoryMB`` when configured (fake fleets declare
    ///   GPU-host-sized capacity this way);
    /// - else the host's capacity minus ``systemReserved``;
    /// - on a GPU host, never less than its GPU machine type's CPU and memory per GPU times its
    ///   GPUs: a GPU host offers at least what its machine type promises (a smaller host, such
    ///   as a test machine with fake GPUs, is taken at its type's word; the agent warns).
    public func allocatable(capacity: HostCapacity, gpuType: MachineType?, gpus: Int) -> ComputeResources {
        var cpu = max(0, capacity.cpuMilli - systemReserved.cpuMilli)
        var memory = max(0, capacity.memoryMB - systemReserved.memoryMB)
        if let type = gpuType, type.family == .gpu, gpus > 0 {
            let promised = ComputeResources(type).times(gpus)
            cpu = max(cpu, promised.cpuMilli)
            memory = max(memory, promised.memoryMB)
        }
        return ComputeResources(cpuMilli: allocatableCPUMilli ?? cpu, memoryMB: allocatableMemoryMB ?? memory)
    }
}
