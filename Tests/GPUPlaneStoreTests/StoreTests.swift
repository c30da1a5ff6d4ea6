import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// A resource type for these tests only.
struct Gadget: Resource, Equatable {
    static var kind: ResourceKind { .application }
    var metadata: ObjectMeta
    var size: Int
    var color: String

    init(tenant: String, name: String, size: Int = 1, color: String = "red") {
        metadata = ObjectMeta(name: name, tenant: tenant)
        self.size = size
        self.color = color
    }
}

/// Another kind, for heterogeneous transactions.
struct Sprocket: Resource, Equatable {
    static var kind: ResourceKind { .replica }
    var metadata: ObjectMeta
    var teeth: Int
}

enum SharedStoreEtcd {
    static let fixture = Task { try await EtcdFixture.start() }
    static func store() async throws -> ResourceStore {
        let etcd = try await fixture.value
        return ResourceStore(client: try Etcd.Client(endpoints: etcd.endpoints))
    }
}

/// A tenant no other test uses, so tests can run in parallel on one etcd.
func uniqueTenant(_ name: String) -> String { "\(name)-\(UUID().uuidString.prefix(8).lowercased())" }

func expectStoreError(_ code: StoreError.Code, _ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async -> StoreError? {
    do {
        try await body()
        Issue.record("expected StoreError.\(code), got success", sourceLocation: sourceLocation)
    } catch let e as StoreError {
        #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected StoreError.\(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("ResourceStore against real etcd")
struct StoreTests {
    @Test func createGetListUpdateDelete() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("crud")
        let created = try await store.create(Gadget(tenant: t, name: "a", size: 3))
        #expect(!created.metadata.uid.isEmpty)
        #expect(created.metadata.created != nil)
        #expect(created.metadata.revision > 0)
        let fetched = try await store.get(Gadget.self, tenant: t, name: "a")
        #expect(fetched == created)

        _ = try await store.create(Gadget(tenant: t, name: "b"))
        _ = try await store.create(Gadget(tenant: t + "x", name: "c"))  // a tenant sharing the prefix
        let listed = try await store.list(Gadget.self, tenant: t)
        #expect(listed.items.map(\.metadata.name) == ["a", "b"])
        #expect(listed.revision >= created.metadata.revision)
        let everyone = try await store.list(Gadget.self)
        #expect(everyone.items.contains { $0.metadata.tenant == t + "x" })

        var changed = fetched
        changed.color = "blue"
        let updated = try await store.update(changed)
        #expect(updated.metadata.revision > fetched.metadata.revision)
        #expect(updated.metadata.uid == created.metadata.uid)
        #expect(try await store.get(Gadget.self, tenant: t, name: "a").color == "blue")

        try await store.delete(Gadget.self, tenant: t, name: "a", expectedVersion: updated.metadata.resourceVersion)
        _ = await expectStoreError(.notFound) { _ = try await store.get(Gadget.self, tenant: t, name: "a") }
        _ = await expectStoreError(.notFound) { try await store.delete(Gadget.self, tenant: t, name: "a") }
    }

    @Test func createTwiceFailsTyped() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("twice")
        let first = try await store.create(Gadget(tenant: t, name: "dup"))
        let e = await expectStoreError(.alreadyExists) { _ = try await store.create(Gadget(tenant: t, name: "dup", size: 9)) }
        #expect(e?.kind == .application)
        #expect(try await store.get(Gadget.self, tenant: t, name: "dup") == first)
    }

    @Test func staleUpdateIsAConflictNeverAnOverwrite() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("cas")
        let v1 = try await store.create(Gadget(tenant: t, name: "g"))
        var writerA = v1
        writerA.size = 10
        var writerB = v1
        writerB.size = 20
        let a = try await store.update(writerA)
        let e = await expectStoreError(.conflict) { _ = try await store.update(writerB) }
        #expect(e?.currentVersion == a.metadata.resourceVersion)
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").size == 10)
        // A delete preconditioned on the stale version conflicts too.
        _ = await expectStoreError(.conflict) {
            try await store.delete(Gadget.self, tenant: t, name: "g", expectedVersion: v1.metadata.resourceVersion)
        }
        // An update without a version is refused.
        _ = await expectStoreError(.invalid) { _ = try await store.update(Gadget(tenant: t, name: "g")) }
        // Many concurrent read-modify-write loops never lose an increment.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<5 {
                        while true {
                            var g = try await store.get(Gadget.self, tenant: t, name: "g")
                            g.size += 1
                            do {
                                _ = try await store.update(g)
                                break
                            } catch let e as StoreError where e.code == .conflict { continue }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").size == 30)
    }

    /// `modify` reads first from the member's applied state and settles any doubt with
    /// linearizable reads: concurrent modifies lose nothing, a first read `change` refuses is
    /// read again, a refusal of the fresh read passes through, and a missing object is notFound.
    @Test func modifyLosesNoUpdateAndSettlesDoubtLinearizably() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("modify")
        _ = try await store.create(Gadget(tenant: t, name: "g", size: 0))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<5 { _ = try await store.modify(Gadget.self, tenant: t, name: "g", attempts: 100) { $0.size += 1 } }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").size == 20)

        struct Refused: Error {}
        let calls = Locked(0)
        let written = try await store.modify(Gadget.self, tenant: t, name: "g") { gadget in
            let call = calls.withLock { c -> Int in
                c += 1
                return c
            }
            if call == 1 { throw Refused() }
            gadget.color = "blue"
        }
        #expect(calls.withLock { $0 } == 2)
        #expect(written.color == "blue")
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").color == "blue")

        await #expect(throws: Refused.self) {
            _ = try await store.modify(Gadget.self, tenant: t, name: "g") { _ in throw Refused() }
        }
        _ = await expectStoreError(.notFound) { _ = try await store.modify(Gadget.self, tenant: t, name: "absent") { $0.size = 1 } }
    }

    /// `modifyIfChanged` writes nothing when the change leaves the object as the store holds
    /// it (a report sent again): its version stays and no watcher hears of it; a real change is
    /// written as by `modify`, and a refusal still passes through.
    @Test func modifyIfChangedWritesNothingForTheSameObject() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("same")
        let created = try await store.create(Gadget(tenant: t, name: "g", size: 3))
        let watch = store.watch(Gadget.self, tenant: t, from: (Int64(created.metadata.resourceVersion) ?? 0) + 1, progressNotify: false)
        let same = try await store.modifyIfChanged(Gadget.self, tenant: t, name: "g") { $0.size = 3 }
        #expect(same.metadata.resourceVersion == created.metadata.resourceVersion)
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").metadata.resourceVersion == created.metadata.resourceVersion)
        let changed = try await store.modifyIfChanged(Gadget.self, tenant: t, name: "g") { $0.size = 4 }
        #expect(changed.size == 4 && changed.metadata.resourceVersion != created.metadata.resourceVersion)
        // The one change is the first the watch sees: the unchanged modify wrote nothing.
        var first: StoreWatchEvent<Gadget>?
        for try await batch in watch where !batch.isProgress {
            first = batch.events.first
            break
        }
        #expect(first?.object?.size == 4)
        #expect(first?.object?.metadata.resourceVersion == changed.metadata.resourceVersion)
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            _ = try await store.modifyIfChanged(Gadget.self, tenant: t, name: "g") { _ in throw Refused() }
        }
    }

    /// A modify past its caller's deadline sends nothing more to etcd: past it before the
    /// first read, or while `change` runs (between the read and the write), nothing is written.
    @Test func modifyPastItsDeadlineWritesNothing() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("late")
        let created = try await store.create(Gadget(tenant: t, name: "g", size: 3))
        await #expect { _ = try await store.modify(Gadget.self, tenant: t, name: "g", before: .now) { $0.size = 4 } } throws: {
            ($0 as? StoreError)?.code == .deadlineExceeded
        }
        let soon = ContinuousClock.now + .milliseconds(200)
        await #expect { _ = try await store.modifyIfChanged(Gadget.self, tenant: t, name: "g", before: soon) { gadget in
            // A change that takes past the deadline (as a read held up by a busy etcd would).
            while ContinuousClock.now < soon { usleep(10_000) }
            gadget.size = 5
        } } throws: { ($0 as? StoreError)?.code == .deadlineExceeded }
        #expect(try await store.get(Gadget.self, tenant: t, name: "g").metadata.resourceVersion == created.metadata.resourceVersion)
        let written = try await store.modify(Gadget.self, tenant: t, name: "g", before: .now + .seconds(60)) { $0.size = 6 }
        #expect(written.size == 6)
    }

    @Test func multiObjectTransactionIsAllOrNothing() async throws {
        let store = try await SharedStoreEtcd.store()
        let client = store.client
        let t = uniqueTenant("txn")
        let existing = try await store.create(Gadget(tenant: t, name: "existing"))
        let doomed = try await store.create(Sprocket(metadata: ObjectMeta(name: "doomed", tenant: t), teeth: 3))

        // Succeeds: a create, an update and a delete over two kinds, fenced on a leader key.
        let lease = try await client.grantLease(ttl: 30)
        let leader = try await client.campaign("/test/\(t)/leader", lease: lease.id, value: "me")
        var bigger = existing
        bigger.size = 5
        let ((newHandle, updHandle), result) = try await store.transaction { txn in
            txn.require(leader.fence, reason: "leadership")
            let n = try txn.create(Sprocket(metadata: ObjectMeta(name: "new", tenant: t), teeth: 12))
            let u = try txn.update(bigger)
            txn.delete(Sprocket.self, tenant: t, name: "doomed", expectedVersion: doomed.metadata.resourceVersion)
            return (n, u)
        }
        let stored = try result.object(newHandle)
        #expect(stored.metadata.revision == result.revision)
        #expect(try await store.get(Sprocket.self, tenant: t, name: "new") == stored)
        #expect(try result.object(updHandle).metadata.revision == result.revision)
        _ = await expectStoreError(.notFound) { _ = try await store.get(Sprocket.self, tenant: t, name: "doomed") }

        // Fails on the second op (stale version): nothing of it is applied, and it says which.
        let e = await expectStoreError(.conflict) {
            _ = try await store.transaction { txn in
                try txn.create(Gadget(tenant: t, name: "never"))
                try txn.update(bigger)  // stale: the previous transaction changed it
                txn.delete(Sprocket.self, tenant: t, name: "new")
            }
        }
        #expect(e?.failedIndex == 1)
        _ = await expectStoreError(.notFound) { _ = try await store.get(Gadget.self, tenant: t, name: "never") }
        #expect(try await store.get(Sprocket.self, tenant: t, name: "new") == stored)

        // A deposed leader's transaction fails on its fence, with the reason.
        try await client.resign(leader)
        let fenced = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.require(leader.fence, reason: "leadership")
                try txn.create(Gadget(tenant: t, name: "fenced"))
            }
        }
        #expect(fenced?.failedCondition == "leadership")
        _ = await expectStoreError(.notFound) { _ = try await store.get(Gadget.self, tenant: t, name: "fenced") }
        // Create of an existing object reports alreadyExists with its index.
        let dup = await expectStoreError(.alreadyExists) {
            _ = try await store.transaction { txn in
                try txn.create(Gadget(tenant: t, name: "fresh"))
                try txn.create(Gadget(tenant: t, name: "existing"))
            }
        }
        #expect(dup?.failedIndex == 1)
    }
}
