import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The real `gpuplane-scheduler` executable, two replicas at a time: handover on SIGTERM and
/// on kill -9, fencing of a paused leader, and exactly-once metering across a failover.
@Suite("Scheduler leadership (processes)", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct SchedulerLeadershipTests {
    /// Waits for a leader named in `identities` and returns it.
    private func leader(_ h: SchedulerHarness, among identities: Set<String>, timeout: Double = 30) async throws
        -> (identity: String, revision: Int64)
    {
        var found: (String, Int64)?
        try await eventually("a leader among \(identities.sorted())", timeout: timeout) {
            guard let current = try await h.currentLeader(), identities.contains(current.identity) else { return false }
            found = current
            return true
        }
        guard let found else { throw HarnessError("no leader") }
        return found
    }

    @Test("SIGTERM: the leader resigns and the standby leads well before the lease would expire")
    func handoverOnSIGTERM() async throws {
        try await SchedulerHarness.with { h in
            // A 90 s lease: b can only lead within the 45 s deadline below if a resigned; waiting
            // for the lease to run out would take twice as long. No wall-clock assertion needed.
            let a = try h.startProcess(identity: "a", leaseTTL: 90)
            let first = try await leader(h, among: ["a"])
            #expect(first.identity == "a")
            let b = try h.startProcess(identity: "b", leaseTTL: 90)
            try await eventually("b campaigns") { b.isRunning && b.logTail().contains("ready") }
            a.signal(SIGTERM)
            let next = try await leader(h, among: ["b"], timeout: 45)
            #expect(next.identity == "b")
            // Foundation records the exit status once it reaps the child: wait for that too.
            try await eventually("a exits and is reaped") { a.exitStatus != nil }
            #expect(a.exitStatus == 0)
        }
    }

    @Test("kill -9: the standby leads once the dead leader's lease expires")
    func handoverOnKill() async throws {
        try await SchedulerHarness.with { h in
            let a = try h.startProcess(identity: "a", leaseTTL: 3)
            _ = try await leader(h, among: ["a"])
            _ = try h.startProcess(identity: "b", leaseTTL: 3)
            try await Task.sleep(for: .milliseconds(500))
            try await h.addNode(Fixture.node("n1", gpus: 4))
            let start = ContinuousClock.now
            a.kill9()
            let next = try await leader(h, among: ["b"], timeout: 45)
            let elapsed = ContinuousClock.now - start
            #expect(next.identity == "b")
            // A lower bound only: b must not lead before a's lease can have run out (load can only
            // make this longer). How long it takes is the benchmark's business, not the test's.
            #expect(elapsed >= .milliseconds(1500), "b led after \(elapsed): before a's lease could expire")
            // And the new leader places.
            try await h.addReplica(pendingReplica("after"))
            #expect(try await h.waitBound("acme", "after").binding?.leaderRevision == next.revision)
        }
    }

    @Test("fencing: a leader paused past its lease commits nothing once resumed")
    func fencing() async throws {
        try await SchedulerHarness.with { h in
            for i in 0..<4 { try await h.addNode(Fixture.node("n\(i)", gpus: 2)) }
            let a = try h.startProcess(identity: "a", leaseTTL: 2)
            let leaderA = try await leader(h, among: ["a"])
            _ = try h.startProcess(identity: "b", leaseTTL: 2)
            for i in 0..<3 { try await h.addReplica(pendingReplica("early\(i)", tenant: "t\(i)")) }
            // Work arrives as the leader freezes: it may have decided and not yet written.
            for i in 0..<3 { try await h.addReplica(pendingReplica("mid\(i)", tenant: "t\(i)")) }
            a.signal(SIGSTOP)
            let leaderB = try await leader(h, among: ["b"], timeout: 20)
            #expect(leaderB.revision > leaderA.revision)
            for i in 0..<2 { try await h.addReplica(pendingReplica("late\(i)", tenant: "u\(i)")) }
            try await eventually("everything bound by b") {
                try await h.store.list(Replica.self).items.allSatisfy { $0.binding != nil }
            }
            a.signal(SIGCONT)
            // Give the resumed process time to try whatever it had in flight.
            // The whole log: under load a resumed process logs failed calls after the line.
            try await eventually("a notices it lost", timeout: 60) {
                a.logTail(bytes: 1 << 24).contains("lost") || !a.isRunning
            }
            // a's key is deleted when its lease expires: a can commit nothing after that, and b
            // (whose key was created while it campaigned) leads only from then on. Under load a
            // may lead more than one term before it is paused (its 2 s lease lapses before b
            // campaigns, and it is elected again with a new key): each term is checked alike.
            var aTerms: [Int64: Int64] = [leaderA.revision: try await h.leadershipEnd(createdAt: leaderA.revision)]
            let replicas = try await h.store.list(Replica.self).items
            #expect(replicas.count == 8)
            for term in Set(replicas.compactMap { $0.binding?.leaderRevision }) where term != leaderB.revision && aTerms[term] == nil {
                let leadership = try await h.leadership(createdAt: term)
                #expect(leadership.identity == "a", "a binding names the term created at \(term), held by \(leadership.identity)")
                aTerms[term] = leadership.end
            }
            let aEnded = aTerms.values.max() ?? 0
            var held: [String: String] = [:]
            for replica in replicas {
                let binding = try #require(replica.binding)
                for gpu in binding.gpuIndices {
                    let slot = "\(binding.node)/\(gpu)"
                    #expect(held[slot] == nil, "GPU \(slot) bound twice: \(held[slot] ?? "") and \(replica.metadata.name)")
                    held[slot] = replica.metadata.name
                }
                // Every binding names the term that wrote it: one of a's, each written before
                // that term ended, or b's, written after a's last ended.
                if let end = aTerms[binding.leaderRevision] {
                    #expect(replica.metadata.revision < end, "\(replica.metadata.name) written by a after its leadership ended")
                } else {
                    #expect(binding.leaderRevision == leaderB.revision)
                    #expect(replica.metadata.revision > aEnded)
                }
            }
        }
    }

    @Test("metering is exactly once per allocation and interval across a kill -9 failover, with backfill")
    func meterAcrossFailover() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 4))
            // Three allocations already bound and running, as the agent reports them.
            for i in 0..<3 {
                var replica = pendingReplica("run\(i)")
                replica.metadata.created = Date(timeIntervalSince1970: 1_700_000_000)
                replica.binding = Binding(node: "n1", gpuIndices: [i])
                replica.status.phase = .running
                try await h.addReplica(replica)
            }
            let a = try h.startProcess(identity: "a", leaseTTL: 3, meterInterval: "1s")
            _ = try await leader(h, among: ["a"])
            _ = try h.startProcess(identity: "b", leaseTTL: 3, meterInterval: "1s")
            func intervals() async throws -> [Int64: Int] {
                var counts: [Int64: Int] = [:]
                for record in try await h.store.list(UsageRecord.self).items {
                    counts[Int64(record.spec.intervalStart.timeIntervalSince1970), default: 0] += 1
                }
                return counts
            }
            try await eventually("a meters two intervals", timeout: 20) { try await intervals().count >= 2 }
            a.kill9()
            let killedAt = Int64(Date().timeIntervalSince1970)
            _ = try await leader(h, among: ["b"], timeout: 20)
            try await eventually("b meters past the failover", timeout: 30) {
                (try await intervals().keys.max() ?? 0) >= killedAt + 2
            }
            let counts = try await intervals()
            let starts = counts.keys.sorted()
            let first = try #require(starts.first)
            let last = try #require(starts.last)
            // No interval missing (the gap was backfilled) and none metered twice.
            #expect(starts == Array(stride(from: first, through: last, by: 1)), "intervals \(starts)")
            for (start, count) in counts {
                #expect(count == 3, "interval \(start) has \(count) records")
            }
            let records = try await h.store.list(UsageRecord.self).items
            let sample = try #require(records.first)
            #expect(sample.spec.seconds == 1)
            #expect(sample.spec.mode == .dedicated)
            // Enterprise plan by default? No tenant object: the free plan includes no Mode 1 hours.
            #expect(sample.spec.costMicroDollars == Pricing.standard.cost(mode: .dedicated, priority: .inference, seconds: 1))
        }
    }
}
