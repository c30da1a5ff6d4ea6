import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// The whole-system form of the fault suite (issue 17): a 3-member etcd, two api-servers, two
/// schedulers, two dedicated node-agents (fake NVML, podman; agent-1's clock 90 s ahead through
/// libfaketime) and a shared one whose weights cache lies on a small tmpfs, under a steady load
/// of applies and deletes through both api-servers, while, in turn, the etcd leader is killed,
/// one etcd member (a follower, then the leader) is cut off from the other two and healed, the
/// scheduler leader is killed, then frozen past its lease and resumed, then cut off from
/// etcd past its lease and reconnected, an api-server is
/// killed in the middle of applies, a node-agent is killed while its containers are being
/// created, podman's service is killed while a container is being created and started again,
/// etcd is compacted while a scheduler is frozen (its watch away), a node is cut off past its
/// heartbeat TTL and comes back, and the weights cache's disk is full during a fetch. After
/// every fault etcd's history since the last is replayed revision by revision (no GPU bound
/// twice or beyond its node, every binding written by the leader of its revision, revisions
/// increasing); at the end every acknowledged apply is there, every replica is placed or pending
/// with a reason, no replica has two containers, usage intervals of a replica never overlap and
/// stay within the meter's interval, the skewed node's replicas run and their logs are read, and
/// no node was NotReady but those whose agent was stopped.
@Suite("Faults: the whole system under load, checked against etcd's history", .serialized, .timeLimit(.minutes(15)),
       .enabled(if: EtcdFixture.isAvailable && PodmanFixture.isAvailable))
struct WholeSystemFaultTests {
    /// Fault rounds (each: every fault once); `GPUPLANE_FAULT_ROUNDS` makes it longer.
    static var rounds: Int { ProcessInfo.processInfo.environment["GPUPLANE_FAULT_ROUNDS"].flatMap(Int.init) ?? 1 }

    static var binaries: URL { URL(fileURLWithPath: SchedulerHarness.executable).deletingLastPathComponent() }

    static func application(_ name: String) -> String {
        """
        application:
          name: \(name)
          pods:
            - name: worker
              image: localhost/gpuplane-test-busybox:latest
              command: ["sh", "-c", "exec sleep 100000"]
              gpu:
                enabled: true
                model: custom
                memoryGB: 80
                priority: training
        """
    }

    /// What the load saw of one apply.
    enum Outcome: Equatable { case acknowledged, refused(Int), unknown, deleted }

