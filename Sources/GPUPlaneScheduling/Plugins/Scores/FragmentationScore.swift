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

/// Keeps GPUs usable for the work the fleet runs (fragmentation gradient descent, Weng et al.,
/// USENIX ATC '23, with the workload learned from the snapshot): the node whose expected
/// fragmentation relative to the replicas held now (``ClusterSnapshot/workload``) grows least
/// once the replica lands scores highest: 50 when it does not change (attaching to a running
/// server, or no workload yet), above when the node gets less fragmented (``points(_:)``).
/// A shared slice that fills a GPU's leftover scores high; one that opens a whole GPU on an
/// empty node, which larger work could have used, scores low; so does a CPU pod taking the CPU
/// a node's free GPUs need. CPU pods are measured too.
public struct FragmentationScore: ScorePlugin {
    public var name: String { "Fragmentation" }

    /// A fixed workload to measure against instead of the snapshot's (benchmarks).
    public let fixedWorkload: WorkloadProfile?

    /// Makes the scorer; with `workload`, it measures against that instead of the snapshot's.
    public init(workload: WorkloadProfile? = nil) { self.fixedWorkload = workload }

    public func score(_ assignment: Assignment, node: NodeState, nodePosition: Int, context: ScoringContext) -> Int {
        guard let workload = fixedWorkload ?? context.workload, !workload.isEmpty else { return 50 }
        switch assignment.kind {
        case .attach, .attachLarge:
            // No new VRAM: neutral.
            return 50
        case .wholeGPUs, .largeSlot, .newSharedServer, .cpu:
            // The snapshot keeps each node's measure against its own workload current.
            let before = fixedWorkload == nil ? node.fragmentation : workload.fragmentation(of: node)
            let cpu = context.request.resources(on: node).cpuMilli
            let after = workload.fragmentation(of: node, after: assignment, cpuMilli: cpu, vramGB: context.request.vramGB)
            return Self.points(after - before)
        }
    }

    /// 50 ∓ 50·(1 − e^(−|Δ|/1000)), rounded away from 50: any growth of fragmentation, however
    /// small (a CPU pod taking the CPU a rare GPU task would need), scores below a placement that
    /// changes nothing, and large changes still rank (a whole GPU's worth is 18 or 82).
    static func points(_ delta: Double) -> Int {
        let magnitude = Int((50 * (1 - exp(-abs(delta) / 1000))).rounded(.up))
        if delta > 0.5 { return 50 - magnitude }
        if delta < -0.5 { return 50 + magnitude }
        return 50
    }
}
