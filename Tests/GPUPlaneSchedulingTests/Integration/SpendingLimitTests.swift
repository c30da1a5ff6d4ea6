import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// The meter's run-time spending limit ("Use spending limits in payment settings"): once a
/// tenant's month-to-date spend reaches its limit, its deployments are scaled to
/// `min_instances`, with an Event; a tenant under its limit keeps what runs.
@Suite("Spending limit against etcd", .serialized, .enabled(if: EtcdFixture.isAvailable), .timeLimit(.minutes(5)))
struct SpendingLimitTests {
    /// A deployment of `tenant` wanting `running` instances, each bound and running on `node`.
    func runningDeployment(_ h: SchedulerHarness, _ name: String, tenant: String, min: Int, max: Int, running: Int, node: String, firstGPU: Int) async throws {
        let deployment = try await h.store.create(Deployment(
            metadata: ObjectMeta(name: name, tenant: tenant, uid: "uid-\(name)"),
            spec: DeploymentSpec(
                modelName: name, gpu: "H100-80GB", numGPUs: 1, maxBatchSize: 8, hf: HuggingFaceWeights(repo: "org/\(name)"),
                settings: DeploymentSettings(minInstances: min, maxInstances: max), servingImage: "registry.local/llm-server:1"),
            status: DeploymentStatus(state: .running, instancesRunning: running, instancesWanted: running)))
        let planner = ReplicaPlanner(catalog: Fixture.catalog)
        for index in 0..<running {
            var replica = planner.replica(for: deployment, index: index)
            replica.metadata.created = Date().addingTimeInterval(-3600)
            replica.binding = Binding(node: node, gpuIndices: [firstGPU + index])
            replica.status.phase = .running
            try await h.addReplica(replica)
        }
    }

    func instances(_ h: SchedulerHarness, _ tenant: String, _ name: String) async throws -> [String] {
        try await h.store.list(Replica.self, tenant: tenant).items
            .filter { $0.spec.owner.kind == .deployment && $0.spec.owner.name == name }
            .map(\.metadata.name).sorted()
    }

    @Test("a tenant whose metered spend reaches its limit has its deployments scaled to min_instances; others keep theirs")
    func overTheLimitScalesToMinimum() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(Fixture.node("n1", type: "GPU-H100", gpus: 8))
            // $0.001 a month: one metered second of three H100s ($2.50/h each) passes it.
            _ = try await h.store.create(Tenant(
                metadata: ObjectMeta(name: "acme"), spec: .init(plan: .enterprise, gpuLimit: 8, spendingLimitMicroDollars: 1_000)))
            _ = try await h.store.create(Tenant(metadata: ObjectMeta(name: "beta"), spec: .init(plan: .enterprise, gpuLimit: 8)))
            try await runningDeployment(h, "capped", tenant: "acme", min: 1, max: 3, running: 3, node: "n1", firstGPU: 0)
            try await runningDeployment(h, "free", tenant: "beta", min: 1, max: 3, running: 2, node: "n1", firstGPU: 3)

            let scheduler = h.startScheduler(session: SchedulerHarness.sessionConfiguration(meterInterval: .seconds(1)))
            try await h.waitUntilLeading(scheduler)
            try await eventually("acme's deployment scaled to min_instances", timeout: 90) {
                try await h.store.get(Deployment.self, tenant: "acme", name: "capped").status.instancesWanted == 1
            }
            try await eventually("the instances beyond min_instances deleted") {
                try await instances(h, "acme", "capped") == ["deploy.capped.0"]
            }
            var reached: Event?
            try await eventually("a SpendingLimitReached event on the deployment") {
                reached = try await h.events(about: "capped").first { $0.spec.reason == EventRecorder.Reason.spendingLimitReached }
                return reached != nil
            }
            let message = try #require(reached?.spec.message)
            #expect(message.contains("spending limit reached") && message.contains("scaled to min_instances 1"), "\(message)")
            // It stays at min_instances: the autoscaler adds nothing while the limit holds.
            try await Task.sleep(for: .seconds(1.5))
            #expect(try await h.store.get(Deployment.self, tenant: "acme", name: "capped").status.instancesWanted == 1)
            #expect(try await instances(h, "acme", "capped") == ["deploy.capped.0"])
            // The spend that did it was metered: usage records of acme, costing at least the limit.
            let spent = try await h.store.list(UsageRecord.self, tenant: "acme").items.reduce(Int64(0)) { $0 + $1.spec.costMicroDollars }
            #expect(spent >= 1_000)
            // beta has no limit: both its instances still run, and it is told nothing.
            #expect(try await instances(h, "beta", "free") == ["deploy.free.0", "deploy.free.1"])
            #expect(try await h.store.get(Deployment.self, tenant: "beta", name: "free").status.instancesWanted == 2)
            #expect(try await !h.events(about: "free").contains { $0.spec.reason == EventRecorder.Reason.spendingLimitReached })
            #expect(try await h.store.list(UsageRecord.self, tenant: "beta").items.count >= 2)
        }
    }
}