    @Test func nothingLostNothingBoundTwiceAcrossFaults() async throws {
        let started = ContinuousClock.now
        func step(_ what: String) { print("[fault suite \(ContinuousClock.now - started)] \(what)") }
        // GPUPLANE_FAULT_CLOCK_SKEW (seconds, 90 by default) sets how far agent-1's clock runs ahead.
        let skew = ProcessInfo.processInfo.environment["GPUPLANE_FAULT_CLOCK_SKEW"].flatMap(Int.init) ?? 90
        let cluster = try await FaultCluster.start(binaries: Self.binaries, skewSeconds: skew) { print("fault cluster: \($0)") }
        let client = try Etcd.Client(Etcd.Configuration(endpoints: cluster.etcd.endpoints, requestTimeout: .seconds(5)))
        let store = ResourceStore(client: client)
        defer { cluster.shutdown() }
        do {
            let start = try await client.range(.key("/"), countOnly: true).header.revision
            let tokens = [try await cluster.tenant("fa", plan: "enterprise", gpuLimit: 64), try await cluster.tenant("fb", plan: "enterprise", gpuLimit: 64)]
            step("cluster up at revision \(start)")

            // The load: applies of one-GPU pods (8 GPUs in all) alternating tenants and
            // api-servers, the oldest deleted every third apply and whenever 12 are there, until
            // the faults are done (24 applies at least).
            let outcomes = Locked<[String: (tenant: Int, outcome: Outcome)]>([:])
            // When the last acknowledged apply through each api-server was sent.
            let lastAcknowledged = Locked<[Int: ContinuousClock.Instant]>([:])
            let faultsDone = Locked(false)
            let load = Task {
                var i = 0
                var live: [(name: String, tenant: Int)] = []  // acknowledged, oldest first
                while i < 24 || !faultsDone.withLock({ $0 }) {
                    let name = "app-\(i)", tenant = i % 2, via = (i / 2) % 2
                    let sent = ContinuousClock.now
                    do {
                        let answer = try await cluster.call("POST", "/v1/applications", token: tokens[tenant], body: Self.application(name), via: via, timeout: .seconds(20))
                        if answer.status != 201 { print("apply \(name) via api-\(via): \(answer.status) \(String(decoding: answer.body, as: UTF8.self).prefix(300))") }
                        outcomes.withLock { $0[name] = (tenant, answer.status == 201 ? .acknowledged : answer.status >= 500 ? .unknown : .refused(answer.status)) }
                        if answer.status == 201 {
                            live.append((name, tenant))
                            lastAcknowledged.withLock { $0[via] = max($0[via] ?? sent, sent) }
                        }
                    } catch {
                        outcomes.withLock { $0[name] = (tenant, .unknown) }
                    }
                    // The oldest application goes every third apply, and whenever 12 are
                    // there: its GPU (most often a bound one) goes to a waiting replica.
                    if (i % 3 == 2 || live.count > 12), !live.isEmpty {
                        // Sent once: deleted when answered so; when the answer is lost (an
                        // api-server killed meanwhile) either outcome is right. A 404 is kept as
                        // acknowledged, so the final check reports the lost application.
                        let victim = live.removeFirst()
                        do {
                            let answer = try await cluster.call("DELETE", "/v1/applications/\(victim.name)", token: tokens[victim.tenant], via: 1 - via, timeout: .seconds(20))
                            if answer.status == 200 || answer.status == 204 {
                                outcomes.withLock { $0[victim.name] = (victim.tenant, .deleted) }
                            } else {
                                print("delete \(victim.name) via api-\(1 - via): \(answer.status) \(String(decoding: answer.body, as: UTF8.self).prefix(300))")
                                if answer.status >= 500 { outcomes.withLock { $0[victim.name] = (victim.tenant, .unknown) } }
                            }
                        } catch {
                            print("delete \(victim.name) via api-\(1 - via): \(error)")
                            outcomes.withLock { $0[victim.name] = (victim.tenant, .unknown) }
                        }
                    }
                    i += 1
                    try? await Task.sleep(for: .milliseconds(700))
                }
            }

            var faults: [String] = []
            var cutOff: Set<String> = []  // nodes made NotReady on purpose
            var stopped: Set<String> = []  // nodes whose agent was killed (and restarted) or cut off
            var etcdCuts: [ClosedRange<Date>] = []  // while an etcd member was cut off, and 10 s after
            var reports: [HistoryChecker.Report] = []
            var segmentStart = start + 1
            var seed: Int64 = start
            // After every fault: etcd's history since the last check, revision by revision
            // (capacity, fencing, revisions). A violation names the fault it followed.
            func checkHistory(after fault: String) async throws {
                let now = try await client.range(.key("/"), countOnly: true).header.revision
                guard now >= segmentStart else { return }
                var report = try await HistoryChecker.check(client, from: segmentStart, through: now, seededAt: seed)
                report.violations = report.violations.map { "after \(fault): \($0)" }
                reports.append(report)
                (segmentStart, seed) = (now + 1, now)
                step("\(fault); history checked through revision \(now)")
            }
            for round in 0..<Self.rounds {
                // 1. The etcd leader, killed and restarted.
                if let leader = await Self.etcdLeader(cluster, client) {
                    cluster.etcd.kill(leader)
                    faults.append("kill -9 etcd member \(leader) (leader)")
                    try await eventually("another etcd leader", timeout: 60) { await Self.etcdLeader(cluster, client).map { $0 != leader } ?? false }
                    try await cluster.etcd.restart(leader, timeout: 60)
                    try await checkHistory(after: faults.last ?? "")
                }
                // 1b. One etcd member cut off from the other two (its raft traffic dropped both
                // ways; clients still reach it), a follower first, then the leader (the majority
                // elects another): cut off, it must take no write and answer no linearizable
                // read, applies through both api-servers still succeed, and once healed it
                // catches up with the majority.
                if cluster.canPartitionEtcd, let leader = await Self.etcdLeader(cluster, client) {
                    let follower = leader == 0 ? 1 : 0
                    let cutStarted = Date()
                    defer { etcdCuts.append(cutStarted.addingTimeInterval(-1)...Date().addingTimeInterval(10)) }  // the events count whole seconds
                    try await Self.cutEtcdMember(follower, cluster, client, apiServers: cluster.apiURLs.count, lastAcknowledged: lastAcknowledged)
                    faults.append("etcd member \(follower) (follower) cut off from the others, then healed")
                    try await checkHistory(after: faults.last ?? "")
                    // The leader may have changed: the healed member, its term raised by its
                    // lone campaigns (no pre-vote), makes the cluster elect again.
                    var leaderNow: Int?
                    try await eventually("an etcd leader", timeout: 60, every: 0.2) {
                        leaderNow = await Self.etcdLeader(cluster, client)
                        return leaderNow != nil
                    }
                    if let leaderNow {
                        try await Self.cutEtcdMember(leaderNow, cluster, client, apiServers: cluster.apiURLs.count, lastAcknowledged: lastAcknowledged)
                        faults.append("etcd member \(leaderNow) (leader) cut off from the others, then healed")
                        try await checkHistory(after: faults.last ?? "")
                    }
                }
                // A scheduler whose etcd client was on the member cut off may have lost its lease
                // meanwhile (3 s): the scheduler faults below need a leader.
                try await eventually("a scheduler leads", timeout: 60, every: 0.2) { try await SchedulerHarness.currentLeader(client) != nil }
                // 2. The scheduler leader, killed and restarted.
                if let schedulerLeader = try await SchedulerHarness.currentLeader(client) {
                    cluster.kill9(schedulerLeader.identity)
                    faults.append("kill -9 \(schedulerLeader.identity) (leader)")
                    try await eventually("another scheduler leads", timeout: 60) {
                        (try await SchedulerHarness.currentLeader(client)).map { $0.revision != schedulerLeader.revision } ?? false
                    }
                    try cluster.restart(schedulerLeader.identity)
                    try await checkHistory(after: faults.last ?? "")
                }
                // Another scheduler than the leader of `revision` leads, and placements go on
                // under it (the load frees a GPU every third apply).
                func anotherLeaderPlaces(after revision: Int64, while why: String) async throws {
                    var next: (identity: String, revision: Int64)?
                    try await eventually("another scheduler leads while \(why)", timeout: 60) {
                        next = try await SchedulerHarness.currentLeader(client)
                        return next.map { $0.revision != revision } ?? false
                    }
                    let newLeader = next?.revision ?? 0
                    try await eventually("the new leader binds a replica", timeout: 60, every: 0.3) {
                        try await store.list(Replica.self).items.contains { $0.binding?.leaderRevision == newLeader }
                    }
                }
                // 2b. The scheduler leader frozen (SIGSTOP) past its lease until the other one
                // leads and places, then resumed: it must notice that it lost and write nothing
                // more (the history's fencing check: every binding is written by the leader of
                // its revision).
                // The election key can outlive its holder's term by up to its lease (3 s): freeze
                // only a process whose own log, read while it is stopped, still says it leads
                // at the key's revision; otherwise resume it and look again.
                var frozenLeader: (identity: String, revision: Int64, process: ChildProcess)?
                try await eventually("a scheduler frozen while it leads", timeout: 60, every: 0.3) {
                    guard let leader = try await SchedulerHarness.currentLeader(client), let process = cluster.process(leader.identity) else {
                        return false
                    }
                    process.signal(SIGSTOP)
                    if Self.leadsAccordingToItsLog(process.logFile, revision: leader.revision) {
                        frozenLeader = (leader.identity, leader.revision, process)
                        return true
                    }
                    process.signal(SIGCONT)
                    return false
                }
                if let (identity, revision, process) = frozenLeader {
                    let frozen = (identity: identity, revision: revision)
                    let lostLine = "campaigning again"  // its term ended: its lease lost, or its session failed
                    let lostBefore = Self.count(lostLine, in: process.logFile)
                    faults.append("SIGSTOP \(frozen.identity) (leader) past its lease, resumed")
                    do {
                        try await anotherLeaderPlaces(after: frozen.revision, while: "\(frozen.identity) is frozen")
                    } catch {
                        process.signal(SIGCONT)
                        throw error
                    }
                    process.signal(SIGCONT)
                    do {
                        try await eventually("\(frozen.identity) notices it lost once resumed", timeout: 60, every: 0.3) {
                            Self.count(lostLine, in: process.logFile) > lostBefore || !process.isRunning
                        }
                    } catch {
                        let leader = try? await SchedulerHarness.currentLeader(client)
                        Issue.record("\(frozen.identity) (leader at \(frozen.revision)) frozen, resumed; leader now \(String(describing: leader)); its log:\n\(process.logTail(bytes: 3000))")
                        throw error
                    }
                    #expect(process.isRunning, "\(frozen.identity) exited after its resumption")
                    try await checkHistory(after: faults.last ?? "")
                }
                // 2c. The scheduler leader cut off from etcd (every packet it sends dropped) past
                // its lease: it must step down on its own while cut off (its lease's local
                // deadline), another leads and places, and once reconnected it writes nothing
                // as the old leader (the history's fencing check).
                var cutLeader: (identity: String, revision: Int64)?
                try await eventually("a scheduler that leads by its log", timeout: 60, every: 0.3) {
                    cutLeader = try await SchedulerHarness.currentLeader(client)
                    guard let leader = cutLeader, let process = cluster.process(leader.identity) else { return false }
                    return Self.leadsAccordingToItsLog(process.logFile, revision: leader.revision)
                }
                if let cut = cutLeader, cluster.canPartition(cut.identity), let process = cluster.process(cut.identity) {
                    let lostLine = "campaigning again"  // its term ended: its lease lost, or its session failed
                    let lostBefore = Self.count(lostLine, in: process.logFile)
                    let resignsBefore = Self.count("resign failed", in: process.logFile) + Self.count("children still run", in: process.logFile)
                    try cluster.partition(cut.identity)
                    faults.append("\(cut.identity) (leader) cut off from etcd past its lease, then reconnected")
                    do {
                        try await eventually("\(cut.identity) steps down while cut off", timeout: 60, every: 0.3) {
                            Self.count(lostLine, in: process.logFile) > lostBefore
                        }
                        try await anotherLeaderPlaces(after: cut.revision, while: "\(cut.identity) is cut off")
                    } catch {
                        try? cluster.heal(cut.identity)
                        throw error
                    }
                    try cluster.heal(cut.identity)
                    #expect(process.isRunning, "\(cut.identity) exited while cut off")
                    // It stepped down as soon as its lease's deadline passed, before its etcd
                    // calls in flight and its resignation waited out their timeouts (cut off):
                    // the step-down is logged before either.
                    let log = (try? String(contentsOf: process.logFile, encoding: .utf8)) ?? ""
                    let since = log.components(separatedBy: "\n").filter { line in
                        [lostLine, "resign failed", "children still run"].contains { line.contains($0) }
                    }.dropFirst(lostBefore + resignsBefore)
                    #expect(since.first?.contains(lostLine) == true, "\(cut.identity) said it stepped down only after waiting on etcd: \(since)")
                    try await checkHistory(after: faults.last ?? "")
                }
                // 3. An api-server, killed in the middle of applies, and restarted.
                let api = "api-\(round % 2)"
                cluster.kill9(api)
                faults.append("kill -9 \(api) during applies")
                try await Task.sleep(for: .seconds(2))  // applies sent to it meanwhile fail: the load records them as unknown
                try cluster.restart(api)
                try await eventually("\(api) answers again", timeout: 60) { (try? await cluster.call("GET", "/readyz", via: round % 2).status) == 200 }
                try await checkHistory(after: faults.last ?? "")
                // 4. A node-agent, killed while a container of its node is being created (when
                // one comes within 20 s; killed regardless after that).
                let agent = "agent-\(round % 2)", node = "fault-node-\(round % 2)"
                let creating = (try? await eventually("a replica bound to \(node) and not yet running", timeout: 20, every: 0.05) {
                    try await store.list(Replica.self).items.contains { $0.binding?.node == node && $0.status.phase != .running }
                }) != nil
                cluster.kill9(agent)
                stopped.insert(node)
                faults.append("kill -9 \(agent)\(creating ? " during a container create" : "")")
                try await Task.sleep(for: .seconds(1))
                try cluster.restart(agent)
                try await eventually("\(node) Ready again after its agent's restart", timeout: 60, every: 0.5) { try await cluster.isReady(node) }
                try await checkHistory(after: faults.last ?? "")

                // 4b. Podman's service (the engine socket both agents speak to) killed with
                // SIGKILL while a container is being created, and started again on the same
                // socket: the agents retry, no replica gets a second container (checked at the
                // end), and the replica being created runs.
                let creatingNow = try? await Self.replicaBeingCreated(store, timeout: 20)
                try await cluster.podman.killService(restart: false)
                faults.append("kill -9 podman's service\(creatingNow.map { " while \($0.key) was being created on \($0.node)" } ?? "")")
                try await Task.sleep(for: .seconds(1))
                try await cluster.podman.startService()
                if let creatingNow {
                    try await eventually("\(creatingNow.key) runs (unless deleted or moved) after podman's restart", timeout: 90, every: 0.5) {
                        guard let replica = try await store.list(Replica.self).items.first(where: { Self.key($0) == creatingNow.key }) else { return true }
                        return replica.status.phase == .running || replica.binding?.node != creatingNow.node
                    }
                }
                try await checkHistory(after: faults.last ?? "")

                // 5. Compaction while a watcher is away: the standby scheduler frozen, etcd
                // compacted at the present, the scheduler resumed, then made leader. The history
                // up to there is checked first, since compaction removes it.
                try await checkHistory(after: "the faults before the compaction")
                let compactAt = segmentStart - 1
                let leaderNow = try await SchedulerHarness.currentLeader(client)
                let standby = leaderNow?.identity == "scheduler-0" ? "scheduler-1" : "scheduler-0"
                cluster.process(standby)?.signal(SIGSTOP)
                _ = try await client.compact(revision: compactAt)
                faults.append("compaction at \(compactAt) while \(standby) was frozen")
                try await Task.sleep(for: .seconds(1))
                cluster.process(standby)?.signal(SIGCONT)
                if let leaderNow, leaderNow.identity != standby {
                    cluster.kill9(leaderNow.identity)
                    faults.append("kill -9 \(leaderNow.identity) so that \(standby) leads after the compaction")
                    try await eventually("\(standby) leads", timeout: 60) { (try await SchedulerHarness.currentLeader(client))?.identity == standby }
                    try cluster.restart(leaderNow.identity)
                }
                try await checkHistory(after: faults.suffix(2).joined(separator: "; "))

                // 6. A node cut off longer than its heartbeat TTL (5 s): its agent frozen until
                // the node is NotReady, then resumed. Its containers kept running meanwhile;
                // whatever the scheduler moved away must not leave a second container behind.
                // The agent killed above, so that with one round (CI's) the other node's agent
                // never stops and must never be NotReady.
                let (cutAgent, cutNode) = (agent, node)
                cluster.process(cutAgent)?.signal(SIGSTOP)
                cutOff.insert(cutNode)
                try await eventually("\(cutNode) NotReady while its agent is frozen", timeout: 60, every: 0.5) { !(try await cluster.isReady(cutNode)) }
                cluster.process(cutAgent)?.signal(SIGCONT)
                faults.append("\(cutAgent) frozen until \(cutNode) was NotReady, then resumed")
                try await eventually("\(cutNode) Ready again", timeout: 60, every: 0.5) { try await cluster.isReady(cutNode) }
                try await checkHistory(after: faults.last ?? "")

                // 7. The weights cache's disk full: weights bigger than the room left, on the
                // shared node. The model server fails naming the disk and leaves nothing in the
                // cache; with room made, the next attempt fetches them and the pod runs.
                if let disk = cluster.weightsDisk {
                    try await Self.diskFull(cluster, disk, round: round, token: tokens[0], store: store)
                    faults.append("the weights cache's disk on \(disk.node) full during a fetch, then room made")
                    try await checkHistory(after: faults.last ?? "")
                }
            }
            faultsDone.withLock { $0 = true }
            _ = await load.value
            step("load done: \(outcomes.withLock { $0 }.count) applies")

            // Quiescent: the replicas of the applications that remain are placed as far as
            // GPUs allow (8), the rest pending.
            var replicas: [Replica] = []
            try await eventually("every replica that fits running", timeout: 180, every: 0.5) {
                replicas = try await store.list(Replica.self).items
                let running = replicas.filter { $0.binding != nil && $0.status.phase == .running }.count
                return running == min(8, replicas.count) && replicas.filter { $0.binding != nil }.count == running
            }
            step("quiescent: \(replicas.count) replicas, \(replicas.filter { $0.binding != nil }.count) bound")

            // The history, revision by revision.
            try await checkHistory(after: "the load's end")
            let violations = reports.flatMap(\.violations)
            #expect(violations.isEmpty, "\(faults): \(violations.joined(separator: "\n"))")
            let revisions = reports.reduce(0) { $0 + $1.revisions }, bindings = reports.reduce(0) { $0 + $1.bindingsSeen }
            #expect(bindings > 0)

            // Every acknowledged apply is there (unless the load deleted it); its replica too.
            let seen = outcomes.withLock { $0 }
            for (name, entry) in seen.sorted(by: { $0.key < $1.key }) {
                let tenant = ["fa", "fb"][entry.tenant]
                let answer = try await cluster.call("GET", "/v1/applications/\(name)", token: tokens[entry.tenant], via: 1)
                switch entry.outcome {
                case .acknowledged:
                    #expect(answer.status == 200, "acknowledged \(tenant)/\(name) is gone: \(answer.status)")
                    #expect(replicas.contains { $0.metadata.tenant == tenant && $0.metadata.name.hasPrefix(name + ".") }, "no replica of \(tenant)/\(name)")
                case .deleted:
                    #expect(answer.status == 404, "deleted \(tenant)/\(name) is back: \(answer.status)")
                case .refused(let status):
                    Issue.record("apply of \(tenant)/\(name) refused with \(status)")
                case .unknown:
                    break  // sent to a dying api-server: either outcome is right
                }
            }
            #expect(seen.values.filter { $0.outcome == .acknowledged || $0.outcome == .deleted }.count >= seen.count * 3 / 4, "\(seen)")

            // Placed, or pending with a reason.
            for replica in replicas where replica.binding == nil {
                #expect(replica.status.phase == .pending)
                #expect(!(replica.status.message ?? "").isEmpty, "\(replica.metadata.tenant)/\(replica.metadata.name) waits with no reason")
            }

            // No replica with two containers; every container's replica exists and is bound to
            // its node.
            var containers = ""
            var boundReplicas: Set<String> = []
            do {
            try await eventually("the containers match the bound replicas", timeout: 60, every: 0.5) {
                let listed: String
                do { listed = try await cluster.podman.podman(["ps", "-a", "--filter", "label=gpuplane.io/replica", "--format", "{{index .Labels \"gpuplane.io/replica\"}} {{index .Labels \"gpuplane.io/node\"}} {{.State}}"]) } catch {
                    containers = "podman ps: \(error)"
                    return false
                }
                var byReplica: [String: Int] = [:]
                for line in listed.split(separator: "\n") {
                    let fields = line.split(separator: " ")
                    // A model server's container (`_cluster/<server>`, the weights fault's) is no replica's.
                    guard fields.count >= 2, !fields[0].hasPrefix(ObjectMeta.clusterTenant + "/") else { continue }
                    byReplica[String(fields[0]), default: 0] += 1
                }
                let bound = Set(replicas.filter { $0.binding != nil }.map { "\($0.metadata.tenant)/\($0.metadata.name)" })
                #expect(byReplica.values.allSatisfy { $0 == 1 }, "a replica with two containers: \(listed)")
                containers = listed
                boundReplicas = bound
                return Set(byReplica.keys) == bound
            }
            } catch {
                Issue.record("containers:\n\(containers)\nbound replicas: \(boundReplicas.sorted())")
                throw error
            }

            // Usage: the metered intervals of one replica never overlap (each second once).
            let usage = try await store.list(UsageRecord.self).items.filter { !$0.spec.isMonthly }
            for (replica, records) in Dictionary(grouping: usage, by: { "\($0.metadata.tenant)/\($0.spec.replica)" }) {
                let spans = records.map { ($0.spec.intervalStart, $0.spec.intervalStart.addingTimeInterval(Double($0.spec.seconds))) }.sorted { $0.0 < $1.0 }
                for (a, b) in zip(spans, spans.dropFirst()) {
                    #expect(a.1 <= b.0, "usage of \(replica) counted twice: \(a) and \(b)")
                }
            }

            // ... and each is sane: within the meter's 2 s interval, never in the future. The
            // meter counts on the scheduler's clock alone, so a node whose clock is off (the
            // skewed agent) cannot move them.
            let now = Date()
            for record in usage {
                #expect(record.spec.seconds > 0 && record.spec.seconds <= 2, "\(record.metadata.name): \(record.spec.seconds) s")
                #expect(record.spec.intervalStart.addingTimeInterval(Double(record.spec.seconds)) <= now.addingTimeInterval(1), "\(record.metadata.name) ends in the future")
            }

            // The node whose clock runs ahead: Ready throughout (the NotReady check below), its
            // replicas run, and the api-server reads their logs from its agent (a request the
            // agent checks against its own clock).
            if let skewed = cluster.skewedAgent {
                let node = cluster.nodeNames[Int(skewed.label.split(separator: "-").last ?? "") ?? 1]
                let running = replicas.filter { $0.binding?.node == node && $0.status.phase == .running }
                #expect(!running.isEmpty, "no replica runs on \(node), whose clock is \(skewed.seconds) s ahead")
                if let replica = running.first {
                    let tenant = ["fa", "fb"].firstIndex(of: replica.metadata.tenant) ?? 0
                    let logs = try await cluster.call(
                        "GET", "/v1/replicas/\(replica.metadata.tenant)/\(replica.metadata.name)/logs?tail=5", token: tokens[tenant], via: 0)
                    #expect(logs.status == 200, "logs of \(Self.key(replica)) on \(node) (clock \(skewed.seconds) s ahead): \(logs.status) \(String(decoding: logs.body, as: UTF8.self).prefix(300))")
                }
            }

            // A node whose agent never stopped was never NotReady (an agent killed and restarted
            // may come back after its TTL on a loaded machine; that node may be NotReady).
            let events = try await cluster.json("GET", "/v1/events?kind=nodes", token: cluster.adminToken)["items"] as? [[String: Any]] ?? []
            let notReady = events.compactMap { event -> (node: String, duringEtcdCut: Bool)? in
                guard let spec = event["spec"] as? [String: Any], spec["reason"] as? String == "NodeNotReady" else { return nil }
                let seen = ["firstSeen", "lastSeen"].map { (spec[$0] as? String).flatMap { try? Date($0, strategy: .iso8601) } }
                // Seen while an etcd member was cut off (or just after): before token hits were
                // trusted while read again, a node beating to an api-server whose etcd client
                // sat on the cut member was marked silent (its beats' token checks waited out
                // that client's 5 s request timeout). Counted like any other; named apart.
                let duringEtcdCut = seen.allSatisfy { date in date.map { d in etcdCuts.contains { $0.contains(d) } } ?? false }
                return ((spec["involved"] as? [String: Any])?["name"] as? String ?? "?", duringEtcdCut)
            }
            let notReadyNodes = notReady.map(\.node)
            let outsideEtcdCuts = notReady.filter { !$0.duringEtcdCut }.map(\.node)
            if notReady.contains(where: \.duringEtcdCut) {
                print("fault suite (whole system): NotReady while an etcd member was cut off: \(notReady.filter(\.duringEtcdCut).map(\.node))")
            }
            #expect(notReadyNodes.allSatisfy(stopped.contains), "NotReady: \(notReadyNodes) (\(outsideEtcdCuts) outside the etcd member cuts), agents stopped: \(stopped)")
            #expect(cluster.nodeNames.contains { !stopped.contains($0) } || Self.rounds > 1, "one round leaves a node untouched")
            // ... and the cut-off ones were seen (so the check above reads the events right).
            #expect(cutOff.isSubset(of: Set(notReadyNodes)), "NotReady: \(notReadyNodes), cut off: \(cutOff)")
            print("fault suite (whole system): \(faults.count) faults (\(faults.joined(separator: "; "))); \(revisions) revisions and \(bindings) bindings checked; \(seen.count) applies (\(seen.values.filter { $0.outcome == .unknown }.count) unknown)")
        } catch {
            print(cluster.logTails())
            throw error
        }
    }

