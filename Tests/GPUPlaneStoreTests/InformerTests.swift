import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneSystem
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// Collects informer events for assertions.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ s: String) { lock.withLock { items.append(s) } }
    var values: [String] { lock.withLock { items } }
}

func describe(_ e: InformerEvent<Gadget>) -> String {
    switch e {
    case .added(let g): return "add \(g.metadata.name) \(g.size)"
    case .updated(let old, let new): return "upd \(new.metadata.name) \(old.size)->\(new.size)"
    case .deleted(let g): return "del \(g.metadata.name)"
    }
}

@Suite("Informer against real etcd")
struct InformerTests {
    @Test func deliversCreatesUpdatesDeletesInOrder() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("informer")
        _ = try await store.create(Gadget(tenant: t, name: "pre", size: 1))
        let informer = Informer<Gadget>(store: store, tenant: t)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        #expect(informer.list().map(\.metadata.name) == ["pre"])

        let log = EventLog()
        let subscriber = Task { for await e in informer.events() { log.append(describe(e)) } }
        defer { subscriber.cancel() }

        let a = try await store.create(Gadget(tenant: t, name: "a", size: 1))
        var a2 = a
        a2.size = 2
        let a3 = try await store.update(a2)
        _ = try await store.create(Gadget(tenant: t, name: "b", size: 7))
        try await store.delete(Gadget.self, tenant: t, name: "pre")
        _ = try await store.create(Gadget(tenant: uniqueTenant("other"), name: "elsewhere"))

