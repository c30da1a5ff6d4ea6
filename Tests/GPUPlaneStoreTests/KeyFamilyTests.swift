import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Synchronization
import Testing

extension StoreTransaction.ConditionTag {
    fileprivate static let cursorMoved = Self("test.cursor-moved")
    fileprivate static let gadgetsMoved = Self("test.gadgets-moved")
    fileprivate static let fenced = Self("test.fenced")
}

/// The keys that are not resources, each through its typed interface, and the typed watch of
/// objects, against real etcd.
@Suite("Typed key families against real etcd")
struct KeyFamilyTests {
    @Test func theTokenIndexFindsARecordByHashAndRemovesItByItsPrefix() async throws {
        let store = try await SharedStoreEtcd.store()
        let tokens = TokenIndex(store: store)
        let hash = (UUID().uuidString + UUID().uuidString).replacingOccurrences(of: "-", with: "").lowercased()
        let record = TokenRecord(id: "tok-" + hash.prefix(12), sha256: hash, tenant: "acme", role: .user)
        #expect(try await tokens.record(sha256: record.sha256) == nil)
        try await tokens.add(record)
        #expect(try await tokens.record(sha256: record.sha256) == record)
        #expect(try await store.client.get(KeySpace.token(sha256: record.sha256)) != nil, "under the key map's key")

        // What is not a record authenticates no one.
        let junk = String(repeating: "c", count: 64)
        _ = try await store.client.put(KeySpace.token(sha256: junk), "not json")
        #expect(try await tokens.record(sha256: junk) == nil)

        let removed = try #require(try await tokens.remove(hashPrefix: String(record.id.dropFirst(4))))
        #expect(removed.sha256 == record.sha256 && removed.revision > 0)
        #expect(try await tokens.record(sha256: record.sha256) == nil)
        #expect(try await tokens.remove(hashPrefix: String(record.id.dropFirst(4))) == nil)
    }

    @Test func theStatesOfSomeNodesAreReadKeyByKeyOrByListing() async throws {
        let store = try await SharedStoreEtcd.store()
        let heartbeats = NodeHeartbeats(store: store)
        let prefix = uniqueTenant("st")
        let lease = try await store.client.grantLease(ttl: 600).id
        defer { Task { _ = try? await store.client.revokeLease(lease) } }
        // 70 nodes: a third live, a third silent, a third without a key.
        let nodes = (0..<70).map { "\(prefix)-\($0)" }
        for (i, node) in nodes.enumerated() where i % 3 != 2 {
            try await heartbeats.writeLive(node: node, server: "a", lease: lease)
            if i % 3 == 1 { _ = try await heartbeats.markSilent(node: node, server: "a", lease: lease) }
        }
        func expected(_ subset: [String]) -> [String: NodeHeartbeats.KeyState] {
            var states: [String: NodeHeartbeats.KeyState] = [:]
            for node in subset {
                guard let i = nodes.firstIndex(of: node) else { continue }
                switch i % 3 {
                case 0: states[node] = .live(server: "a")
                case 1: states[node] = .silent(server: "a")
                default: break
                }
            }
            return states
        }
        // A few nodes: one transaction of one read each; all of them: past 64, a listing.
        let few = Array(nodes.prefix(5)) + ["\(prefix)-never"]
        #expect(try await heartbeats.states(of: Set(few)) == expected(few))
        #expect(try await heartbeats.states(of: Set(nodes)) == expected(nodes))
        #expect(try await heartbeats.states(of: []).isEmpty)
    }

