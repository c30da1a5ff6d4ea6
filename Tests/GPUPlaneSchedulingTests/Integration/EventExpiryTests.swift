import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

@Suite("event expiry against real etcd", .enabled(if: EtcdFixture.isAvailable))
struct EventExpiryTests {
    @Test("etcd deletes a one-shot event its time to live after it was written; one that keeps happening stays")
    func eventsExpire() async throws {
        try await SchedulerHarness.with { h in
            let start = try await h.store.create(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .enterprise, gpuLimit: 1)))
            let from = Int64(start.metadata.resourceVersion) ?? 1
            try await h.addNode(Fixture.node("n1", gpus: 8))
            var session = SchedulerHarness.sessionConfiguration()
            // Long enough that a loaded machine's stalls between rewrites cannot let the repeating
            // event lapse (2 s did once, beside two busy loops; 5 s while the whole suite started).
            session.eventTTL = .seconds(15)
            session.eventFlushInterval = .milliseconds(300)
            let scheduler = h.startScheduler(session: session)
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("bound"))
            _ = try await h.waitBound("acme", "bound")
            // Over the tenant's limit of one GPU: refused again on every pass, one aggregated event.
            try await h.addReplica(pendingReplica("refused"))

            // Found in etcd's history, with the lease it was written under: with a short time to
            // live, a loaded machine's reads could come after it expired.
            let lease = try await Self.waitForEvent(h, about: "bound", reason: EventRecorder.Reason.scheduled, from: from)
            #expect(lease != 0, "the event was written without a lease")
            _ = try await Self.waitForEvent(h, about: "refused", reason: EventRecorder.Reason.failedScheduling, from: from)

            try await eventually("the Scheduled event expired", timeout: 30) { try await h.events(about: "bound").isEmpty }
            // Written again and again under newer leases, the FailedScheduling event is there with
            // its count grown. Waited for rather than read once: on a machine so loaded that no
            // pass ran for a whole time to live it may lapse, and the next refusal writes it again.
            var refused: [Event] = []
            try await eventually("the repeating FailedScheduling event is there", timeout: 30) {
                refused = try await h.events(about: "refused").filter { $0.spec.reason == EventRecorder.Reason.failedScheduling }
                return refused.count == 1 && (refused.first?.spec.count ?? 0) > 1
            }
        }
    }

    /// Waits for a write of the event about `name` with `reason` since revision `from` (replayed
    /// from etcd's history, so one that has expired since still counts), and returns the lease
    /// it was written under.
    static func waitForEvent(_ h: SchedulerHarness, about name: String, reason: String, from: Int64) async throws -> Int64 {
        try await withThrowingTaskGroup(of: Int64?.self) { group in
            group.addTask {
                for try await batch in h.client.watch(.prefix(Event.storagePrefix(tenant: "acme")), startRevision: from) {
                    for change in batch.events where change.type == .put {
                        guard let event = try? ResourceStore.decode(Event.self, change.kv), event.spec.involved.name == name,
                            event.spec.reason == reason
                        else { continue }
                        return change.kv.lease
                    }
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: .seconds(60))
                return nil
            }
            let lease = try await group.next() ?? nil
            group.cancelAll()
            guard let lease else { throw HarnessError("no \(reason) event about \(name) was written within 60 s") }
            return lease
        }
    }
}
