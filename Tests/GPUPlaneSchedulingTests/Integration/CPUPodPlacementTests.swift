import EtcdClient
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneScheduling

/// CPU pods through the scheduler against a real etcd.
@Suite("CPU pods against etcd", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct CPUPodPlacementTests {
    @Test("a CPU pod lands on the CPU node with room, a too-large one waits with the reasons, and a freed node takes it")
    func cpuPodIsPlacedByCPUAndMemory() async throws {
        try await SchedulerHarness.with { h in
            try await h.addNode(CPUPlacementTests.gpuNode("gpu", gpus: 2, cpuMilli: 24_000, memoryMB: 224 * 1024))
            try await h.addNode(CPUPlacementTests.cpuNode("cpu-small", cpuMilli: 8000, memoryMB: 1024))
            try await h.addNode(CPUPlacementTests.cpuNode("cpu-big", cpuMilli: 4000, memoryMB: 4096))
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)

            // M (2 CPUs, 2 GB) fits only on cpu-big: cpu-small has too little memory, and the GPU
            // host's allocatable is exactly its free GPUs' share.
            try await h.addReplica(CPUPlacementTests.cpuPod("web", type: "M"))
            let web = try await h.waitBound("acme", "web")
            #expect(web.binding?.node == "cpu-big")
            #expect(web.binding?.gpuIndices == [])
            #expect(web.spec.cpuMilli == 2000 && web.spec.memoryMB == 2048)

            // A second M takes the rest of cpu-big; a third fits nowhere and says why per node:
            // cpu-big and the GPU host (whose free GPUs keep all of it) lack CPU, cpu-small memory.
            try await h.addReplica(CPUPlacementTests.cpuPod("web2", type: "M"))
            #expect(try await h.waitBound("acme", "web2").binding?.node == "cpu-big")
            try await h.addReplica(CPUPlacementTests.cpuPod("web3", type: "M"))
            try await eventually("web3 says why it waits") {
                try await h.replica("acme", "web3").status.message
                    == "0/3 nodes: 2 insufficient cpu, 1 insufficient memory"
            }
            #expect(try await h.replica("acme", "web3").binding == nil)

            // web goes: its CPU and memory are free again, and web3 takes them.
            try await h.store.delete(Replica.self, tenant: "acme", name: "web")
            let web3 = try await h.waitBound("acme", "web3")
            #expect(web3.binding?.node == "cpu-big")
        }
    }
}