    @Test func heartbeatsAreWrittenLiveMarkedSilentOnlyOnTheirLeaseWatchedAndRemoved() async throws {
        let store = try await SharedStoreEtcd.store()
        let heartbeats = NodeHeartbeats(store: store)
        let node = uniqueTenant("node")
        let before = try await heartbeats.list()
        #expect(before.keys[node] == nil)
        let changes = ChangeLog()
        let watcher = Task {
            for try await batch in heartbeats.watch(from: before.revision + 1) {
                for change in batch where change.node == node { changes.append(change) }
            }
        }
        defer { watcher.cancel() }

        // Long leases: under a loaded full run this test has taken 95 s, past a 30 s lease.
        let mine = try await store.client.grantLease(ttl: 600).id
        let theirs = try await store.client.grantLease(ttl: 600).id
        defer { Task { _ = try? await store.client.revokeLease(theirs) } }
        try await heartbeats.writeLive(node: node, server: "a", lease: mine)
        let key = try #require(try await store.client.get(KeySpace.heartbeat(node: node)))
        #expect(key.lease == mine, "the key lives on the writer's lease")
        #expect(NodeHeartbeats.Value.decode(key.value) == .init(server: "a", state: .live))
        #expect(try await heartbeats.list().keys[node] == .live(server: "a"))
        // Silent only while the key is on the lease: once another api-server wrote it, the
        // first one's silent write is refused and changes nothing.
        #expect(try await heartbeats.markSilent(node: node, server: "a", lease: mine) != nil)
        #expect(try await heartbeats.list().keys[node] == .silent(server: "a"))
        try await heartbeats.writeLive(node: node, server: "b", lease: theirs)
        #expect(try await heartbeats.markSilent(node: node, server: "a", lease: mine) == nil)
        #expect(try await heartbeats.list().keys[node] == .live(server: "b"))

        try await heartbeats.remove(node: node)
        #expect(try await heartbeats.list().keys[node] == nil)
        #expect(try await heartbeats.markSilent(node: node, server: "b", lease: theirs) == nil, "no key: nothing to mark")
        // A key of another value (a test's, a benchmark's) is live, and its deletion an expiry.
        _ = try await store.client.put(KeySpace.heartbeat(node: node), "2026-01-01T00:00:00Z", lease: mine)
        #expect(try await heartbeats.list().keys[node] == .live(server: nil))
        try await store.client.revokeLease(mine)
        try await eventually("the watch saw every change") { changes.values.count >= 6 }
        let expected: [NodeHeartbeats.KeyState] = [
            .live(server: "a"), .silent(server: "a"), .live(server: "b"), .deleted(expired: false), .live(server: nil),
            .deleted(expired: true),
        ]
        #expect(changes.values.map(\.state) == expected, "\(changes.values)")
        #expect(changes.values.allSatisfy { $0.revision > before.revision })

        // A lease gone: the write says so (the tracker grants a new one).
        do {
            try await heartbeats.writeLive(node: node, server: "a", lease: mine)
            Issue.record("a write under a revoked lease succeeded")
        } catch let error as StoreError {
            #expect(error.etcd?.code == .leaseNotFound, "\(error)")
        }
    }

    @Test func loadReportsAreWrittenUnderALeaseAndReadBack() async throws {
        let store = try await SharedStoreEtcd.store()
        let reports = LoadReports(store: store)
        let tenant = uniqueTenant("load")
        // More than one transaction's worth.
        let written = (0..<150).map { LoadReports.Report(tenant: tenant, deployment: "d\($0)", load: DeploymentLoad(peak: $0, cold: $0 == 0)) }
        let lease = RotatingLease(ttl: .seconds(30))
        try await reports.write(written, reporter: "r1", lease: lease)
        try await reports.write([LoadReports.Report(tenant: tenant, deployment: "d1", load: DeploymentLoad(peak: 7))], reporter: "r2", lease: lease)
        // A key of another shape under the prefix is skipped.
        _ = try await store.client.put(KeySpace.deploymentLoads + tenant + "/stray", "{}")

        let read = try await reports.all().filter { $0.tenant == tenant }
        #expect(read.count == 151)
        #expect(Set(read.filter { $0.deployment == "d1" }.map(\.load.peak)) == [1, 7])
        #expect(read.first { $0.deployment == "d0" }?.load.demand == 1, "a cold start asks for one")
        let kv = try #require(try await store.client.get(KeySpace.deploymentLoad(tenant: tenant, deployment: "d5", reporter: "r1")))
        #expect(kv.lease != 0, "reports live on the reporter's lease")
    }

