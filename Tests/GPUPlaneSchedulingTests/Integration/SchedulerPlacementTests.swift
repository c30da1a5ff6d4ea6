import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The scheduler in this process against a real etcd: what the api-server writes goes in,
/// bindings come out.
@Suite("Scheduler against etcd", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct SchedulerPlacementTests {
    @Test("a pending replica gets bound, fenced with the leader's revision, with an Event")
    func pendingReplicaIsBound() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 2))
            // Events flushed at once: with the default 10 s, a term that lapsed on a loaded
            // machine right after the binding took the unflushed event with it.
            var session = SchedulerHarness.sessionConfiguration()
            session.eventFlushInterval = .milliseconds(200)
            let scheduler = h.startScheduler(session: session)
            try await h.waitUntilLeading(scheduler)
            guard case .leader(let firstTerm) = scheduler.role else {
                Issue.record("not leading")
                return
            }
            try await h.addReplica(pendingReplica("r1"))
            let bound = try await h.waitBound("acme", "r1")
            #expect(bound.binding?.node == "n1")
            #expect(bound.binding?.gpuIndices.count == 1)
            #expect(bound.status.phase == .bound)
            // Fenced with the revision of a term this scheduler held: the first, or (a loaded
            // run let the lease lapse and the scheduler won it again) the one it holds now.
            var terms = [firstTerm]
            if case .leader(let now) = scheduler.role { terms.append(now) }
            #expect(terms.contains(bound.binding?.leaderRevision ?? 0), "bound under \(String(describing: bound.binding?.leaderRevision)), terms \(terms)")
            try await eventually("Scheduled event") {
                try await h.events(about: "r1").contains { $0.spec.reason == EventRecorder.Reason.scheduled }
            }
            // The node went Ready from its heartbeat key.
            let node = try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "n1")
            #expect(node.status.isReady)
        }
    }

    @Test("each mode: raw GPUs on dedicated, a large slot with its server, shared servers packed and attached")
    func eachMode() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("ded", mode: "dedicated", type: "GPU-H100", gpus: 2))
            try await h.addNode(Fixture.node("big", mode: "large", type: "GPU-RTXPRO6000", gpus: 2))
            try await h.addNode(Fixture.node("shr", mode: "shared", type: "GPU-L40", gpus: 2))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("custom", mode: .dedicated, gpus: 1, vramGB: 80))
            try await h.addReplica(pendingReplica("seventy", mode: .largePinned, slug: "llama-3.3-70b", gpus: 1, vramGB: 96))
            try await h.addReplica(pendingReplica("small-a", mode: .sharedPinned, slug: "llama-3.1-8b", gpus: 0, vramGB: 20))
            let custom = try await h.waitBound("acme", "custom")
            let large = try await h.waitBound("acme", "seventy")
            let sharedA = try await h.waitBound("acme", "small-a")
            try await h.addReplica(pendingReplica("small-b", tenant: "other", mode: .sharedPinned, slug: "llama-3.1-8b", gpus: 0, vramGB: 20))
            let sharedB = try await h.waitBound("other", "small-b")

            #expect(custom.binding?.node == "ded")
            #expect(custom.binding?.modelServer == nil)
            #expect(large.binding?.node == "big")
            #expect(sharedA.binding?.node == "shr")
            // The second tenant attaches to the running server instead of packing a new one.
            #expect(sharedB.binding?.modelServer == sharedA.binding?.modelServer)
            // The server's status lists both attachments, and only the one left after the
            // other replica is deleted.
            let sharedName = try #require(sharedA.binding?.modelServer)
            try await eventually("the shared server lists both replicas") {
                try await h.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: sharedName).status.attachedReplicas == ["acme/small-a", "other/small-b"]
            }
            try await h.store.delete(Replica.self, tenant: "acme", name: "small-a")
            try await eventually("the shared server lists the replica left") {
                try await h.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: sharedName).status.attachedReplicas == ["other/small-b"]
            }
            let servers = try await h.store.list(ModelServer.self).items
            #expect(servers.count == 2)
            let largeServer = servers.first { $0.metadata.name == large.binding?.modelServer }
            #expect(largeServer?.spec.mode == .largePinned)
            #expect(largeServer?.binding?.node == "big")
            let sharedServer = servers.first { $0.metadata.name == sharedA.binding?.modelServer }
            #expect(sharedServer?.spec.mode == .sharedPinned)
            #expect(sharedServer?.spec.vramGB == 20)
        }
    }

    @Test("smallest fit end to end: 20 GB lands on an RTX 4090, not an H100")
    func smallestFit() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("h100", type: "GPU-H100", gpus: 8))
            try await h.addNode(Fixture.node("rtx", type: "GPU-RTX4090", gpus: 8))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("small", vramGB: 20))
            try await h.addReplica(pendingReplica("large", vramGB: 70))
            #expect(try await h.waitBound("acme", "small").binding?.node == "rtx")
            #expect(try await h.waitBound("acme", "large").binding?.node == "h100")
        }
    }

    @Test("per-user GPU limit: the third GPU is refused with the numbers, one counted Event")
    func tenantLimit() async throws {
        try await SchedulerHarness.with { h in
            _ = try await h.store.create(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .enterprise, gpuLimit: 2)))
            try await h.addNode(Fixture.node("n1", gpus: 8))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            for i in 0..<3 { try await h.addReplica(pendingReplica("r\(i)")) }
            try await eventually("two bound, one refused") {
                let all = try await h.store.list(Replica.self, tenant: "acme").items
                return all.filter { $0.binding != nil }.count == 2
                    && all.contains { $0.binding == nil && ($0.status.message ?? "").contains("acme holds 2 of 2") }
            }
            // Many passes later there is still one FailedScheduling event for it, not one per pass.
            let refused = try await h.store.list(Replica.self, tenant: "acme").items.first { $0.binding == nil }
            let name = try #require(refused?.metadata.name)
            let passes = scheduler.currentSession?.statistics.passes ?? 0
            try await eventually("more passes") { (scheduler.currentSession?.statistics.passes ?? 0) > passes + 3 }
            let events = try await h.events(about: name).filter { $0.spec.reason == EventRecorder.Reason.failedScheduling }
            #expect(events.count == 1)
            #expect(events.first?.spec.message.contains("tenant GPU limit") == true)
        }
    }

    @Test("preemption end to end: the lowest tier yields, its message names the preemptor, Events on both sides")
    func preemptionOrder() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 2))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("train", tenant: "t1", priority: .training))
            try await h.addReplica(pendingReplica("batch", tenant: "t2", priority: .batch))
            try await h.waitBound("t1", "train")
            try await h.waitBound("t2", "batch")
            try await h.addReplica(pendingReplica("urgent", tenant: "t3", priority: .interactive))
            let urgent = try await h.waitBound("t3", "urgent")
            #expect(urgent.binding?.node == "n1")
            let victim = try await h.replica("t2", "batch")
            #expect(victim.binding == nil)
            #expect(victim.status.phase == .pending)
            #expect(victim.status.message?.contains("t3/urgent") == true)
            #expect(try await h.replica("t1", "train").binding != nil)
            try await eventually("events on both sides") {
                let onVictim = try await h.events(about: "batch").contains { $0.spec.reason == EventRecorder.Reason.preempted }
                let onPreemptor = try await h.events(about: "urgent").contains { $0.spec.reason == EventRecorder.Reason.preempting }
                return onVictim && onPreemptor
            }
        }
    }

    @Test("partial placement: 2 of 3 instances fit, the deployment says so")
    func partialPlacement() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", type: "GPU-H100", gpus: 2))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            let planner = ReplicaPlanner(catalog: Fixture.catalog)
            var deployment = Deployment(
                metadata: ObjectMeta(name: "test-model", tenant: "ichernev"),
                spec: DeploymentSpec(
                    modelName: "test-model", gpu: "H100-80GB", numGPUs: 1, maxBatchSize: 64,
                    hf: HuggingFaceWeights(repo: "meta-llama/Llama-2-7b-chat-hf"),
                    settings: DeploymentSettings(minInstances: 3, maxInstances: 3)),
                status: DeploymentStatus(state: .deploying, instancesWanted: 3))
            deployment = try await h.store.create(deployment)
            for i in 0..<3 { try await h.addReplica(planner.replica(for: deployment, index: i)) }
            try await eventually("deployment status") {
                let d = try await h.store.get(Deployment.self, tenant: "ichernev", name: "test-model")
                return d.status.message == "2/3 running, waiting for capacity" && d.status.state == .partial
            }
            let bound = try await h.store.list(Replica.self, tenant: "ichernev").items.filter { $0.binding != nil }
            #expect(bound.count == 2)
        }
    }

    @Test("node expiry: the heartbeat lease runs out, the node goes NotReady and its replica moves")
    func nodeExpiry() async throws {
        try await SchedulerHarness.with { h in
            let short = try await h.client.grantLease(ttl: 2).id
            let keeper = Task {
                do { for try await _ in h.client.keepAlive(short, ttl: 2) {} } catch {}
            }
            try await h.addNode(Fixture.node("n1", gpus: 1), lease: short)
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("r1"))
            #expect(try await h.waitBound("acme", "r1").binding?.node == "n1")
            try await h.addNode(Fixture.node("n2", gpus: 1))
            keeper.cancel()  // the node stops calling: etcd deletes its key when the lease ends
            try await eventually("n1 NotReady", timeout: 20) {
                let node = try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "n1")
                let ready = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }
                return ready?.status == false && ready?.reason == LeaderSession.ReadyReason.heartbeatExpired
            }
            try await eventually("r1 on n2", timeout: 20) { try await h.replica("acme", "r1").binding?.node == "n2" }
            try await eventually("Rescheduled event") {
                try await h.events(about: "r1").contains { $0.spec.reason == EventRecorder.Reason.rescheduled }
            }
            // The key comes back: Ready again.
            _ = try await h.client.put(NodeHeartbeat.key("n1"), "alive", lease: h.heartbeatLease)
            try await eventually("n1 Ready") {
                try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "n1").status.isReady
            }
        }
    }

    @Test("a node that registers while the scheduler runs is never NotReady; one whose key never comes is, after the grace")
    func registrationIsNeverNotReady() async throws {
        try await SchedulerHarness.with { h in
            var session = SchedulerHarness.sessionConfiguration()
            session.heartbeatGrace = .seconds(2)
            let scheduler = h.startScheduler(session: session)
            try await h.waitUntilLeading(scheduler)
            func registered(_ name: String) -> Node {
                var node = Fixture.node(name, gpus: 1)
                node.status.conditions = [Condition(type: NodeHeartbeat.readyCondition, status: true, reason: "Registered")]
                return node
            }
            for i in 0..<3 {
                // The Node Ready first and its key a moment later: the worst order in which the
                // scheduler's two watches can show a registration. The gap is the scenario,
                // several passes long (resync 200 ms), not a wait for a result.
                _ = try await h.store.create(registered("fresh\(i)"))
                try await Task.sleep(for: .milliseconds(600))
                _ = try await h.client.put(NodeHeartbeat.key("fresh\(i)"), "alive", lease: h.heartbeatLease)
            }
            // A node whose key never comes is NotReady once the grace is over.
            _ = try await h.store.create(registered("silent"))
            try await eventually("silent NotReady", timeout: 20) {
                try await !h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "silent").status.isReady
            }
            try await eventually("silent's NodeNotReady event") {
                try await h.events(about: "silent").contains { $0.spec.reason == EventRecorder.Reason.nodeNotReady }
            }
            // Its grace began after theirs: none of the fresh nodes was ever declared NotReady.
            for i in 0..<3 {
                let events = try await h.events(about: "fresh\(i)")
                #expect(!events.contains { $0.spec.reason == EventRecorder.Reason.nodeNotReady }, "fresh\(i): \(events.map(\.spec.message))")
                let node = try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "fresh\(i)")
                #expect(node.status.isReady)
                #expect(node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }?.reason == "Registered")
            }
        }
    }

    @Test("an unhealthy GPU takes no work and its replica moves")
    func unhealthyGPU() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", gpus: 2))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            try await h.addReplica(pendingReplica("r1"))
            let before = try await h.waitBound("acme", "r1")
            let gpu = try #require(before.binding?.gpuIndices.first)
            try await h.modify(Node.self, name: "n1") { node in
                node.status.gpuHealth = node.spec.gpus.map {
                    GPUHealth(uuid: $0.uuid, healthy: $0.index != gpu, reason: $0.index == gpu ? "Xid79" : nil)
                }
            }
            try await eventually("r1 on the other GPU") {
                let now = try await h.replica("acme", "r1")
                return now.binding?.node == "n1" && now.binding?.gpuIndices == [1 - gpu]
            }
            try await eventually("GPUUnhealthy event") {
                try await h.events(about: "n1").contains { $0.spec.reason == EventRecorder.Reason.gpuUnhealthy }
            }
            // Nothing more fits: the unhealthy GPU is not given to a newcomer.
            try await h.addReplica(pendingReplica("r2"))
            try await eventually("r2 refused") {
                try await h.replica("acme", "r2").status.message?.contains("0/1 nodes") == true
            }
        }
    }

    @Test("warm pool: servers kept running with no tenant; one taken is replaced")
    func warmPool() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("shr", mode: "shared", type: "GPU-H100", gpus: 2))
            let scheduler = h.startScheduler(session: SchedulerHarness.sessionConfiguration(warmPool: ["llama-3.1-8b": 2]))
            try await h.waitUntilLeading(scheduler)
            try await eventually("two warm servers") {
                try await h.store.list(ModelServer.self).items.filter { $0.spec.warm && $0.spec.slug == "llama-3.1-8b" }.count == 2
            }
            try await h.addReplica(pendingReplica("chat", mode: .sharedPinned, slug: "llama-3.1-8b", gpus: 0, vramGB: 20))
            let chat = try await h.waitBound("acme", "chat")
            let servers = try await h.store.list(ModelServer.self).items
            #expect(servers.contains { $0.metadata.name == chat.binding?.modelServer && $0.spec.warm })
            try await eventually("a third warm server replaces the one taken") {
                try await h.store.list(ModelServer.self).items.filter { $0.spec.warm }.count == 3
            }
        }
    }

    @Test("warm pool, Mode 2: a replica takes the ready warm server of its slug as its slot; a new warm one replaces it")
    func warmLargeServerIsTakenOver() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("lrg", mode: "large", type: "GPU-RTXPRO6000", gpus: 2))
            let scheduler = h.startScheduler(session: SchedulerHarness.sessionConfiguration(warmPool: ["llama-3.3-70b": 1]))
            try await h.waitUntilLeading(scheduler)
            var warm: ModelServer?
            try await eventually("a warm Mode 2 server") {
                warm = try await h.store.list(ModelServer.self).items.first { $0.spec.warm && $0.spec.slug == "llama-3.3-70b" }
                return warm != nil
            }
            let server = try #require(warm)
            // Its node-agent reports it ready (the weights are loaded).
            try await h.modify(ModelServer.self, name: server.metadata.name) { $0.status.ready = true }
            try await h.addReplica(pendingReplica("big", mode: .largePinned, slug: "llama-3.3-70b", gpus: 1, vramGB: 96))
            let big = try await h.waitBound("acme", "big")
            #expect(big.binding?.modelServer == server.metadata.name)
            #expect(big.binding?.gpuIndices == server.binding?.gpuIndices)
            #expect(big.binding?.node == "lrg")
            // The pool is one short again: a new warm server on the other GPU; nothing else.
            try await eventually("a new warm server replaces the one taken") {
                try await h.store.list(ModelServer.self).items.count == 2
            }
            let servers = try await h.store.list(ModelServer.self).items
            #expect(Set(servers.compactMap { $0.binding?.gpuIndices.first }) == [0, 1])
            try await eventually("the taken server lists its replica") {
                try await h.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: server.metadata.name)
                    .status.attachedReplicas == ["acme/big"]
            }
            // A second Mode 2 replica takes the new warm server; a third waits for a GPU.
            try await h.addReplica(pendingReplica("big2", mode: .largePinned, slug: "llama-3.3-70b", gpus: 1, vramGB: 96))
            let big2 = try await h.waitBound("acme", "big2")
            #expect(big2.binding?.modelServer != nil && big2.binding?.modelServer != server.metadata.name)
            #expect(try await h.store.list(ModelServer.self).items.count == 2)
            try await h.addReplica(pendingReplica("big3", mode: .largePinned, slug: "llama-3.3-70b", gpus: 1, vramGB: 96))
            try await eventually("big3 refused") {
                try await h.replica("acme", "big3").status.message?.contains("0/1 nodes") == true
            }
        }
    }
}
