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
            _ = try await h.store.create(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .enterprise, gpuLimit: 1)))
            try await h.addNode(Fixture.node("n1", gpus: 8))
            var session = SchedulerHarness.sessionConfiguration()
            session.eventTTL = .seconds(2)
            session.eventFlushInterval = .milliseconds(300)
            let scheduler = h.startScheduler(session: session)
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("bound"))
            _ = try await h.waitBound("acme", "bound")
            // Over the tenant's limit of one GPU: refused again on every pass, one aggregated event.
            try await h.addReplica(pendingReplica("refused"))

            // The lease is read in the same look that finds the event: with a 2 s time to live,
            // a second read on a loaded machine could find it expired already.
            let lease = try await Self.waitForEvent(h, about: "bound", reason: EventRecorder.Reason.scheduled)
            #expect(lease != 0, "the event was written without a lease")
            _ = try await Self.waitForEvent(h, about: "refused", reason: EventRecorder.Reason.failedScheduling)

            try await eventually("the Scheduled event expired", timeout: 30) { try await h.events(about: "bound").isEmpty }
            // Written again and again under newer leases, the FailedScheduling event is still there.
            let refused = try await h.events(about: "refused").filter { $0.spec.reason == EventRecorder.Reason.failedScheduling }
            #expect(refused.count == 1)
            #expect((refused.first?.spec.count ?? 0) > 1)
        }
    }

    /// Waits for the event about `name` with `reason`, and returns the lease it is stored under.
    static func waitForEvent(_ h: SchedulerHarness, about name: String, reason: String) async throws -> Int64 {
        var lease: Int64?
        try await eventually("a \(reason) event about \(name)") {
            for kv in try await h.client.range(.prefix(Event.storagePrefix(tenant: "acme"))).kvs {
                guard let event = try? ResourceStore.decode(Event.self, kv), event.spec.involved.name == name, event.spec.reason == reason
                else { continue }
                lease = kv.lease
                return true
            }
            return false
        }
        return try #require(lease)
    }
}
