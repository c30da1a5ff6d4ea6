import Foundation
import GPUPlaneCore
import Testing
@testable import GPUPlaneScheduling

@Suite struct BatchTests {
    let pipeline = Fixture.pipeline

    @Test func noGPUIsGivenTwiceWithinABatch() {
        let nodes = (0..<20).map { Fixture.node("d\($0)", type: $0 % 2 == 0 ? "GPU-H100" : "GPU-RTX4090", gpus: 4) }
            + (0..<5).map { Fixture.node("s\($0)", mode: "shared", type: "GPU-L40", gpus: 2) }
        var snapshot = Fixture.snapshot(nodes, maxAttachments: 3)
        var replicas: [Replica] = []
        for i in 0..<120 {
            replicas.append(Fixture.replica("m1-\(i)", tenant: "t\(i)", gpus: 1 + i % 2, vramGB: [20, 40, 80][i % 3],
                                            priority: GPUPriority.allCases[i % 4]))
            replicas.append(Fixture.shared("m3-\(i)", slug: ["llama-3.1-8b", "phi-3.5-mini", "qwen-2.5-14b"][i % 3], tenant: "u\(i)"))
        }
        let result = pipeline.placeBatch(replicas, in: &snapshot)
        var whole: Set<String> = []
        var sharedVRAM: [String: Int] = [:]
        for binding in result.bindings {
            if let server = binding.newModelServer {
                sharedVRAM["\(binding.binding.node)/\(server.gpuIndex)", default: 0] += server.vramGB
            }
            guard binding.binding.modelServer == nil else { continue }
            for gpu in binding.binding.gpuIndices {
                #expect(whole.insert("\(binding.binding.node)/\(gpu)").inserted, "GPU given twice")
            }
        }
        #expect(whole.count == 80)  // every dedicated GPU, and no more
        for (_, gb) in sharedVRAM { #expect(gb <= 45) }
        #expect(result.entries.count == 240)
        #expect(result.boundCount < 240)
    }

    @Test func orderedByPriorityThenAge() {
        var snapshot = Fixture.snapshot([Fixture.node("n", gpus: 2)])
        let t0 = Date(timeIntervalSince1970: 1_000)
        let replicas = [
            Fixture.replica("batch-old", tenant: "a", priority: .batch, created: t0),
            Fixture.replica("inference-new", tenant: "b", priority: .inference, created: t0.addingTimeInterval(20)),
            Fixture.replica("inference-old", tenant: "c", priority: .inference, created: t0.addingTimeInterval(10)),
        ]
        let result = pipeline.placeBatch(replicas, in: &snapshot)
        #expect(result.entries.map(\.name) == ["inference-old", "inference-new", "batch-old"])
        #expect(result.bindings.map(\.name) == ["inference-old", "inference-new"])
        #expect(result.entries.last?.outcome == .refused(Refusal(nodesTotal: 1, counts: [GPUFit.insufficientGPUs: 1])))
    }

    @Test func tenantLimitHoldsAcrossTheBatch() {
        var snapshot = Fixture.snapshot([Fixture.node("n", gpus: 8)])
        let replicas = (0..<6).map { Fixture.replica("r\($0)", tenant: "acme") }
        let result = pipeline.placeBatch(replicas, in: &snapshot)
        #expect(result.boundCount == 4)
        #expect(snapshot.wholeGPUsHeld(by: "acme") == 4)
    }

    @Test func invalidAndBoundReplicas() {
        var snapshot = Fixture.snapshot([Fixture.node("n", gpus: 1)])
        let replicas = [
            Fixture.shared("ghost", slug: "no-such-model"),
            Fixture.replica("done", binding: Binding(node: "n", gpuIndices: [0]), phase: .running),
        ]
        let result = pipeline.placeBatch(replicas, in: &snapshot)
        #expect(result.entries.count == 1)
        guard case .invalid(let error) = result.entries.first?.outcome else {
            Issue.record("expected an invalid outcome")
            return
        }
        #expect(error.code == .unknownModel)
    }

    @Test func partialPlacementOfADeployment() throws {
        var snapshot = Fixture.snapshot(
            [Fixture.node("n", type: "GPU-H100", gpus: 2), Fixture.node("m", mode: "shared")],
            tenants: [Fixture.tenant("acme", limit: 10)])
        let instances = (0..<3).map {
            Fixture.replica("test-model-\($0)", owner: "test-model", ownerKind: .deployment, mode: nil,
                            gpus: 1, vramGB: 80, machineTypes: ["H100-80GB"])
        }
        let result = try pipeline.placeInstances(instances, running: 0, wanted: 3, in: &snapshot)
        #expect(result.placements.count == 2)
        #expect(result.message == "2/3 running, waiting for capacity")
        #expect(result.state == .partial)
        #expect(result.refusal?.summary == "0/2 nodes: 1 gpu-mode is shared, 1 not enough free GPUs")
        // Scaling down to what runs: nothing waits.
        let done = try pipeline.placeInstances([], running: 2, wanted: 2, in: &snapshot)
        #expect(done.message == "2/2 running")
        #expect(done.state == .running)
    }

    @Test func partialPlacementStopsAtTheTenantLimit() throws {
        var snapshot = Fixture.snapshot([Fixture.node("n", gpus: 8)])
        let instances = (0..<3).map {
            Fixture.replica("big-\($0)", owner: "big", ownerKind: .deployment, mode: nil, gpus: 2, vramGB: 80)
        }
        let result = try pipeline.placeInstances(instances, running: 0, wanted: 3, in: &snapshot)
        #expect(result.message == "2/3 running, waiting for capacity")
        #expect(result.refusal?.primaryReason == TenantGPULimitFilter.limitReached)
    }
}