        let expected = ["add pre 1", "add a 1", "upd a 1->2", "add b 7", "del pre"]
        try await eventually("informer events") { log.values.count >= expected.count }
        #expect(log.values == expected)
        #expect(informer.get(tenant: t, name: "a") == a3)
        #expect(informer.list().map(\.metadata.name) == ["a", "b"])
        #expect(informer.lastSeenRevision >= a3.metadata.revision)
    }

    /// `changes()` signals at once, then after changes; signals not yet read merge into one (no
    /// backlog, no objects held), and the sequence ends with the informer.
    @Test(.timeLimit(.minutes(1))) func changesSignalWithoutABacklog() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("signal")
        let informer = Informer<Gadget>(store: store, tenant: t)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        var signals = informer.changes().makeAsyncIterator()
        #expect(await signals.next() != nil)  // at once: the cache is there to read

        _ = try await store.create(Gadget(tenant: t, name: "first", size: 0))
        #expect(await signals.next() != nil)  // after a change

        // Ten changes nobody reads yet, each its own revision: one signal waits, not ten.
        var last = Gadget(tenant: t, name: "none")
        for i in 0..<10 { last = try await store.create(Gadget(tenant: t, name: "g\(i)", size: i)) }
        await informer.waitUntilSeen(last.metadata.revision)
        #expect(informer.list().count == 11)
        informer.stop()
        var waiting = 0
        while await signals.next() != nil { waiting += 1 }
        #expect(waiting == 1)
    }

    /// Subscribers cancelled while the informer delivers changes to them under its lock (the
    /// cancelled one's termination handler runs under the runtime's lock of its task, and once
    /// took the informer's lock: a deadlock, as WatchCacheTests' twin of this test shows), and
    /// waiters for a revision cancelled while it is reached: every consumer ends, the informer
    /// goes on.
    @Test func cancellingSubscribersMidDeliveryNeverDeadlocks() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("cancel")
        let informer = Informer<Gadget>(store: store, tenant: t)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        let writing = Task {
            var index = 0
            while !Task.isCancelled {
                _ = try? await store.create(Gadget(tenant: t, name: "g\(index)", size: index))
                index += 1
            }
        }
        defer { writing.cancel() }
        let ended = Locked(0)
        for round in 0..<10 {
            let consumers = (0..<2000).map { index in
                Task.detached {
                    if index % 8 != 0 {
                        for await _ in informer.changes() {}
                    } else {
                        await informer.waitUntilSeen(Int64.max)
                    }
                    ended.withLock { $0 += 1 }
                }
            }
            try await Task.sleep(for: .milliseconds(20))
            for consumer in consumers { consumer.cancel() }
            try await eventually("round \(round): every consumer ended", timeout: 20) { ended.withLock { $0 } == (round + 1) * 2000 }
        }
        let last = try await store.create(Gadget(tenant: t, name: "after", size: 0))
        await informer.waitUntilSeen(last.metadata.revision)
        #expect(informer.get(tenant: t, name: "after") != nil)
    }

    /// `list()` keeps the order by tenant, then name, as objects come, change and go in any
    /// order (it is patched per change, not sorted per call), and an answer already taken is
    /// not changed by later events.
    @Test func listStaysOrderedThroughChangesInAnyOrder() async throws {
        let store = try await SharedStoreEtcd.store()
        let tenants = [uniqueTenant("order-b"), uniqueTenant("order-a")]
        let informer = Informer<Gadget>(store: store)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        var generator = SystemRandomNumberGenerator()
        var names = (0..<40).map { "g\($0 * 7 % 40)" }
        names.shuffle(using: &generator)
        for (index, name) in names.enumerated() {
            _ = try await store.create(Gadget(tenant: tenants[index % 2], name: name, size: index))
        }
        func mine() -> [Gadget] { informer.list().filter { tenants.contains($0.metadata.tenant) } }
        try await eventually("every gadget seen") { mine().count == names.count }
        let taken = informer.list()
        // Updates keep the places; deletes and new names move the rest.
        for (index, name) in names.enumerated() where index % 3 == 0 {
            var gadget = try await store.get(Gadget.self, tenant: tenants[index % 2], name: name)
            gadget.size += 100
            _ = try await store.update(gadget)
        }
        for (index, name) in names.enumerated() where index % 5 == 1 {
            try await store.delete(Gadget.self, tenant: tenants[index % 2], name: name)
        }
        _ = try await store.create(Gadget(tenant: tenants[0], name: "a-first", size: 1))
        _ = try await store.create(Gadget(tenant: tenants[1], name: "zz-last", size: 1))
        let stored = try await store.list(Gadget.self).items.filter { tenants.contains($0.metadata.tenant) }
        try await eventually("the informer caught up") { mine().count == stored.count && mine().map(\.size) == stored.map(\.size) }
        #expect(mine() == stored)
        let listed = informer.list()
        #expect(listed.map { ObjectKey(tenant: $0.metadata.tenant, name: $0.metadata.name) } == listed.map { ObjectKey(tenant: $0.metadata.tenant, name: $0.metadata.name) }.sorted())
        #expect(taken.filter { tenants.contains($0.metadata.tenant) }.count == names.count)
        #expect(taken.filter { tenants.contains($0.metadata.tenant) }.allSatisfy { $0.size < 100 })
    }

    /// `waitUntilSeen` returns once the cache holds a write's revision (the change is then in
    /// the cache), at once for a revision already seen, and when its task is cancelled.
    @Test func waitUntilSeenReturnsOnceTheRevisionIsInTheCache() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("seen")
        let informer = Informer<Gadget>(store: store, tenant: t)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        let created = try await store.create(Gadget(tenant: t, name: "a", size: 3))
        await informer.waitUntilSeen(created.metadata.revision)
        #expect(informer.lastSeenRevision >= created.metadata.revision)
        #expect(informer.get(tenant: t, name: "a") == created)
        await informer.waitUntilSeen(1)

        let far = Task { await informer.waitUntilSeen(Int64.max) }
        far.cancel()
        await far.value
        #expect(informer.lastSeenRevision < Int64.max)
    }

    /// `confirmCurrent` checks a quiet cache against etcd with one read of keys only: it moves
    /// the cache's revision up to the read's when etcd holds what the cache holds, and refuses
    /// when an object was created, updated or deleted that the cache has not seen (the informers
    /// are stopped here, so they see nothing more).
    @Test(.timeLimit(.minutes(1))) func confirmCurrentTellsAQuietCacheFromOneBehind() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("confirm")
        let kept = try await store.create(Gadget(tenant: t, name: "kept", size: 1))
        _ = try await store.create(Gadget(tenant: t, name: "spare", size: 1))
        let informer = Informer<Gadget>(store: store, tenant: t)
        informer.start()
        try await informer.waitUntilSynced()
        // A write of another tenant moves etcd past the cache, which nothing tells.
        let elsewhere = try await store.create(Gadget(tenant: uniqueTenant("other"), name: "x"))
        #expect(informer.lastSeenRevision < elsewhere.metadata.revision)
        #expect(try await informer.confirmCurrent())
        #expect(informer.lastSeenRevision >= elsewhere.metadata.revision)

        informer.stop()
        await informer.waitUntilSeen(.max)  // returns once it no longer runs
        let seen = informer.lastSeenRevision
        // Created and deleted again: etcd holds what the cache holds.
        _ = try await store.create(Gadget(tenant: t, name: "brief"))
        try await store.delete(Gadget.self, tenant: t, name: "brief")
        #expect(try await informer.confirmCurrent())
        #expect(informer.lastSeenRevision > seen)
        // Created, unseen.
        _ = try await store.create(Gadget(tenant: t, name: "new"))
        #expect(try await informer.confirmCurrent() == false)
        try await store.delete(Gadget.self, tenant: t, name: "new")
        #expect(try await informer.confirmCurrent())
        // Deleted, unseen: no key is newer, but etcd counts one fewer.
        try await store.delete(Gadget.self, tenant: t, name: "spare")
        let before = informer.lastSeenRevision
        #expect(try await informer.confirmCurrent() == false)
        #expect(informer.lastSeenRevision == before)

        // Updated, unseen.
        let second = Informer<Gadget>(store: store, tenant: t)
        second.start()
        try await second.waitUntilSynced()
        second.stop()
        await second.waitUntilSeen(.max)
        #expect(try await second.confirmCurrent())
        var changed = kept
        changed.size = 2
        _ = try await store.update(changed)
        #expect(try await second.confirmCurrent() == false)
    }

    @Test func recoversAfterCompactionByRelisting() async throws {
        // The informer talks to member 0 only; writes go through members 1 and 2. While
        // member 0 is down, objects change and the history is compacted, so its watch cannot
        // resume when member 0 comes back: it must relist and deliver the difference.
        let cluster = try await EtcdClusterFixture.start(size: 3)
        defer { cluster.shutdown() }
        let informerStore = ResourceStore(
            client: try Etcd.Client(
                Etcd.Configuration(endpoints: [cluster.endpoints[0]], retryBackoff: .milliseconds(20))))
        let client = try Etcd.Client(endpoints: Array(cluster.endpoints[1...]))
        let store = ResourceStore(client: client)
        let t = "compaction"
        _ = try await store.create(Gadget(tenant: t, name: "keep", size: 1))
        let gone = try await store.create(Gadget(tenant: t, name: "gone", size: 1))
        let informer = Informer<Gadget>(store: informerStore, tenant: t)
        informer.start()
        defer { informer.stop() }
        try await informer.waitUntilSynced()
        let log = EventLog()
        let subscriber = Task { for await e in informer.events() { log.append(describe(e)) } }
        defer { subscriber.cancel() }
        try await eventually("initial adds") { log.values.count == 2 }

        cluster.kill(0)
        _ = try await retrying { try await store.create(Gadget(tenant: t, name: "new", size: 5)) }
        var keep = try await store.get(Gadget.self, tenant: t, name: "keep")
        keep.size = 2
        _ = try await store.update(keep)
        try await store.delete(Gadget.self, tenant: t, name: "gone", expectedVersion: gone.metadata.resourceVersion)
        let now = try await client.range(.prefix("/"), countOnly: true).header.revision
        try await client.compact(revision: now, physical: true)
        try await cluster.restart(0)

        try await eventually("informer caught up") {
            informer.list().map(\.metadata.name) == ["keep", "new"]
                && informer.get(tenant: t, name: "keep")?.size == 2
        }
        // Subscribers get events on their own task: wait until the three changes reached it.
        try await eventually("subscriber got the changes") { log.values.count >= 5 }
        let after = Array(log.values.dropFirst(2))
        #expect(Set(after) == Set(["add new 5", "upd keep 1->2", "del gone"]))
        #expect(after.count == 3)
        #expect(informer.relistCount >= 1)
        #expect(informer.lastSeenRevision >= now)
    }
}

@discardableResult
func retrying<T>(timeout: Double = 30, _ body: () async throws -> T) async throws -> T {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        do { return try await body() } catch {
            if Date() > deadline { throw error }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
