import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// The short form of the fault suite (issue 17): three real `gpuplane-scheduler` processes
/// against etcd while replicas come and go; the leader is killed with SIGKILL and frozen with
/// SIGSTOP past its lease, again and again. Afterwards a checker replays etcd's history (every
/// revision, not only the end state) and proves that no GPU was ever bound to two replicas,
/// that no binding named a GPU its node lacks, that revisions only grew, and that every replica
/// ends placed or pending with a reason. `GPUPLANE_FAULT_ROUNDS` makes it longer.
@Suite("Faults: schedulers killed and frozen, checked against etcd's history", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct SchedulerFaultTests {
    static var rounds: Int { ProcessInfo.processInfo.environment["GPUPLANE_FAULT_ROUNDS"].flatMap(Int.init) ?? 4 }

    @Test func noGPUIsEverBoundTwiceAcrossLeaderFaults() async throws {
        try await SchedulerHarness.with { h in
            let start = try await h.client.range(.key("/"), countOnly: true).header.revision
            let nodes = ["n1", "n2", "n3"]
            for node in nodes { try await h.addNode(Fixture.node(node, gpus: 4)) }
            var processes: [String: ChildProcess] = [:]
            for identity in ["a", "b", "c"] { processes[identity] = try h.startProcess(identity: identity, leaseTTL: 2) }

            // Churn: 36 one-GPU replicas of three tenants (4 whole GPUs each by default) for 12
            // GPUs, bound ones deleted now and then, so pending ones keep being placed while the
            // faults happen.
            let tenants = ["t0", "t1", "t2"]
            let store = h.store
            let churn = Task {
                var random = SplitMix64(seed: 17)
                for i in 0..<36 {
                    _ = try? await store.create(pendingReplica("r\(i)", tenant: tenants[i % 3]))
                    if i % 3 == 2 {
                        let bound = (try? await store.list(Replica.self).items.filter { $0.binding != nil }) ?? []
                        if !bound.isEmpty {
                            let victim = bound[Int(random.next() % UInt64(bound.count))]
                            try? await store.delete(Replica.self, tenant: victim.metadata.tenant, name: victim.metadata.name)
                        }
                    }
                    try? await Task.sleep(for: .milliseconds(150))
                }
            }
            var faults: [String] = []
            for round in 0..<Self.rounds {
                var found: (identity: String, revision: Int64)?
                try await eventually("a leader", timeout: 60) {
                    found = try await h.currentLeader()
                    return found != nil
                }
                guard let leader = found, let process = processes[leader.identity] else { continue }
                if round % 2 == 0 {
                    process.kill9()
                    faults.append("kill -9 \(leader.identity)")
                    try await eventually("another leader after kill -9 of \(leader.identity)", timeout: 60) {
                        (try await h.currentLeader()).map { $0.revision != leader.revision } ?? false
                    }
                    processes[leader.identity] = try h.startProcess(identity: leader.identity, leaseTTL: 2)
                } else {
                    process.signal(SIGSTOP)
                    faults.append("SIGSTOP \(leader.identity) past its lease")
                    try await eventually("another leader while \(leader.identity) is frozen", timeout: 60) {
                        (try await h.currentLeader()).map { $0.revision != leader.revision } ?? false
                    }
                    process.signal(SIGCONT)
                }
            }
            try await churn.value
            // Quiescent: as many bound as fit (12 GPUs, 4 per tenant).
            let remaining = try await store.list(Replica.self).items
            let fit = min(12, tenants.reduce(0) { sum, tenant in sum + min(4, remaining.filter { $0.metadata.tenant == tenant }.count) })
            do {
                try await eventually("every replica that fits bound again", timeout: 90) {
                    try await store.list(Replica.self).items.filter { $0.binding != nil }.count == fit
                }
            } catch {
                let items = try await store.list(Replica.self).items
                let leader = try await h.currentLeader()
                Issue.record("""
                    \(items.filter { $0.binding != nil }.count) bound of \(items.count); leader \(leader.map { "\($0.identity)@\($0.revision)" } ?? "none"); \
                    faults \(faults); pending: \(items.filter { $0.binding == nil }.prefix(3).map { "\($0.metadata.name): \($0.status.message ?? "-")" })
                    \(processes.map { "--- \($0.key) (running \($0.value.isRunning)) ---\n\($0.value.logTail(bytes: 1500))" }.joined(separator: "\n"))
                    """)
                throw error
            }
            let end = try await h.client.range(.key("/"), countOnly: true).header.revision
            let report = try await HistoryChecker.check(h.client, from: start + 1, through: end)
            #expect(report.violations.isEmpty, "\(faults): \(report.violations.joined(separator: "\n"))")
            #expect(report.revisions > 0)
            // Every replica placed, or pending with a reason.
            let replicas = try await store.list(Replica.self).items
            for replica in replicas where replica.binding == nil {
                #expect(replica.status.phase == .pending)
                let reasons = try await h.events(about: replica.metadata.name).map(\.spec.reason)
                let said = reasons.contains("FailedScheduling") || !(replica.status.message ?? "").isEmpty
                #expect(said, "\(replica.metadata.name) waits with no reason")
            }
            print("fault suite (short): \(faults.count) faults (\(faults.joined(separator: ", "))), \(report.revisions) revisions and \(report.bindingsSeen) bindings checked")
        }
    }
}

extension SchedulerFaultTests {
    /// The checker can fail: a GPU bound twice for two revisions, and a GPU the node lacks,
    /// written straight into etcd and then undone, are found in the history though the end
    /// state is clean.
    @Test func theCheckerFindsWhatTheEndStateHides() async throws {
        try await SchedulerHarness.with { h in
            let start = try await h.client.range(.key("/"), countOnly: true).header.revision
            try await h.addNode(Fixture.node("n1", gpus: 2))
            var first = pendingReplica("one")
            first.binding = Binding(node: "n1", gpuIndices: [1])
            first.status.phase = .bound
            var second = pendingReplica("two")
            second.binding = Binding(node: "n1", gpuIndices: [1])
            second.status.phase = .bound
            var third = pendingReplica("three")
            third.binding = Binding(node: "n1", gpuIndices: [7])
            third.status.phase = .bound
            for replica in [first, second, third] { try await h.addReplica(replica) }
            for name in ["two", "three"] { try await h.store.delete(Replica.self, tenant: "acme", name: name) }
            // A leader whose key is gone (frozen past its lease, say) binds: fencing broken. And
            // the leader of the moment binds: fine.
            let deposedKey = Scheduler.defaultElectionName + "/deposed"
            let deposed = try await h.client.put(deposedKey, "frozen").header.revision
            _ = try await h.client.delete(.key(deposedKey))
            let leaderKey = Scheduler.defaultElectionName + "/leading"
            let leading = try await h.client.put(leaderKey, "leading").header.revision
            var fourth = pendingReplica("four")
            fourth.binding = Binding(node: "n1", gpuIndices: [0], leaderRevision: deposed)
            fourth.status.phase = .bound
            try await h.addReplica(fourth)
            try await h.store.delete(Replica.self, tenant: "acme", name: "four")
            var fifth = pendingReplica("five")
            fifth.binding = Binding(node: "n1", gpuIndices: [0], leaderRevision: leading)
            fifth.status.phase = .bound
            try await h.addReplica(fifth)
            _ = try await h.client.delete(.key(leaderKey))
            let end = try await h.client.range(.key("/"), countOnly: true).header.revision
            let report = try await HistoryChecker.check(h.client, from: start + 1, through: end)
            #expect(report.violations.contains { $0.contains("GPU n1/1 held by") }, "\(report.violations)")
            #expect(report.violations.contains { $0.contains("GPU 7 of n1, which has 2") }, "\(report.violations)")
            #expect(report.violations.contains { $0.contains("acme/four bound by leader \(deposed), which is no longer") }, "\(report.violations)")
            #expect(!report.violations.contains { $0.contains("acme/five") }, "\(report.violations)")
            #expect(report.bindingsByLeader[leading] == 1)
        }
    }
}

/// Replays etcd's history of replicas, nodes and the scheduler's election, revision by
/// revision, and checks the placement and fencing invariants at each one.
enum HistoryChecker {
    struct Report {
        var revisions = 0
        var bindingsSeen = 0
        /// Bindings written, by the election revision of the leader that wrote them.
        var bindingsByLeader: [Int64: Int] = [:]
        var violations: [String] = []
    }

    /// Checks revisions `from` through `end`. With `seededAt`, the replicas and nodes as they
    /// were at that revision are read first (the history before it may be compacted away); the
    /// election's keys are read at `seededAt`, else at `from - 1`.
    ///
    /// Fencing: a binding written (a replica whose binding changed) at revision R names the
    /// leader that wrote it (``Binding/leaderRevision``, its election key's create revision);
    /// that key must exist at R and be the oldest of the election's keys (the leader). A
    /// leader frozen past its lease and resumed, whose key is gone, must write nothing.
    static func check(_ client: Etcd.Client, from: Int64, through end: Int64, seededAt seed: Int64? = nil) async throws -> Report {
        var report = Report()
        var replicas: [String: Replica] = [:]
        var nodeGPUs: [String: Int] = [:]
        if let seed {
            for kv in try await client.range(.prefix(KeySpace.root), revision: seed).kvs {
                let key = String(decoding: kv.key, as: UTF8.self)
                guard let (kind, _, name) = KeySpace.object(ofKey: key) else { continue }
                if kind == .replica { replicas[key] = try ResourceStore.decode(Replica.self, kv) }
                if kind == .node { nodeGPUs[name] = try ResourceStore.decode(Node.self, kv).spec.gpus.count }
            }
        }
        // The election's keys alive, key → create revision; the leader is the oldest.
        let electionPrefix = Scheduler.defaultElectionName + "/"
        var candidates: [String: Int64] = [:]
        for kv in try await client.range(.prefix(electionPrefix), revision: seed ?? (from - 1)).kvs {
            candidates[String(decoding: kv.key, as: UTF8.self)] = kv.createRevision
        }
        var recent: [String] = []
        var lastRevision: Int64 = from - 1
        func verify(at revision: Int64) {
            report.revisions += 1
            var holders: [String: String] = [:]
            for (key, replica) in replicas where replica.holdsCapacity && replica.spec.mode == .dedicated {
                guard let binding = replica.binding else { continue }
                for index in binding.gpuIndices {
                    if let count = nodeGPUs[binding.node], !(0..<count).contains(index) {
                        report.violations.append("rev \(revision): \(key) bound to GPU \(index) of \(binding.node), which has \(count)\n" + recent.suffix(20).joined(separator: "\n"))
                    }
                    let gpu = "\(binding.node)/\(index)"
                    if let other = holders[gpu] {
                        report.violations.append("rev \(revision): GPU \(gpu) held by \(other) and \(key)\n" + recent.suffix(20).joined(separator: "\n"))
                    }
                    holders[gpu] = key
                }
            }
        }
        let watch = client.watch(.prefix(KeySpace.root), startRevision: from)
        outer: for try await response in watch {
            var groupRevision: Int64?
            for event in response.events {
                let revision = event.revision
                if revision < lastRevision { report.violations.append("revision went back: \(revision) after \(lastRevision)") }
                if let group = groupRevision, group != revision { verify(at: group) }
                groupRevision = revision
                lastRevision = revision
                let key = String(decoding: event.kv.key, as: UTF8.self)
                if key.hasPrefix(electionPrefix) {
                    switch event.type {
                    case .put:
                        if candidates[key] == nil { recent.append("rev \(revision): election key \(event.kv.createRevision) created") }
                        candidates[key] = event.kv.createRevision
                    case .delete:
                        recent.append("rev \(revision): election key \(candidates[key].map(String.init) ?? key) deleted")
                        candidates[key] = nil
                    }
                    continue
                }
                guard let (kind, tenant, name) = KeySpace.object(ofKey: key) else { continue }
                switch (kind, event.type) {
                case (.replica, .put):
                    let replica = try ResourceStore.decode(Replica.self, event.kv)
                    if let binding = replica.binding, replicas[key]?.binding != binding {
                        report.bindingsSeen += 1
                        report.bindingsByLeader[binding.leaderRevision, default: 0] += 1
                        recent.append("rev \(revision): \(tenant)/\(name) bound to \(binding.node) \(binding.gpuIndices) by leader \(binding.leaderRevision)")
                        let leader = candidates.values.min()
                        if leader != binding.leaderRevision {
                            let why = candidates.values.contains(binding.leaderRevision)
                                ? "a candidate, not the leader (\(leader.map(String.init) ?? "none"))"
                                : "no longer (or never) in the election; the leader is \(leader.map(String.init) ?? "none")"
                            report.violations.append(
                                "rev \(revision): \(tenant)/\(name) bound by leader \(binding.leaderRevision), which is \(why)\n"
                                    + recent.suffix(20).joined(separator: "\n"))
                        }
                    } else if replica.binding == nil, replicas[key]?.binding != nil {
                        recent.append("rev \(revision): \(tenant)/\(name) unbound")
                    }
                    replicas[key] = replica
                case (.replica, .delete):
                    recent.append("rev \(revision): \(tenant)/\(name) deleted")
                    replicas[key] = nil
                case (.node, .put):
                    nodeGPUs[name] = try ResourceStore.decode(Node.self, event.kv).spec.gpus.count
                case (.node, .delete):
                    nodeGPUs[name] = nil
                default:
                    break
                }
            }
            if let group = groupRevision { verify(at: group) }
            if lastRevision >= end { break outer }
        }
        return report
    }
}
