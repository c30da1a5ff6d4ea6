import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

extension StoreTransaction.ConditionTag {
    fileprivate static let fence = Self("test.fence")
    fileprivate static let guardKey = Self("test.guard")
    fileprivate static let cursor = Self("test.cursor")
}

/// A failed condition is told apart by its typed tag, never by its reason's text; raw keys are
/// compare-and-swapped in a transaction; existing objects are found in one read.
@Suite("Condition tags against real etcd")
struct ConditionTagTests {
    @Test func theFailedConditionCarriesItsTag() async throws {
        let store = try await SharedStoreEtcd.store()
        let client = store.client
        let t = uniqueTenant("tag")
        let lease = try await client.grantLease(ttl: 30)
        let leader = try await client.campaign("/test/\(t)/leader", lease: lease.id, value: "me")
        let guardKey = "/test/\(t)/guard"
        let seen = try await client.range(.key("/"), countOnly: true).header.revision

        // Both hold: the guard key is bumped with the create.
        _ = try await store.transaction { txn in
            txn.require(leader.fence, reason: "leadership", tag: .fence)
            txn.bump(guardKey, unchangedSince: seen, reason: "guarded", tag: .guardKey)
            try txn.create(Gadget(tenant: t, name: "first"))
        }

        // The guard moved since `seen`: its tag, not the fence's, and the reason for people.
        let raced = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.require(leader.fence, reason: "leadership", tag: .fence)
                txn.bump(guardKey, unchangedSince: seen, reason: "guarded", tag: .guardKey)
                try txn.create(Gadget(tenant: t, name: "second"))
            }
        }
        #expect(raced?.failedConditionTag == .guardKey)
        #expect(raced?.failedCondition == "guarded")
        _ = await expectStoreError(.notFound) { _ = try await store.get(Gadget.self, tenant: t, name: "second") }

        // The fence fails once the leader resigned: its tag.
        try await client.resign(leader)
        let fenced = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.require(leader.fence, reason: "leadership", tag: .fence)
                try txn.create(Gadget(tenant: t, name: "third"))
            }
        }
        #expect(fenced?.failedConditionTag == .fence)
        #expect(fenced?.failedConditionTag != .guardKey)

        // A condition given without a tag fails with none (and its reason, as before).
        let untagged = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.require(leader.fence, reason: "leadership")
                try txn.create(Gadget(tenant: t, name: "fourth"))
            }
        }
        #expect(untagged?.failedConditionTag == nil)
        #expect(untagged?.failedCondition == "leadership")
    }

    @Test func aRawKeyIsCompareAndSwapped() async throws {
        let store = try await SharedStoreEtcd.store()
        let key = "/test/\(uniqueTenant("cursor"))/cursor"

        // Absent is revision 0.
        let first = try await store.transaction { txn in
            txn.set(key, to: Data("1".utf8), ifModRevision: 0, reason: "cursor", tag: .cursor)
        }.1.revision
        let stored = try #require(try await store.client.get(key))
        #expect(String(decoding: stored.value, as: UTF8.self) == "1")
        #expect(stored.modRevision == first)

        // From the revision it was read at: moves; from an older one: refused with the tag.
        let second = try await store.transaction { txn in
            txn.set(key, to: Data("2".utf8), ifModRevision: first, reason: "cursor", tag: .cursor)
        }.1.revision
        let stale = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.set(key, to: Data("3".utf8), ifModRevision: first, reason: "cursor", tag: .cursor)
            }
        }
        #expect(stale?.failedConditionTag == .cursor)
        let now = try #require(try await store.client.get(key))
        #expect(String(decoding: now.value, as: UTF8.self) == "2")
        #expect(now.modRevision == second)
    }

    @Test func existingKeysAreFoundInOneRead() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("exists")
        let here = try await store.create(Gadget(tenant: t, name: "here"))
        let gone = Gadget(tenant: t, name: "gone")
        #expect(try await store.existingKeys(of: [here, gone]) == [here.storageKey])
        #expect(try await store.existingKeys(of: [Gadget]()) == [])
    }
}
