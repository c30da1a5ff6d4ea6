import Foundation
import GPUPlaneCore
@testable import GPUPlaneScheduling
import Testing

/// Step 1 on plain lists: `Ready` follows the heartbeat key, with a grace for a key never seen.
@Suite struct NodeLifecycleTests {
    static func input(_ nodes: [Node], live: Set<String> = [], expired: Set<String> = [], at clock: ContinuousClock.Instant) -> PassInput {
        PassInput(nodes: nodes, liveness: .init(live: live, expired: expired), clock: clock)
    }

    static func ready(_ unit: WriteUnit) -> GPUPlaneCore.Condition? {
        guard case .update(let object) = unit.ops.first, let node = object as? Node else { return nil }
        return node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }
    }

    @Test func aKeySeenToExpireMakesTheNodeNotReadyAtOnce() {
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let units = step.writes(Self.input([Fixture.node("n1"), Fixture.node("n2")], live: ["n2"], expired: ["n1"], at: .now))
        #expect(units.count == 1)
        let unit = units[0]
        #expect(Self.ready(unit)?.status == false)
        #expect(Self.ready(unit)?.reason == LeaderSession.ReadyReason.heartbeatExpired)
        #expect(unit.events.map(\.reason) == [EventRecorder.Reason.nodeNotReady])
    }

    @Test func aKeyNeverSeenGetsTheGraceFirst() {
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let start = ContinuousClock.now
        let node = Fixture.node("n1")
        #expect(step.writes(Self.input([node], at: start)).isEmpty)
        #expect(step.writes(Self.input([node], at: start + .seconds(4))).isEmpty)
        let late = step.writes(Self.input([node], at: start + .seconds(5)))
        #expect(late.count == 1)
        #expect(Self.ready(late[0])?.reason == LeaderSession.ReadyReason.heartbeatExpired)
        // A key that shows up meanwhile starts the grace afresh the next time it goes missing.
        #expect(step.writes(Self.input([node], live: ["n1"], at: start + .seconds(6))).isEmpty)
        #expect(step.writes(Self.input([node], at: start + .seconds(7))).isEmpty)
    }

    @Test func aKeyBackMakesTheNodeReady() {
        var node = Fixture.node("n1", ready: false)
        node.status.conditions = [Condition(type: NodeHeartbeat.readyCondition, status: false, reason: LeaderSession.ReadyReason.heartbeatExpired)]
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let units = step.writes(Self.input([node], live: ["n1"], at: .now))
        #expect(units.count == 1)
        #expect(Self.ready(units[0])?.status == true)
        #expect(Self.ready(units[0])?.reason == LeaderSession.ReadyReason.heartbeatReceived)
        #expect(units[0].events.map(\.reason) == [EventRecorder.Reason.nodeReady])
        // Not ready for another reason (an operator's, say): the key alone does not change it.
        node.status.conditions = [Condition(type: NodeHeartbeat.readyCondition, status: false, reason: "Maintenance")]
        #expect(step.writes(Self.input([node], live: ["n1"], at: .now)).isEmpty)
    }
}
