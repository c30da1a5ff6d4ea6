import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

/// Mode 2: a replica takes over an idle server of its slug (a warm one, or one whose replica
/// left) before a new 96 GB slot is started; one replica per server.
@Suite struct LargeModeTests {
    let pipeline = Fixture.pipeline

    static func large(_ name: String, gpus: Int = 2, ready: Bool = true, cordoned: Bool = false, unhealthy: Set<Int> = []) -> Node {
        Fixture.node(name, mode: "large", type: "GPU-RTXPRO6000", gpus: gpus, ready: ready, cordoned: cordoned, unhealthy: unhealthy)
    }

    /// A Mode 2 server as the scheduler writes it: warm when the pool started it.
    static func server(
        _ name: String, slug: String = "llama-3.3-70b", node: String, gpu: Int, ready: Bool = true, warm: Bool = true,
        attached: [String] = []
    ) -> ModelServer {
        var server = ModelServer(
            metadata: ObjectMeta(name: name), spec: .init(slug: slug, mode: .largePinned, vramGB: 96),
            binding: Binding(node: node, gpuIndices: [gpu]), status: .init(ready: ready, attachedReplicas: attached))
        server.spec.warm = warm
        return server
    }

    static func mode2(_ name: String, slug: String = "llama-3.3-70b", tenant: String = "acme", priority: GPUPriority = .inference, binding: Binding? = nil) -> Replica {
        Fixture.replica(
            name, tenant: tenant, mode: .largePinned, slug: slug, gpus: 1, vramGB: 96, priority: priority,
            binding: binding, phase: binding == nil ? .pending : .running)
    }

