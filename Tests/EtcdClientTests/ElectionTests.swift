import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

@Suite("Election against real etcd")
struct ElectionTests {
    @Test func secondCampaignerLeadsOnlyAfterResignThenAfterLeaseExpiry() async throws {
        let client = try await SharedEtcd.client()
        let name = uniquePrefix("election") + "leader"
        let leaseA = try await client.grantLease(ttl: 120)
        // Nobody keeps C's lease alive: it must outlast the whole test on a loaded machine.
        let leaseC = try await client.grantLease(ttl: 120)

        let a = try await client.campaign(name, lease: leaseA.id, value: "a")
        #expect(try await client.leader(name)?.valueString == "a")

        // Granted just before its keep-alive starts (a loaded full-suite run once spent B's
        // whole TTL between an earlier grant and the first renewal, so B's campaign found no
        // lease), and long enough that a loaded machine renews it in time (every TTL/3).
        let leaseB = try await client.grantLease(ttl: 8)
        let keepB = Task { for try await _ in client.keepAlive(leaseB.id, ttl: leaseB.ttl) {} }
        let campaignFailure = Collected<Never>()
        let campaignB = Task {
            do {
                return try await client.campaign(name, lease: leaseB.id, value: "b")
            } catch {
                campaignFailure.finish(error)
                throw error
            }
        }
        // A campaign that failed (its lease gone) would never queue: stop waiting, say why.
        try await eventually("b queued") {
            if campaignFailure.isFinished { return true }
            return try await client.range(.prefix(name + "/")).count == 2
        }
        if let error = campaignFailure.error { throw error }
        #expect(try await client.leader(name)?.valueString == "a")

        // A's fence holds while A leads.
        let fenced = try await client.txn(compare: [a.fence], success: [.put(.init(name + "-fenced", "a"))])
        #expect(fenced.succeeded)
        try await client.proclaim(a, value: "a2")
        #expect(try await client.leader(name)?.valueString == "a2")

        try await client.resign(a)
        let b = try await campaignB.value
        #expect(b.lease == leaseB.id)
        #expect(try await client.leader(name)?.valueString == "b")
        // A deposed leader can no longer write or proclaim.
        let stale = try await client.txn(compare: [a.fence], success: [.put(.init(name + "-fenced", "stale"))])
        #expect(!stale.succeeded)
        do {
            try await client.proclaim(a, value: "again")
            Issue.record("deposed leader proclaimed")
        } catch let e as EtcdError {
            #expect(e.code == .notLeader)
        }

        // C waits behind B; B's lease expires once its keep-alive stops.
        let campaignC = Task { try await client.campaign(name, lease: leaseC.id, value: "c") }
        try await eventually("c queued") { try await client.range(.prefix(name + "/")).count == 2 }
        keepB.cancel()
        let c = try await campaignC.value
        #expect(try await client.leader(name)?.valueString == "c")
        let fencedB = try await client.txn(compare: [b.fence], success: [.put(.init(name + "-fenced", "b"))])
        #expect(!fencedB.succeeded)
        try await client.resign(c)
        #expect(try await client.leader(name) == nil)
    }

    @Test func observeSeesSuccessiveLeaders() async throws {
        let client = try await SharedEtcd.client()
        let name = uniquePrefix("observe") + "leader"
        // Long leases: a loaded full run took 78 s over this test, past 30 s ones.
        let lease1 = try await client.grantLease(ttl: 600)
        let lease2 = try await client.grantLease(ttl: 600)
        defer { Task { for lease in [lease1.id, lease2.id] { _ = try? await client.revokeLease(lease) } } }
        let first = try await client.campaign(name, lease: lease1.id, value: "one")
        let seen = Collected<String>()
        let watcher = Task {
            do {
                for try await kv in client.observe(name) { seen.append([kv.valueString]) }
            } catch { seen.finish(error) }
        }
        defer { watcher.cancel() }
        try await eventually("first leader observed") { seen.values == ["one"] }
        let second = Task { try await client.campaign(name, lease: lease2.id, value: "two") }
        try await eventually("second queued") { try await client.range(.prefix(name + "/")).count == 2 }
        try await client.resign(first)
        let leader2 = try await second.value
        try await eventually("second leader observed") { seen.values == ["one", "two"] }
        try await client.resign(leader2)
    }
}
