import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
@testable import GPUPlaneScheduling
import Logging
import Testing

/// The committer's pure parts: splitting units into transactions, and telling failures apart
/// by code and condition tag.
@Suite struct CommitterTests {
    static func unit(_ ops: Int, guards: Int = 0) -> WriteUnit {
        var unit = WriteUnit(ops: (0..<ops).map { .update(Fixture.replica("r\($0)")) })
        unit.guards = (0..<guards).map { .init(key: "/g/\($0)", revision: 1) }
        return unit
    }

    @Test func unitsAreSplitWithoutSplittingOne() {
        let chunks = Committer.chunks([Self.unit(40), Self.unit(40), Self.unit(30), Self.unit(150), Self.unit(1)], limit: 100)
        #expect(chunks.map { $0.map(\.ops.count) } == [[40, 40], [30], [150], [1]])
        // Guards count toward the limit.
        #expect(Committer.chunks([Self.unit(60), Self.unit(39, guards: 2)], limit: 100).count == 2)
        #expect(Committer.chunks([Self.unit(60), Self.unit(39, guards: 1)], limit: 100).count == 1)
    }

    @Test func failuresAreClassifiedByCodeAndTag() {
        var raced = StoreError(code: .preconditionFailed, message: "condition failed")
        raced.failedConditionTag = Committer.Tag.gpuGuard
        #expect(Committer.classify(raced, kinds: []) == .raced)

        var fenced = StoreError(code: .preconditionFailed, message: "condition failed")
        fenced.failedConditionTag = Committer.Tag.leaderFence
        // The reason's text decides nothing, even when it reads like the guard's.
        fenced.failedCondition = Committer.Reason.gpuGuard
        #expect(Committer.classify(fenced, kinds: []) == .leadershipLost)

        var conflict = StoreError.conflict("42", kind: .replica, key: "/k")
        conflict.failedIndex = 1
        #expect(Committer.classify(conflict, kinds: [.node, .replica]) == .stale(.replica, revision: 42))
        #expect(Committer.classify(StoreError.conflict(nil), kinds: []) == .stale(nil, revision: nil))
        #expect(Committer.classify(StoreError(code: .unavailable, message: "down"), kinds: []) == .other)
    }

    @Test func notesAreRecordedWithoutATransaction() async throws {
        let client = try Etcd.Client(endpoints: ["http://127.0.0.1:1"])
        let leader = Etcd.LeaderKey(name: Data("/e".utf8), key: Data("/e/1".utf8), revision: 1, lease: 1)
        let committer = Committer(
            store: ResourceStore(client: client), leader: leader, configuration: .init(), logger: Logger(label: "test"))
        let note = EventRecorder.Occurrence(
            involved: OwnerReference(kind: .replica, name: "r", uid: "u"), tenant: "acme", severity: .warning,
            reason: EventRecorder.Reason.failedScheduling, message: "no room", aggregate: true)
        #expect(try await committer.commit([.note(note)]) == false)
        #expect(committer.counters.transactions == 0)
        #expect(committer.events.due(now: Date(), interval: 10).count == 1)
    }
}
