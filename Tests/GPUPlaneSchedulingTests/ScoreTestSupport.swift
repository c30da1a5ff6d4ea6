import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// A context for scoring `request` against `snapshot`.
func scoringContext(_ request: PlacementRequest, _ snapshot: ClusterSnapshot) -> ScoringContext {
    Fixture.pipeline.scoringContext(for: request, in: snapshot)
}

func scoredAssignment(
    _ kind: Assignment.Kind, vram: Int, allocatedAfter: Int = 0, freeAfter: Int = 0
) -> Assignment {
    Assignment(
        kind: kind, gpuIndices: [0], server: nil, gpuVRAMGB: vram, sharedAllocatedAfterGB: allocatedAfter,
        nodeFreeWholeAfter: freeAfter)
}