    static func shared(_ name: String) -> String {
        """
        application:
          name: \(name)
          pods:
            - name: client
              image: localhost/gpuplane-test-busybox:latest
              command: ["sh", "-c", "exec sleep 100000"]
              gpu:
                enabled: true
                model: \(FaultCluster.weightsModelSlug)
        """
    }

    /// The disk-full fault: the shared node's weights disk left with 2 MB free, weights of
    /// 3 MB (fresh bytes each round) pushed, an application of the model applied. Its model
    /// server must fail naming the disk's lack of space, with nothing of the fetch left in the
    /// cache; once the disk has room, the retry fetches them (byte for byte), the server is
    /// ready and the pod runs. The application is deleted again.
    static func diskFull(_ cluster: FaultCluster, _ disk: FaultCluster.WeightsDisk, round: Int, token: String, store: ResourceStore) async throws {
        let room = 2 << 20
        try disk.resize(bytes: disk.usedBytes + room)
        var random = SplitMix64(seed: UInt64(1000 + round))
        var words = [UInt64](repeating: 0, count: (3 << 20) / 8)
        for i in words.indices { words[i] = random.next() }
        let weights = words.withUnsafeBytes { Data($0) }
        let artifact = try await disk.registry.pushArtifact(contents: [(FaultCluster.weightsFileName, weights)], as: FaultCluster.weightsRepository)
        let address = "oci-" + artifact.digest.replacingOccurrences(of: ":", with: "-")
        let name = "weights-\(round)"
        let applied = try await cluster.call("POST", "/v1/applications", token: token, body: shared(name), via: 0, timeout: .seconds(20))
        #expect(applied.status == 201, "\(String(decoding: applied.body, as: UTF8.self))")

        func server() async throws -> ModelServer? {
            try await store.list(ModelServer.self).items.first { $0.spec.slug == FaultCluster.weightsModelSlug && $0.binding?.node == disk.node }
        }
        var seen: ModelServer?
        try await eventually("the model server fails for want of space on \(disk.node)", timeout: 120, every: 0.3) {
            seen = try await server()
            return seen?.status.container?.reason == .weightsFailed
        }
        let failed = seen?.status.container
        let message = failed?.message ?? ""
        #expect(message.contains("No space left on device"), "the failure does not name the disk: \(String(describing: failed))")
        #expect(failed?.loading?.stage == .failed)
        // Nothing of the fetch stays: no entry at its address, nothing under partial/.
        #expect(!disk.list("entries").contains(address), "\(disk.list("entries"))")
        #expect(disk.list("partial").isEmpty, "partial fetch left: \(disk.list("partial"))")

        // Room made: the retry (after its backoff) fetches them; the server is ready, the pod runs.
        try disk.resize(bytes: disk.usedBytes + (64 << 20))
        do {
            try await eventually("the model server is ready once the disk has room", timeout: 120, every: 0.5) {
                seen = try await server()
                return seen?.status.ready == true
            }
            try await eventually("the pod of \(name) runs", timeout: 60, every: 0.5) {
                try await store.list(Replica.self).items.contains { $0.metadata.name.hasPrefix(name + ".") && $0.status.phase == .running }
            }
        } catch {
            Issue.record("model server: \(String(describing: seen))")
            throw error
        }
        let cached = try Data(contentsOf: disk.directory.appendingPathComponent("entries/\(address)/\(FaultCluster.weightsFileName)"))
        #expect(cached == weights)
        let deleted = try await cluster.call("DELETE", "/v1/applications/\(name)", token: token, via: 0, timeout: .seconds(20))
        #expect(deleted.status == 200 || deleted.status == 204, "\(deleted.status)")
        try await eventually("\(name)'s replica is gone", timeout: 60, every: 0.5) {
            !(try await store.list(Replica.self).items.contains { $0.metadata.name.hasPrefix(name + ".") })
        }
    }