    @Test func theInferenceSecretIsMadeOnceAndEveryoneAgrees() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let store = ResourceStore(client: try Etcd.Client(endpoints: etcd.endpoints))
        let secret = InferenceSecret(store: store)
        async let first = secret.value { Data(repeating: 1, count: 32) }
        async let second = secret.value { Data(repeating: 2, count: 32) }
        let (a, b) = try await (first, second)
        #expect(a == b, "racing makers agree on the first written")
        #expect([Data(repeating: 1, count: 32), Data(repeating: 2, count: 32)].contains(a))
        #expect(try await secret.value { Data(repeating: 3, count: 32) } == a, "a stored secret is never replaced")
        #expect(try await store.client.get(KeySpace.inferenceSecret)?.value == a)
    }

    @Test func theMeterCursorMovesOnlyFromWhereItWasRead() async throws {
        let store = try await SharedStoreEtcd.store()
        let cursor = MeterCursor(store: store, key: "/test/\(uniqueTenant("cursor"))/cursor")
        #expect(MeterCursor(store: store).key == KeySpace.meterCursor)
        #expect(try await cursor.read() == nil)

        var txn = StoreTransaction()
        cursor.move(to: 300, ifAt: 0, in: &txn, reason: "cursor", tag: .cursorMoved)
        let first = try await store.commit(txn)
        let read = try #require(try await cursor.read())
        #expect(read == MeterCursor.Position(intervalStart: 300, revision: first.revision))

        // A move from a revision the cursor left fails with its tag and moves nothing.
        var stale = StoreTransaction()
        cursor.move(to: 600, ifAt: read.revision - 1, in: &stale, reason: "cursor", tag: .cursorMoved)
        let failed = await expectStoreError(.preconditionFailed) { _ = try await store.commit(stale) }
        #expect(failed?.failedConditionTag == .cursorMoved)
        #expect(try await cursor.read()?.intervalStart == 300)
    }

    @Test func aLeaderFenceHoldsWhileTheLeadershipLasts() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("fence")
        let lease = try await store.client.grantLease(ttl: 30)
        let leader = try await store.client.campaign("/test/\(t)/election", lease: lease.id, value: "me")
        let fence = LeaderFence(leader)
        #expect(fence.key == leader.keyString && fence.revision == leader.revision)
        _ = try await store.transaction { txn in
            txn.require(fence, reason: "leadership", tag: .fenced)
            try txn.create(Gadget(tenant: t, name: "while-leading"))
        }
        try await store.client.resign(leader)
        let refused = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.require(fence, reason: "leadership", tag: .fenced)
                try txn.create(Gadget(tenant: t, name: "after"))
            }
        }
        #expect(refused?.failedConditionTag == .fenced)
        // Events and load reports are written under a rotating lease taken from the store.
        let rotating = RotatingLease(ttl: .seconds(30))
        // Instants are given, so a slow grant on a loaded machine cannot end the rotation.
        let start = ContinuousClock.now
        let granted = try await rotating.lease(in: store, now: start)
        #expect(try await rotating.lease(in: store, now: start + .seconds(1)) == granted, "one lease within a rotation")
        #expect(try await rotating.lease(in: store, now: start + rotating.rotation) != granted, "a new lease after it")
    }

    @Test func aPrefixConditionFailsWhenAKeyUnderItChanged() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("prefix")
        let a = try await store.create(Gadget(tenant: t, name: "a"))
        _ = try await store.create(Gadget(tenant: t, name: "b"))
        let list = try await store.list(Gadget.self, tenant: t)
        let prefix = Gadget.storagePrefix(tenant: t)

        // The second key changes after the read: the condition names it by tag, whichever key it was.
        var b = try await store.get(Gadget.self, tenant: t, name: "b")
        b.size = 9
        _ = try await store.update(b)
        let failed = await expectStoreError(.preconditionFailed) {
            _ = try await store.transaction { txn in
                txn.delete(Gadget.self, tenant: t, name: "a", expectedVersion: a.metadata.resourceVersion)
                txn.requireUnchanged(under: prefix, since: list.revision, reason: "gadgets moved", tag: .gadgetsMoved)
            }
        }
        #expect(failed?.failedConditionTag == .gadgetsMoved)
        #expect(try await store.get(Gadget.self, tenant: t, name: "a") == a, "nothing was deleted")

        // Read again: it holds.
        let fresh = try await store.list(Gadget.self, tenant: t)
        _ = try await store.transaction { txn in
            txn.delete(Gadget.self, tenant: t, name: "a", expectedVersion: a.metadata.resourceVersion)
            txn.requireUnchanged(under: prefix, since: fresh.revision, reason: "gadgets moved", tag: .gadgetsMoved)
        }
        _ = await expectStoreError(.notFound) { _ = try await store.get(Gadget.self, tenant: t, name: "a") }
    }

    @Test func theObjectWatchIsTypedAndSaysCompactedByCode() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let client = try Etcd.Client(endpoints: etcd.endpoints)
        let store = ResourceStore(client: client)
        let t = "watched"
        let start = try await store.list(Gadget.self, tenant: t).revision + 1
        let created = try await store.create(Gadget(tenant: t, name: "a", size: 1))
        var changed = created
        changed.size = 2
        changed = try await store.update(changed)
        try await store.delete(Gadget.self, tenant: t, name: "a")
        _ = try await client.put(Gadget.storageKey(tenant: t, name: "junk"), "not json")

        var events: [StoreWatchEvent<Gadget>] = []
        for try await batch in store.watch(Gadget.self, tenant: t, from: start, progressNotify: false) {
            events += batch.events
            if events.count >= 4 { break }
        }
        #expect(events.map(\.change) == [.put, .put, .delete, .put])
        #expect(events[0].object == created && events[0].previous == nil)
        #expect(events[1].object == changed && events[1].previous == created)
        #expect(events[2].object == nil && events[2].previous == changed)
        #expect(events[2].revision > changed.metadata.revision)
        #expect(events[3].object == nil, "a value that is not a Gadget decodes to nothing")

        let now = try await client.range(.prefix("/"), countOnly: true).header.revision
        try await client.compact(revision: now, physical: true)
        do {
            for try await _ in store.watch(Gadget.self, tenant: t, from: start) {}
            Issue.record("a watch from a compacted revision ended without error")
        } catch let error as StoreError {
            #expect(error.code == .compacted, "\(error)")
        }
        do {
            for try await _ in NodeHeartbeats(store: store).watch(from: start) {}
            Issue.record("a heartbeat watch from a compacted revision ended without error")
        } catch let error as StoreError {
            #expect(error.code == .compacted, "\(error)")
        }
    }
}

/// Heartbeat changes seen by a watch, read from the test's task.
final class ChangeLog: Sendable {
    private let changes = Mutex<[NodeHeartbeats.Change]>([])
    func append(_ change: NodeHeartbeats.Change) { changes.withLock { $0.append(change) } }
    var values: [NodeHeartbeats.Change] { changes.withLock { $0 } }
}
