#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import GPUPlaneCore
import GPUPlaneSystem

// The published schedulers the trace replay compares gpuplane's default scoring with, as score
// plugins of the same pipeline (Weng et al., "Beware of Fragmentation", USENIX ATC '23, §6 and
// its simulator). Each replaces the whole score list; filters and the fit are the pipeline's.

/// Random-fit: any feasible node, uniformly (a seeded draw per request and node).
public struct RandomFitScore: ScorePlugin {
    /// The seed of the draws.
    public let seed: UInt64

    public var name: String { "RandomFit" }

    /// Makes the scorer.
    public init(seed: UInt64) { self.seed = seed }

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        Int(SplitMix64.draw(seed: seed ^ TraceScoring.stableHash(context.request.name), salt: UInt64(nodePosition)) % 101)
    }
}

/// Best-fit: the node left with the least free CPU and GPU once the task lands, each normalised
/// by the largest node of the fleet and weighted one half: 100 × (1 − ½ cpuFree/maxCPU − ½ gpuFree/maxGPU).
public struct BestFitScore: ScorePlugin {
    /// CPU of the fleet's largest node, thousandths of a core.
    public let maxCPUMilli: Int
    /// GPUs of the fleet's largest node.
    public let maxGPUs: Int

    public var name: String { "BestFit" }

    /// Makes the scorer.
    public init(maxCPUMilli: Int, maxGPUs: Int) {
        self.maxCPUMilli = max(1, maxCPUMilli)
        self.maxGPUs = max(1, maxGPUs)
    }

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        let request = context.request
        let cpuFree = (request.isCPU ? node.freeForCPUPods : node.free).map { $0.cpuMilli - request.resources(on: node).cpuMilli } ?? 0
        let gpuFree = TraceScoring.freeMilli(node, after: assignment, vramGB: request.vramGB)
        let left = 0.5 * Double(max(0, cpuFree)) / Double(maxCPUMilli) + 0.5 * Double(gpuFree) / Double(maxGPUs * 1000)
        return Int((1 - left) * 100)
    }
}

/// GPU packing: a partly used GPU first (the fuller the better), then free GPUs on a node
/// already in use (the fewer the better), then an idle node (the one with fewer GPUs).
public struct GPUPackingScore: ScorePlugin {
    public var name: String { "GPUPacking" }

    /// Makes the scorer.
    public init() {}

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        switch assignment.kind {
        case .cpu: return 0
        case .attach: return 100
        default: break
        }
        let freeWhole = node.freeWholeGPUs
        if freeWhole == node.gpus.count { return max(33 - freeWhole, freeWhole) }
        var usedFree = 0
        var freePercent = 0
        for gpu in node.gpus where assignment.gpuIndices.contains(gpu.index) {
            if gpu.isFreeWhole { usedFree += 1 }
            if gpu.vramTotalGB > 0 { freePercent += gpu.vramFreeGB * 100 / gpu.vramTotalGB }
        }
        if usedFree > 0 { return max(50 - usedFree, 33) }
        return max(100 - freePercent / 10, 50)
    }
}

/// Fragmentation Gradient Descent as the paper describes it: the node whose expected
/// fragmentation relative to the target workload (the trace's task shapes, by popularity) grows
/// least; 100 × sigmoid(−Δ / 1000) with Δ in thousandths of a GPU, truncated, as its simulator.
public struct FGDScore: ScorePlugin {
    /// The target workload.
    public let workload: WorkloadProfile

    public var name: String { "FGD" }

    /// Makes the scorer.
    public init(workload: WorkloadProfile) { self.workload = workload }

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        if assignment.kind == .attach { return 50 }
        let request = context.request
        let cpu = request.resources(on: node).cpuMilli
        let before = workload.fragmentation(of: node)
        let after = workload.fragmentation(of: node, after: assignment, cpuMilli: cpu, vramGB: request.vramGB)
        return Int(100 / (1 + exp((after - before) / 1000)))
    }
}

enum TraceScoring {
    /// FNV-1a: stable across processes (Swift's `Hasher` is seeded per process).
    static func stableHash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }

    /// Free GPU capacity of `node` once `assignment` lands, thousandths of a GPU.
    static func freeMilli(_ node: NodeState, after assignment: Assignment, vramGB: Int) -> Int {
        var total = 0
        for gpu in node.gpus where gpu.healthy {
            total += WorkloadProfile.state(gpu, taken: assignment.gpuIndices, kind: assignment.kind, vramGB: vramGB).milli
        }
        return total
    }
}