    /// `tenant/name` of a replica.
    static func key(_ replica: Replica) -> String { "\(replica.metadata.tenant)/\(replica.metadata.name)" }

    /// A replica bound to a node and not yet running (its container about to be made), as soon
    /// as one is seen; nil after `timeout`.
    static func replicaBeingCreated(_ store: ResourceStore, timeout: Double) async throws -> (key: String, node: String)? {
        var found: (key: String, node: String)?
        try await eventually("a replica bound and not yet running", timeout: timeout, every: 0.05) {
            found = try await store.list(Replica.self).items.first { $0.binding != nil && $0.status.phase != .running }
                .map { (key($0), $0.binding?.node ?? "") }
            return found != nil
        }
        return found
    }

    /// How often `line` occurs in the file at `url` (a daemon's whole log).
    /// Whether the last term line of the scheduler log at `url` is its "leading" line for the
    /// election key created at `revision` (not a "campaigning again" after it: a term that
    /// ended while its key still stood).
    static func leadsAccordingToItsLog(_ url: URL, revision: Int64) -> Bool {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return false }
        let last = text.split(separator: "\n").last { $0.contains("campaigning again") || $0.contains(": leading ") }
        return last.map { $0.contains(": leading ") && $0.contains("revision=\(revision)") } ?? false
    }

    static func count(_ line: String, in url: URL) -> Int {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return 0 }
        return text.components(separatedBy: line).count - 1
    }

    /// Etcd member `member` cut off from the others (``FaultCluster/partitionEtcdMember(_:)``),
    /// then healed. While cut off: the other two agree on a leader among themselves (a new one
    /// when `member` led); the member still answers a client (a serializable read of its own
    /// state) but neither a write nor a linearizable read sent straight to it is answered as
    /// done; applies through every api-server are acknowledged (their etcd clients leave it for
    /// the majority). Once healed, a linearizable read on it returns the majority's revision or
    /// later (it caught up).
    static func cutEtcdMember(
        _ member: Int, _ cluster: FaultCluster, _ client: Etcd.Client, apiServers: Int,
        lastAcknowledged: Locked<[Int: ContinuousClock.Instant]>
    ) async throws {
        let direct = try Etcd.Client(Etcd.Configuration(endpoints: [cluster.etcd.members[member].clientURL], requestTimeout: .seconds(2), maxRetries: 1))
        let others = cluster.etcd.members.indices.filter { $0 != member }
        let cutAt = ContinuousClock.now
        try cluster.partitionEtcdMember(member)
        do {
            try await eventually("etcd members \(others) agree on a leader among them while \(member) is cut off", timeout: 60, every: 0.2) {
                var ids: [UInt64] = [], leaders: Set<UInt64> = []
                for i in others {
                    guard let status = try? await client.status(endpoint: cluster.etcd.members[i].clientURL) else { return false }
                    ids.append(status.header.memberID)
                    leaders.insert(status.leader)
                }
                return leaders.count == 1 && leaders.first.map(ids.contains) == true
            }
            // Clients still reach it (its own state, served without a quorum) ...
            _ = try await direct.range(.key("/"), countOnly: true, serializable: true)
            // ... but it commits no write and answers no linearizable read.
            await #expect(throws: EtcdError.self, "etcd member \(member), cut off, answered a write") {
                _ = try await direct.put("/fault-probe/etcd-member-\(member)", "written while cut off")
            }
            await #expect(throws: EtcdError.self, "etcd member \(member), cut off, answered a linearizable read") {
                _ = try await direct.range(.key("/"), countOnly: true)
            }
            // The api-servers' clients move to the majority: applies go on through each.
            try await eventually("applies through every api-server acknowledged while etcd member \(member) is cut off", timeout: 90, every: 0.3) {
                let last = lastAcknowledged.withLock { $0 }
                return (0..<apiServers).allSatisfy { via in last[via].map { $0 > cutAt } ?? false }
            }
        } catch {
            try? cluster.healEtcdMember(member)
            throw error
        }
        try cluster.healEtcdMember(member)
        let revision = try await client.range(.key("/"), countOnly: true).header.revision
        try await eventually("etcd member \(member) catches up to revision \(revision) once healed", timeout: 60, every: 0.2) {
            ((try? await direct.range(.key("/"), countOnly: true).header.revision) ?? 0) >= revision
        }
    }

    /// The index of the etcd member that leads, as the running members report it.
    static func etcdLeader(_ cluster: FaultCluster, _ client: Etcd.Client) async -> Int? {
        var ids: [UInt64: Int] = [:]
        var leader: UInt64?
        for (i, member) in cluster.etcd.members.enumerated() where member.isRunning {
            guard let status = try? await client.status(endpoint: member.clientURL) else { continue }
            ids[status.header.memberID] = i
            if status.leader != 0 { leader = status.leader }
        }
        return leader.flatMap { ids[$0] }
    }
}
