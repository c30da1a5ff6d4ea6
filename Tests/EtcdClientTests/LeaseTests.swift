import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

@Suite("Leases against real etcd")
struct LeaseTests {
    @Test func expiryDeletesKeys() async throws {
        let client = try await SharedEtcd.client()
        let p = uniquePrefix("lease")
        // Long enough that a loaded CI machine cannot let it lapse before the checks below (a
        // 2 s lease once expired between the put and the read, a 6 s one while the whole suite
        // started, a 15 s one at a loaded suite's start), short enough to wait out.
        let lease = try await client.grantLease(ttl: 45)
        #expect(lease.ttl == 45)
        try await client.put(p + "k", "v", lease: lease.id)
        #expect(try await client.get(p + "k")?.lease == lease.id)
        let ttl = try await client.leaseTimeToLive(lease.id, keys: true)
        #expect(ttl.grantedTTL == 45)
        #expect(ttl.keys == [Data((p + "k").utf8)])
        try await eventually("leased key expired", timeout: 60) { try await client.get(p + "k") == nil }
        do {
            _ = try await client.keepAliveOnce(lease.id)
            Issue.record("expired lease renewed")
        } catch let e as EtcdError {
            #expect(e.code == .leaseNotFound)
        }
        do {
            _ = try await client.leaseTimeToLive(lease.id)
            Issue.record("expired lease has a TTL")
        } catch let e as EtcdError {
            #expect(e.code == .leaseNotFound)
        }
    }

    @Test func revokeDeletesKeysAndIsTyped() async throws {
        let client = try await SharedEtcd.client()
        let p = uniquePrefix("revoke")
        let lease = try await client.grantLease(ttl: 60)
        try await client.put(p + "k", "v", lease: lease.id)
        try await client.revokeLease(lease.id)
        #expect(try await client.get(p + "k") == nil)
        do {
            try await client.revokeLease(lease.id)
            Issue.record("revoked twice")
        } catch let e as EtcdError {
            #expect(e.code == .leaseNotFound)
        }
        // A write under the gone lease is typed too (the heartbeat writer takes a new lease then).
        do {
            try await client.put(p + "k", "v", lease: lease.id)
            Issue.record("written under a revoked lease")
        } catch let e as EtcdError {
            #expect(e.code == .leaseNotFound, "\(e)")
        }
    }

    @Test func keepAliveKeepsAKeyPastItsTTL() async throws {
        let client = try await SharedEtcd.client()
        let p = uniquePrefix("keepalive")
        // Renewals run on their own thread, so the tests beside this one in the parallel suite
        // (which used to keep Swift's two cooperative threads busy for over 10 s) cannot delay them.
        // 20 s: etcd itself must answer a renewal within two thirds of the TTL, and a CI machine
        // starting dozens of daemons once kept the shared member from doing so for a 10 s lease.
        let lease = try await client.grantLease(ttl: 20)
        try await client.put(p + "k", "v", lease: lease.id)
        let renewals = Collected<Int64>()
        let keeper = Task {
            do {
                for try await r in client.keepAlive(lease.id, ttl: lease.ttl) { renewals.append([r.ttl]) }
                renewals.finish(nil)
            } catch { renewals.finish(error) }
        }
        // Stay past two TTLs, checking the key at every poll.
        let until = Date().addingTimeInterval(45)
        var alive = true
        try await eventually("two TTLs passed with the key alive", timeout: 90, every: 0.2) {
            if try await client.get(p + "k") == nil { alive = false }
            return Date() > until || !alive
        }
        try #require(alive, "key expired although kept alive")
        // Handing renewals over needs the cooperative pool, which the suite may keep busy: wait.
        try await eventually("renewals handed over", timeout: 60) { renewals.values.count >= 4 }
        keeper.cancel()
        _ = await keeper.value
        try await eventually("key expired after keep-alive stopped", timeout: 60) { try await client.get(p + "k") == nil }
    }

    @Test func keepAliveReportsALostLease() async throws {
        let client = try await SharedEtcd.client()
        // A 60 s lease and a minute for the first renewal to be handed over: the suite may keep
        // the cooperative pool busy for seconds, and a loaded shared member left a 10 s lease's
        // first renewal unanswered until the lease was gone.
        let lease = try await client.grantLease(ttl: 60)
        let outcome = Collected<Int64>()
        let keeper = Task {
            do {
                for try await r in client.keepAlive(lease.id, ttl: lease.ttl) { outcome.append([r.ttl]) }
                outcome.finish(nil)
            } catch { outcome.finish(error) }
        }
        try await eventually("first renewal", timeout: 90) { !outcome.values.isEmpty }
        try await client.revokeLease(lease.id)
        try await eventually("loss reported", timeout: 30) { outcome.isFinished }
        #expect((outcome.error as? EtcdError)?.code == .leaseNotFound)
        _ = await keeper.value
    }
}
