import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The autoscaler against real etcd: load reports written as the api-servers' gateways write
/// them, deployments sized between min_instances and max_instances by a leading scheduler.
@Suite("Autoscaler against etcd", .timeLimit(.minutes(5)))
struct AutoscalerTests {
    static func session(scaleDownDelay: Duration) -> LeaderSession.Configuration {
        var session = SchedulerHarness.sessionConfiguration()
        session.autoscaleInterval = .milliseconds(200)
        session.scaleDownDelay = scaleDownDelay
        return session
    }

    func report(_ h: SchedulerHarness, _ tenant: String, _ deployment: String, from reporter: String, _ load: DeploymentLoad) async throws {
        _ = try await h.client.put(
            DeploymentLoad.key(tenant: tenant, deployment: deployment, reporter: reporter),
            String(decoding: try GPUPlaneJSON.encode(load), as: UTF8.self))
    }

    func deployment(_ h: SchedulerHarness, _ name: String, tenant: String, min: Int, max: Int, batch: Int) async throws -> Deployment {
        try await h.store.create(Deployment(
            metadata: ObjectMeta(name: name, tenant: tenant, uid: "uid-\(name)"),
            spec: DeploymentSpec(
                modelName: name, gpu: "H100-80GB", numGPUs: 1, maxBatchSize: batch, hf: HuggingFaceWeights(repo: "org/\(name)"),
                settings: DeploymentSettings(minInstances: min, maxInstances: max), servingImage: "registry.local/llm-server:1"),
            status: DeploymentStatus(state: min == 0 ? .stopped : .deploying, instancesWanted: min)))
    }

    /// An 8-GPU H100 node and the Pro tenant `acme` (GPU limit 4).
    func oneNodeAndTenant(_ h: SchedulerHarness, gpuLimit: Int = 4) async throws {
        try await h.addNode(Fixture.node("n1", type: "GPU-H100", gpus: 8))
        _ = try await h.store.create(Tenant(metadata: ObjectMeta(name: "acme"), spec: .init(plan: .pro, gpuLimit: gpuLimit)))
    }

