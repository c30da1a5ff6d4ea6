import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
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

    @Test func aKeySeenToExpireMakesTheNodeNotReadyAtOnce() async throws {
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let units = try await step.writes(Self.input([Fixture.node("n1"), Fixture.node("n2")], live: ["n2"], expired: ["n1"], at: .now)) { _ in
            Issue.record("a key seen to say silent needs no confirming read")
            return []
        }
        #expect(units.count == 1)
        let unit = units[0]
        #expect(Self.ready(unit)?.status == false)
        #expect(Self.ready(unit)?.reason == LeaderSession.ReadyReason.heartbeatExpired)
        #expect(unit.events.map(\.reason) == [EventRecorder.Reason.nodeNotReady])
    }

    @Test func aKeyNeverSeenGetsTheGraceFirst() async throws {
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let start = ContinuousClock.now
        let node = Fixture.node("n1")
        #expect(try await step.writes(Self.input([node], at: start), confirmSilent: { $0 }).isEmpty)
        #expect(try await step.writes(Self.input([node], at: start + .seconds(4)), confirmSilent: { $0 }).isEmpty)
        let late = try await step.writes(Self.input([node], at: start + .seconds(5)), confirmSilent: { $0 })
        #expect(late.count == 1)
        #expect(Self.ready(late[0])?.reason == LeaderSession.ReadyReason.heartbeatExpired)
        // A key that shows up meanwhile starts the grace afresh the next time it goes missing.
        #expect(try await step.writes(Self.input([node], live: ["n1"], at: start + .seconds(6)), confirmSilent: { $0 }).isEmpty)
        #expect(try await step.writes(Self.input([node], at: start + .seconds(7)), confirmSilent: { $0 }).isEmpty)
    }

    @Test func aKeyBackMakesTheNodeReady() async throws {
        var node = Fixture.node("n1", ready: false)
        node.status.conditions = [Condition(type: NodeHeartbeat.readyCondition, status: false, reason: LeaderSession.ReadyReason.heartbeatExpired)]
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let units = try await step.writes(Self.input([node], live: ["n1"], at: .now), confirmSilent: { $0 })
        #expect(units.count == 1)
        #expect(Self.ready(units[0])?.status == true)
        #expect(Self.ready(units[0])?.reason == LeaderSession.ReadyReason.heartbeatReceived)
        #expect(units[0].events.map(\.reason) == [EventRecorder.Reason.nodeReady])
        // Not ready for another reason (an operator's, say): the key alone does not change it.
        node.status.conditions = [Condition(type: NodeHeartbeat.readyCondition, status: false, reason: "Maintenance")]
        #expect(try await step.writes(Self.input([node], live: ["n1"], at: .now), confirmSilent: { $0 }).isEmpty)
    }

    @Test func aGraceOverIsConfirmedByEtcdBeforeTheNodeIsNotReady() async throws {
        let step = NodeLifecycle(heartbeatGrace: .seconds(5))
        let start = ContinuousClock.now
        let nodes = [Fixture.node("n1"), Fixture.node("n2"), Fixture.node("gone", ready: false)]
        let asked = Locked([Set<String>]())
        // etcd has n1's key (the watch has not delivered it yet), not n2's.
        let confirm: (Set<String>) async throws -> Set<String> = { candidates in
            asked.withLock { $0.append(candidates) }
            return candidates.subtracting(["n1"])
        }
        #expect(try await step.writes(Self.input(nodes, at: start), confirmSilent: confirm).isEmpty)
        let late = try await step.writes(Self.input(nodes, at: start + .seconds(5)), confirmSilent: confirm)
        // Only the Ready nodes past their grace were asked about; only n2 turns NotReady.
        #expect(asked.withLock { $0 } == [["n1", "n2"]])
        #expect(late.count == 1)
        guard case .update(let object)? = late.first?.ops.first, let node = object as? Node else {
            Issue.record("no update of a Node")
            return
        }
        #expect(node.metadata.name == "n2")
        // n1 keeps its grace's start: the next pass asks again, until the watch shows its key.
        _ = try await step.writes(Self.input(nodes, at: start + .seconds(6)), confirmSilent: confirm)
        #expect(asked.withLock { $0 }.last == ["n1", "n2"])
        #expect(try await step.writes(Self.input(nodes, live: ["n1"], at: start + .seconds(7)), confirmSilent: confirm).count == 1)
        #expect(asked.withLock { $0 }.count == 3)
    }

    @Test func aFailedConfirmingReadFailsTheStep() async throws {
        let step = NodeLifecycle(heartbeatGrace: .seconds(1))
        let start = ContinuousClock.now
        _ = try await step.writes(Self.input([Fixture.node("n1")], at: start), confirmSilent: { $0 })
        await #expect(throws: StoreError.self) {
            try await step.writes(Self.input([Fixture.node("n1")], at: start + .seconds(2))) { _ in
                throw StoreError(code: .unavailable, message: "etcd down")
            }
        }
    }
}
