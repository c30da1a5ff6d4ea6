import Foundation
import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// The fragmentation measure (Weng et al., ATC '23) and the scorer built on it, and `gpu-mode=mixed`.
@Suite struct FragmentationScoreTests {
    /// Half the work one whole GPU, half a 12 GB slice, on 24 GB GPUs.
    static let workload = WorkloadProfile([
        (DemandShape(kind: .whole, gpus: 1, vramGB: 0, cpuMilli: 0, mode: .dedicated), 1.0),
        (DemandShape(kind: .shared, gpus: 1, vramGB: 12, cpuMilli: 0, mode: .sharedPinned), 1.0),
    ])

    static func mixed(_ name: String, gpus: Int = 2) -> Node {
        Fixture.node(name, mode: NodeState.mixedModeLabel, type: "GPU-RTX4090", gpus: gpus)
    }

    static func slice(_ name: String, vramGB: Int) -> PlacementRequest {
        PlacementRequest(name: name, tenant: "acme", demand: .shared(slug: "s-\(name)", vramGB: vramGB))
    }

    @Test func measuresWhatTheWorkloadCouldNotUse() throws {
        var snapshot = Fixture.snapshot([Self.mixed("n1")])
        let empty = try #require(snapshot.node(named: "n1"))
        #expect(Self.workload.fragmentation(of: empty) == 0)

        // 6 GB on GPU 0 leaves 18 of 24 GB (750 thousandths): a whole GPU can't use it (weight ½),
        // a 12 GB slice can: 375.
        let pipeline = Pipeline(catalog: Fixture.catalog, scores: [WeightedScore(FragmentationScore(workload: Self.workload), weight: 1)])
        #expect(pipeline.place(Self.slice("a", vramGB: 6), in: &snapshot).placement != nil)
        let used = try #require(snapshot.node(named: "n1"))
        #expect(Self.workload.fragmentation(of: used) == 375)

        // Another 6 GB there leaves 12 GB, still usable by a slice: 250; 10 GB there leaves 2 GB,
        // which neither shape can use (333 thousandths): 333.
        let there = Assignment(kind: .newSharedServer, gpuIndices: [0], server: nil, gpuVRAMGB: 24, sharedAllocatedAfterGB: 12, nodeFreeWholeAfter: 1)
        #expect(Self.workload.fragmentation(of: used, after: there, vramGB: 6) == 250)
        #expect(Self.workload.fragmentation(of: used, after: there, vramGB: 10) == 333)
        // Whole GPU 1 taken: GPU 0's 750 serves the slice but not a whole GPU, which no longer fits: 750 × ½ + 0.
        let whole = Assignment(kind: .wholeGPUs, gpuIndices: [1], server: nil, gpuVRAMGB: 24, sharedAllocatedAfterGB: 0, nodeFreeWholeAfter: 0)
        #expect(Self.workload.fragmentation(of: used, after: whole) == 375)
    }

    @Test func aSliceGoesWhereItFillsALeftoverNotOntoAnIdleNode() throws {
        // n1 has a GPU with 12 GB left, n2 is idle; a 12 GB slice fills n1's leftover.
        let pipeline = Pipeline(
            catalog: Fixture.catalog, configuration: .init(percentageOfNodesToScore: 100),
            scores: [WeightedScore(FragmentationScore(workload: Self.workload), weight: 1)])
        for seed in UInt64(0)..<8 {
            var snapshot = Fixture.snapshot([Self.mixed("n1"), Self.mixed("n2")], seed: seed)
            let first = try #require(pipeline.place(Self.slice("a", vramGB: 12), in: &snapshot).placement)
            let second = try #require(pipeline.place(Self.slice("b", vramGB: 12), in: &snapshot).placement)
            #expect(second.binding.node == first.binding.node)
            #expect(second.binding.gpuIndices == first.binding.gpuIndices)
        }
    }

    @Test func theSnapshotLearnsItsWorkloadFromHeldAndWaitingReplicas() throws {
        var snapshot = Fixture.snapshot([Self.mixed("n1", gpus: 1)])
        #expect(snapshot.workload.isEmpty)
        let pipeline = Pipeline(catalog: Fixture.catalog)
        #expect(pipeline.place(Self.slice("a", vramGB: 20), in: &snapshot).placement != nil)
        #expect(snapshot.workload.totalWeight == 1 && snapshot.demandTotal == 1)
        // Refused (no 24 GB left): it waits, and counts once however often it is tried.
        let big = PlacementRequest(name: "big", tenant: "acme", demand: .wholeGPUs(count: 1, vramGB: 0))
        #expect(pipeline.place(big, in: &snapshot).refusal != nil)
        #expect(pipeline.place(big, in: &snapshot).refusal != nil)
        #expect(snapshot.workload.totalWeight == 2 && snapshot.demandTotal == 2)
        snapshot.release(replica: "acme/a")
        snapshot.stopModelServer(named: try #require(snapshot.modelServers.first?.name))
        #expect(snapshot.demandTotal == 1)
        // Placed at last: counted as held, no longer as waiting.
        #expect(pipeline.place(big, in: &snapshot).placement != nil)
        #expect(snapshot.demandTotal == 1 && snapshot.waiting.isEmpty)
        // Held with its node's CPU share (12 cores of an RTX 4090), smoothed towards twice and
        // four times that CPU at a tenth each.
        #expect(abs(snapshot.workload.totalWeight - 1.2) < 1e-9)
    }

    @Test func pointsRankEveryChangeAndSaturateSlowly() {
        #expect(FragmentationScore.points(0) == 50)
        #expect(FragmentationScore.points(3) == 49)
        #expect(FragmentationScore.points(-3) == 51)
        #expect(FragmentationScore.points(1000) == 18)
        #expect(FragmentationScore.points(-1000) == 82)
        #expect(FragmentationScore.points(8000) == 0)
    }

    @Test func aMixedNodeTakesWholeGPUsAndSlicesButNotLargeSlots() throws {
        var snapshot = Fixture.snapshot([Self.mixed("n1")])
        let pipeline = Pipeline(catalog: Fixture.catalog)
        let whole = PlacementRequest(name: "w", tenant: "acme", demand: .wholeGPUs(count: 1, vramGB: 20))
        #expect(pipeline.place(whole, in: &snapshot).placement?.binding.gpuIndices.count == 1)
        #expect(pipeline.place(Self.slice("s", vramGB: 10), in: &snapshot).placement != nil)
        // The shared GPU is not given whole, the whole one not shared.
        let again = pipeline.place(whole, in: &snapshot)
        #expect(again.refusal?.primaryReason == GPUFit.insufficientGPUs)
        let large = PlacementRequest(name: "l", tenant: "acme", demand: .largeSlot(slug: "x", vramGB: 96))
        #expect(GPUModeFilter().filter(large, node: try #require(snapshot.node(named: "n1"))) == GPUModeFilter.modeIsMixed)
    }
}