    func instances(_ h: SchedulerHarness, _ tenant: String, _ name: String) async throws -> [Replica] {
        try await h.store.list(Replica.self, tenant: tenant).items
            .filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == name }
            .sorted { $0.metadata.name < $1.metadata.name }
    }

    @Test("up for the reported load within the GPU limit, then down to min_instances after the delay")
    func scalesUpWithinTheLimitAndDownAfterTheDelay() async throws {
        try await SchedulerHarness.with { h in
            try await oneNodeAndTenant(h, gpuLimit: 3)
            let chat = try await deployment(h, "chat", tenant: "acme", min: 1, max: 4, batch: 4)
            try await h.addReplica(ReplicaPlanner(catalog: Fixture.catalog).replica(for: chat, index: 0))
            let scheduler = h.startScheduler(session: Self.session(scaleDownDelay: .seconds(2)))
            try await h.waitUntilLeading(scheduler)

            // Ten requests at once at four per instance: three instances, placed.
            try await report(h, "acme", "chat", from: "api-a", DeploymentLoad(peak: 10))
            try await eventually("three instances, all placed") {
                let mine = try await instances(h, "acme", "chat")
                return mine.count == 3 && mine.allSatisfy { $0.binding != nil }
            }
            let scaled = try await instances(h, "acme", "chat")
            #expect(scaled.map(\.metadata.name) == ["deploy.chat.0", "deploy.chat.1", "deploy.chat.2"])
            #expect(scaled.allSatisfy { $0.spec.image == "registry.local/llm-server:1" && $0.spec.servingPort == 8000 })
            #expect(try await h.store.get(Deployment.self, tenant: "acme", name: "chat").status.instancesWanted == 3)

            // Six more through a second api-server: four wanted, but the limit is three GPUs.
            try await report(h, "acme", "chat", from: "api-b", DeploymentLoad(peak: 6))
            try await eventually("a ScaleLimited event") {
                try await h.events(about: "chat").contains { $0.spec.reason == Autoscaler.Reason.scaleLimited }
            }
            #expect(try await instances(h, "acme", "chat").count == 3)

            // Quiet: back to min_instances once the delay has passed, highest indices first.
            try await report(h, "acme", "chat", from: "api-a", DeploymentLoad(peak: 0))
            try await report(h, "acme", "chat", from: "api-b", DeploymentLoad(peak: 0))
            try await eventually("back to one instance") { try await instances(h, "acme", "chat").count == 1 }
            #expect(try await instances(h, "acme", "chat").map(\.metadata.name) == ["deploy.chat.0"])
            let stored = try await h.store.get(Deployment.self, tenant: "acme", name: "chat")
            #expect(stored.status.instancesWanted == 1)
            #expect(try await h.events(about: "chat").contains { $0.spec.reason == Autoscaler.Reason.scaled })
        }
    }

    @Test("from zero: a request turned away cold starts one instance; quiet, it goes back to zero")
    func scalesFromZeroAndBack() async throws {
        try await SchedulerHarness.with { h in
            try await oneNodeAndTenant(h)
            _ = try await deployment(h, "cold", tenant: "acme", min: 0, max: 2, batch: 8)
            let scheduler = h.startScheduler(session: Self.session(scaleDownDelay: .seconds(1)))
            try await h.waitUntilLeading(scheduler)
            // No load: rounds go by and nothing starts.
            try await report(h, "acme", "cold", from: "api-a", DeploymentLoad(peak: 0))
            let rounds = scheduler.currentSession?.statistics.autoscaleRounds ?? 0
            try await eventually("two more autoscaler rounds") { (scheduler.currentSession?.statistics.autoscaleRounds ?? 0) >= rounds + 2 }
            #expect(try await instances(h, "acme", "cold").isEmpty)

            try await report(h, "acme", "cold", from: "api-a", DeploymentLoad(peak: 0, cold: true))
            try await eventually("one instance placed") {
                let mine = try await instances(h, "acme", "cold")
                return mine.count == 1 && mine.first?.binding != nil
            }
            let woken = try await h.store.get(Deployment.self, tenant: "acme", name: "cold")
            #expect(woken.status.instancesWanted == 1)
            #expect(woken.status.state != .stopped)

            try await report(h, "acme", "cold", from: "api-a", DeploymentLoad(peak: 0))
            try await eventually("back to zero") { try await instances(h, "acme", "cold").isEmpty }
            #expect(try await h.store.get(Deployment.self, tenant: "acme", name: "cold").status.state == .stopped)
        }
    }
}

extension AutoscalerTests {
    @Test("outside its bounds: below min_instances is filled, above max_instances is cut at once")
    func boundsAreKept() async throws {
        try await SchedulerHarness.with { h in
            try await oneNodeAndTenant(h)
            // min 2 with no instance at all (say, deleted by hand): two are made.
            _ = try await deployment(h, "low", tenant: "acme", min: 2, max: 3, batch: 8)
            // max 1 with three running (max lowered by hand): cut to one without waiting.
            let high = try await deployment(h, "high", tenant: "acme", min: 0, max: 1, batch: 8)
            let planner = ReplicaPlanner(catalog: Fixture.catalog)
            for index in 0..<3 { try await h.addReplica(planner.replica(for: high, index: index)) }
            let scheduler = h.startScheduler(session: Self.session(scaleDownDelay: .seconds(3600)))
            try await h.waitUntilLeading(scheduler)
            try await eventually("low filled to min, high cut to max") {
                let low = try await instances(h, "acme", "low").map(\.metadata.name)
                let cut = try await instances(h, "acme", "high").map(\.metadata.name)
                return low == ["deploy.low.0", "deploy.low.1"] && cut == ["deploy.high.0"]
            }
        }
    }
}
