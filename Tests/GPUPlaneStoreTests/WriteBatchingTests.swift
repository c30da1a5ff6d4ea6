import EtcdClient
import Foundation
import GPUPlaneCore
@testable import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// Group commit: concurrent transactions that go to etcd together must each behave exactly as
/// they would alone.
@Suite("write batching against real etcd")
struct WriteBatchingTests {
    /// Many concurrent creates of distinct objects, each with a second object in its
    /// transaction: all succeed, each at the revision it reports, and under this load several
    /// share a revision (they went in one request).
    @Test func concurrentTransactionsAllLandAndShareRevisions() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("batch")
        let revisions = try await withThrowingTaskGroup(of: (Int, Int64).self) { group in
            for i in 0..<200 {
                group.addTask {
                    let (_, result) = try await store.transaction { txn in
                        try txn.create(Gadget(tenant: t, name: "g\(i)", size: i))
                        try txn.create(Sprocket(metadata: ObjectMeta(name: "s\(i)", tenant: t), teeth: i))
                    }
                    return (i, result.revision)
                }
            }
            return try await group.reduce(into: [Int: Int64]()) { $0[$1.0] = $1.1 }
        }
        #expect(revisions.count == 200)
        for (i, revision) in revisions {
            let gadget = try await store.get(Gadget.self, tenant: t, name: "g\(i)")
            let sprocket = try await store.get(Sprocket.self, tenant: t, name: "s\(i)")
            #expect(gadget.size == i && sprocket.teeth == i)
            #expect(gadget.metadata.resourceVersion == String(revision))
            #expect(sprocket.metadata.resourceVersion == String(revision))
        }
        #expect(Set(revisions.values).count < 200, "200 concurrent transactions all went alone")
        let statistics = try #require(store.batcher?.statistics)
        #expect(statistics.flat > 0 && statistics.nested == 0 && statistics.flatConflicts == 0, "\(statistics)")
    }

    /// A batch where one write's compare fails: the flat transaction writes nothing, the batch
    /// goes again nested, and every write gets its own outcome. Creates of names that exist
    /// fail with alreadyExists and leave those objects as they were; the others land. Writes of
    /// one, two and three objects share batches. Rounds repeat (fresh names) until one of
    /// them had a failed flat batch, so the fallback is known to have run.
    @Test func flatBatchWithAFailingCompareFallsBackToNested() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("flat")
        var round = 0
        while (store.batcher?.statistics.flatConflicts ?? 0) == 0 {
            round += 1
            try #require(round <= 10, "no batch with a failing compare formed in 10 rounds: \(String(describing: store.batcher?.statistics))")
            let prefix = "r\(round)"
            // Every fourth name exists already, with size -1.
            for i in stride(from: 0, to: 200, by: 4) {
                _ = try await store.create(Gadget(tenant: t, name: "\(prefix)-g\(i)", size: -1))
            }
            let outcomes = await withTaskGroup(of: (Int, StoreError.Code?).self) { group in
                for i in 0..<200 {
                    group.addTask {
                        do {
                            _ = try await store.transaction { txn in
                                try txn.create(Gadget(tenant: t, name: "\(prefix)-g\(i)", size: i))
                                for k in 0..<(i % 3) {
                                    try txn.create(Sprocket(metadata: ObjectMeta(name: "\(prefix)-s\(i)-\(k)", tenant: t), teeth: k))
                                }
                            }
                            return (i, nil)
                        } catch let error as StoreError {
                            return (i, error.code)
                        } catch {
                            return (i, .invalid)
                        }
                    }
                }
                return await group.reduce(into: [Int: StoreError.Code?]()) { $0[$1.0] = $1.1 }
            }
            for i in 0..<200 {
                let gadget = try await store.get(Gadget.self, tenant: t, name: "\(prefix)-g\(i)")
                let sprockets = try await store.list(Sprocket.self, tenant: t, namePrefix: "\(prefix)-s\(i)-").items
                if i % 4 == 0 {
                    #expect(outcomes[i] == .some(.alreadyExists), "write \(i): \(String(describing: outcomes[i]))")
                    #expect(gadget.size == -1 && sprockets.isEmpty, "write \(i) changed an object that existed")
                } else {
                    #expect(outcomes[i] == .some(nil), "write \(i): \(String(describing: outcomes[i]))")
                    #expect(gadget.size == i && sprockets.count == i % 3, "write \(i) did not land whole")
                }
            }
        }
        let statistics = try #require(store.batcher?.statistics)
        #expect(statistics.nested > 0, "\(statistics)")
    }

    /// Concurrent creates of one name: exactly one wins, the rest get alreadyExists; concurrent
    /// updates from one version: exactly one wins, the rest conflict. Never a lost write.
    @Test func sameKeyWritesStillConflict() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("same")
        let outcomes = await Self.outcomes(40) { i in _ = try await store.create(Gadget(tenant: t, name: "one", size: i)) }
        #expect(outcomes.filter { $0 == nil }.count == 1)
        #expect(outcomes.filter { $0 == .alreadyExists }.count == 39)

        let base = try await store.get(Gadget.self, tenant: t, name: "one")
        let updates = await Self.outcomes(40) { i in
            var changed = base
            changed.color = "c\(i)"
            _ = try await store.update(changed)
        }
        #expect(updates.filter { $0 == nil }.count == 1)
        #expect(updates.filter { $0 == .conflict }.count == 39)
    }

    /// Against an etcd with a lower `--max-txn-ops` than the store assumes, batches that etcd
    /// refuses flat (and nested) fall back until each write goes alone, and every write lands.
    @Test func aLowerMaxTxnOpsStillLandsEveryWrite() async throws {
        let etcd = try await EtcdFixture.start(extraArguments: ["--max-txn-ops", "8"])
        defer { etcd.shutdown() }
        let store = ResourceStore(client: try Etcd.Client(endpoints: etcd.endpoints))
        let t = uniqueTenant("ops")
        let outcomes = await Self.outcomes(60) { i in
            _ = try await store.transaction { txn in
                try txn.create(Gadget(tenant: t, name: "g\(i)", size: i))
                try txn.create(Sprocket(metadata: ObjectMeta(name: "s\(i)", tenant: t), teeth: i))
            }
        }
        #expect(outcomes.allSatisfy { $0 == nil }, "\(outcomes.compactMap { $0 })")
        #expect(try await store.list(Gadget.self, tenant: t).items.count == 60)
        #expect(try await store.list(Sprocket.self, tenant: t).items.count == 60)
    }

    /// Runs `count` writes at once: nil for each success, the store's error code otherwise.
    static func outcomes(_ count: Int, _ write: @escaping @Sendable (Int) async throws -> Void) async -> [StoreError.Code?] {
        await withTaskGroup(of: StoreError.Code?.self) { group in
            for i in 0..<count {
                group.addTask {
                    do {
                        try await write(i)
                        return nil
                    } catch let error as StoreError {
                        return error.code
                    } catch {
                        return .invalid
                    }
                }
            }
            return await group.reduce(into: [StoreError.Code?]()) { $0.append($1) }
        }
    }

    /// A write under a lease that is gone (etcd refuses the whole request it goes in) fails
    /// alone; the writes batched with it land. Three rounds of 60 concurrent creates, so the
    /// doomed write shares a batch with others (without the fallback, they all failed with it).
    @Test func aWriteUnderALostLeaseFailsAlone() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("lapsed")
        let lease = try await store.client.grantLease(ttl: 60)
        try await store.client.revokeLease(lease.id)
        let flatBefore = store.batcher?.statistics.flat ?? 0
        for round in 0..<3 {
            let failed = await Self.outcomes(60) { i in
                _ = try await store.transaction { txn in
                    try txn.create(Gadget(tenant: t, name: "r\(round)-g\(i)", size: i), lease: i == 30 ? lease.id : 0)
                }
            }
            #expect(failed.filter { $0 != nil }.count == 1, "round \(round): \(failed.compactMap { $0 })")
        }
        #expect((store.batcher?.statistics.flat ?? 0) > flatBefore, "no batch formed: the fallback was not needed")
        let items = try await store.list(Gadget.self, tenant: t).items
        #expect(items.count == 177 && !items.contains { $0.metadata.name.hasSuffix("-g30") })
    }

    /// A transaction etcd refuses (larger than its request limit) fails alone; the small ones
    /// that were queued with it still land.
    @Test func oneRefusedTransactionFailsAlone() async throws {
        let store = try await SharedStoreEtcd.store()
        let t = uniqueTenant("refused")
        let huge = String(repeating: "x", count: 2_000_000)
        let results = await withTaskGroup(of: (String, Bool).self) { group in
            for i in 0..<60 {
                group.addTask {
                    let name = i == 30 ? "huge" : "small\(i)"
                    do {
                        _ = try await store.create(Gadget(tenant: t, name: name, size: i, color: i == 30 ? huge : "red"))
                        return (name, true)
                    } catch {
                        return (name, false)
                    }
                }
            }
            return await group.reduce(into: [String: Bool]()) { $0[$1.0] = $1.1 }
        }
        #expect(results["huge"] == false)
        #expect(results.filter { $0.key != "huge" && !$0.value }.isEmpty, "\(results.filter { !$0.value }.keys.sorted())")
        #expect(try await store.list(Gadget.self, tenant: t).items.count == 59)
    }
}
