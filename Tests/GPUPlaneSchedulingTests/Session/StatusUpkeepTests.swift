import Foundation
import GPUPlaneCore
@testable import GPUPlaneScheduling
import Testing

/// Step 6 on plain lists: a model server's attached replicas, written only when they change.
@Suite struct StatusUpkeepTests {
    @Test func attachmentsFollowTheBoundReplicas() {
        let server = Fixture.server("ms-1", slug: "llama-3.1-8b", node: "n1", gpu: 0, vramGB: 20, attached: ["acme/gone"])
        let b = Fixture.shared("b", binding: Binding(node: "n1", gpuIndices: [0], modelServer: "ms-1"))
        let a = Fixture.shared("a", binding: Binding(node: "n1", gpuIndices: [0], modelServer: "ms-1"))
        let waiting = Fixture.shared("c")
        let units = StatusUpkeep.writes(PassInput(replicas: [b, a, waiting], servers: [server]))
        #expect(units.count == 1)
        guard case .update(let object) = units.first?.ops.first, let updated = object as? ModelServer else {
            Issue.record("no server update in \(units)")
            return
        }
        #expect(updated.status.attachedReplicas == ["acme/a", "acme/b"])
        // Already so: nothing to write.
        #expect(StatusUpkeep.writes(PassInput(replicas: [a, b], servers: [updated])).isEmpty)
    }
}