    @Test func aReplicaTakesOverAnIdleWarmServerOfItsSlug() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1")], servers: [Self.server("warm-70b", node: "l1", gpu: 1)])
        let placement = try #require(pipeline.place(Fixture.request(Self.mode2("chat")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .attachLarge)
        #expect(placement.binding == Binding(node: "l1", gpuIndices: [1], modelServer: "warm-70b"))
        #expect(placement.newModelServer == nil)
        // The slot is the replica's now: it counts against its tenant, and holds the GPU.
        #expect(snapshot.wholeGPUsHeld(by: "acme") == 1)
        #expect(snapshot.nodes[0].gpus[1].owner == "acme/chat")
        #expect(snapshot.modelServer(named: "warm-70b")?.attached == ["acme/chat"])
        // One replica per Mode 2 server: the next one gets a new slot on the free GPU.
        let next = try #require(pipeline.place(Fixture.request(Self.mode2("chat2")), in: &snapshot).placement)
        #expect(next.assignment.kind == .largeSlot)
        #expect(next.binding.gpuIndices == [0])
        #expect(next.newModelServer?.slug == "llama-3.3-70b")
        // And a third finds no room: neither a free GPU nor an idle server.
        #expect(pipeline.evaluate(Fixture.request(Self.mode2("chat3")), in: snapshot).refusal != nil)
    }

    @Test func aServerHeldByAReplicaIsNotTakenOver() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1")],
            replicas: [Self.mode2("first", tenant: "beta", binding: Binding(node: "l1", gpuIndices: [1], modelServer: "s-70b"))],
            servers: [Self.server("s-70b", node: "l1", gpu: 1, attached: ["beta/first"])])
        let placement = try #require(pipeline.place(Fixture.request(Self.mode2("second")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .largeSlot)
        #expect(placement.binding.gpuIndices == [0])
        #expect(placement.binding.modelServer != "s-70b")
    }

    @Test func onlyAServerOfTheSameSlug() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1")], servers: [Self.server("warm-r1", slug: "deepseek-r1-distill-llama-70b-fp8", node: "l1", gpu: 1)])
        let placement = try #require(pipeline.place(Fixture.request(Self.mode2("chat")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .largeSlot)
        #expect(placement.binding.gpuIndices == [0])
        #expect(placement.newModelServer?.slug == "llama-3.3-70b")
    }

    /// Health, cordon and the node's readiness hold for an idle server as for a new slot.
    @Test(arguments: ["unhealthy GPU", "cordoned", "node not ready"])
    func anIdleServerWhereNoWorkMayGoIsLeftAlone(_ why: String) throws {
        let held: Node
        switch why {
        case "unhealthy GPU": held = Self.large("l1", unhealthy: [1])
        case "cordoned": held = Self.large("l1", cordoned: true)
        default: held = Self.large("l1", ready: false)
        }
        var snapshot = Fixture.snapshot(
            [held, Self.large("l2", gpus: 1)], servers: [Self.server("warm-70b", node: "l1", gpu: 1)])
        let placement = try #require(pipeline.place(Fixture.request(Self.mode2("chat")), in: &snapshot).placement)
        #expect(placement.assignment.kind == .largeSlot, "\(why)")
        #expect(placement.binding.modelServer != "warm-70b", "\(why)")
        // A new slot: on l1's healthy GPU 0 when only the server's GPU is sick, else on l2.
        let expected = why == "unhealthy GPU" ? Binding(node: "l1", gpuIndices: [0]) : Binding(node: "l2", gpuIndices: [0])
        #expect((placement.binding.node, placement.binding.gpuIndices) == (expected.node, expected.gpuIndices), "\(why)")
    }

    @Test func aReadyServerIsPreferredToOneStillStarting() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1"), Self.large("l2")],
            servers: [Self.server("a-starting", node: "l1", gpu: 0, ready: false), Self.server("b-ready", node: "l2", gpu: 1)])
        let first = try #require(pipeline.place(Fixture.request(Self.mode2("one")), in: &snapshot).placement)
        #expect(first.binding.modelServer == "b-ready")
        // With no ready one left, one still starting beats a new slot (its weights are loading already).
        let second = try #require(pipeline.place(Fixture.request(Self.mode2("two")), in: &snapshot).placement)
        #expect(second.assignment.kind == .attachLarge)
        #expect(second.binding.modelServer == "a-starting")
    }

    /// The batch order decides who gets an idle server: the higher tier first; the tenant's
    /// GPU limit still counts the slot.
    @Test func priorityAndTheTenantLimitStillHold() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1", gpus: 1)], servers: [Self.server("warm-70b", node: "l1", gpu: 0)])
        let result = pipeline.placeBatch(
            [Self.mode2("low", tenant: "a", priority: .batch), Self.mode2("high", tenant: "b", priority: .interactive)],
            in: &snapshot)
        let outcomes = Dictionary(uniqueKeysWithValues: result.entries.map { ($0.name, $0.outcome) })
        guard case .bound(let high)? = outcomes["high"], case .refused? = outcomes["low"] else {
            Issue.record("expected high bound and low refused: \(result.entries)")
            return
        }
        #expect(high.binding.modelServer == "warm-70b")

        var limited = Fixture.snapshot(
            [Self.large("l1", gpus: 1)], servers: [Self.server("warm-70b", node: "l1", gpu: 0)],
            tenants: [Fixture.tenant("acme", limit: 0)])
        let refusal = try #require(pipeline.place(Fixture.request(Self.mode2("chat")), in: &limited).refusal)
        #expect(refusal.requestReason?.reason == TenantGPULimitFilter.limitReached)
    }

    /// A server whose replica was preempted in this pass is idle again: a replica of its slug
    /// takes it over rather than leave it idle beside a new slot.
    @Test func aServerItsReplicaLeftIsTakenOverAgain() throws {
        var snapshot = Fixture.snapshot(
            [Self.large("l1", gpus: 1)],
            replicas: [Self.mode2("old", tenant: "beta", priority: .batch, binding: Binding(node: "l1", gpuIndices: [0], modelServer: "s-70b"))],
            servers: [Self.server("s-70b", node: "l1", gpu: 0, attached: ["beta/old"])])
        #expect(pipeline.evaluate(Fixture.request(Self.mode2("new", priority: .interactive)), in: snapshot).refusal != nil)
        snapshot.release(replica: "beta/old")
        let placement = try #require(pipeline.place(Fixture.request(Self.mode2("new", priority: .interactive)), in: &snapshot).placement)
        #expect(placement.assignment.kind == .attachLarge)
        #expect(placement.binding.modelServer == "s-70b")
    }
}
