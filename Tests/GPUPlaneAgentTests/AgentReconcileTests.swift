import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// The node-agent against real podman, a real etcd and an in-process api-server, with fake GPUs.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AgentReconcileTests {
    @Test func boundReplicaRunsWithItsEnvAndExactlyItsGPUsThenStopsWhenUnboundOrDeleted() async throws {
        try await withAgentWorld { world in
            let agent = world.startAgent()
            try await world.createReplica("trainer", mode: .dedicated, gpus: [1, 5], env: ["FOO": "bar"])
            try await world.createReplica("chat", mode: .sharedPinned, slug: "llama-3.1-8b", gpus: [])

            let trainer = try await world.waitForReplica("trainer", "running") { $0.status.phase == .running }
            let id = try #require(trainer.status.containerID)
            try await eventually("env printed") { try await world.output(id).contains { $0.hasPrefix("NXL_GPU_INDEX=") } }
            let lines = try await world.output(id)
            #expect(lines.contains("FOO=bar"))
            // Host GPUs 1 and 5 are the container's 0 and 1.
            #expect(lines.contains("NXL_GPU_INDEX=0"))
            #expect(lines.contains("NXL_GPU_INDICES=0,1"))
            #expect(!lines.contains { $0.hasPrefix("NXL_INFERENCE_URL=") })
            let gpus = world.podman.fakeGPUs
            let perGPU = Set(lines.filter { $0.hasPrefix("GPUPLANE_FAKE_GPU_") && $0.contains("_UUID=") && !$0.hasPrefix("GPUPLANE_FAKE_GPU_UUID=") })
            #expect(perGPU == ["GPUPLANE_FAKE_GPU_1_UUID=\(gpus[1].uuid)", "GPUPLANE_FAKE_GPU_5_UUID=\(gpus[5].uuid)"])
            let details = try await world.engine.inspect(id)
            #expect(details.labels[ContainerPlan.replicaLabel] == "\(world.tenant)/app.trainer")
            #expect(details.labels[ContainerEngine.managedLabel.key] == "true")
            #expect(details.security.violations.isEmpty)

            let chat = try await world.waitForReplica("chat", "running") { $0.status.phase == .running }
            let chatID = try #require(chat.status.containerID)
            try await eventually("chat env printed") { try await world.output(chatID).contains { $0.hasPrefix("NXL_INFERENCE_URL=") } }
            let chatLines = try await world.output(chatID)
            #expect(chatLines.contains("NXL_INFERENCE_URL=\(world.gateway)/v1/inference/\(world.tenant)/llama-3.1-8b/no-key/v1"))
            #expect(!chatLines.contains { $0.hasPrefix("GPUPLANE_FAKE_GPU_") || $0.hasPrefix("NXL_GPU_INDEX=") })

            try await eventually("node reports 2 containers") { try await world.node().status.containers == 2 }
            try await eventually("the status line counts them") { agent.statusLine == "8 GPUs, 8 healthy, 2 containers" }
            let node = try await world.node()
            #expect(node.metadata.labels["gpu-mode"] == "dedicated")
            #expect(node.spec.gpus.count == 8)
            #expect(node.spec.machineType != "cpu")

            // The scheduler takes the binding away: the container stops and goes.
            try await world.updateReplica("trainer") { $0.binding = nil; $0.status = ReplicaStatus(phase: .pending) }
            try await eventually("trainer's container removed") { try await world.containers(of: "trainer").isEmpty }
            // Deleted: likewise.
            try await world.store.delete(Replica.self, tenant: world.tenant, name: "app.chat")
            try await eventually("chat's container removed") { try await world.containers(of: "chat").isEmpty }
            try await eventually("node reports 0 containers") { try await world.node().status.containers == 0 }
        }
    }

    @Test func preemptedReplicaStops() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            try await world.createReplica("batch", gpus: [0])
            try await world.waitForReplica("batch", "running") { $0.status.phase == .running }
            try await world.updateReplica("batch") { $0.status = ReplicaStatus(phase: .preempted, message: "preempted by interactive") }
            try await eventually("batch's container removed") { try await world.containers(of: "batch").isEmpty }
            #expect(try await world.replica("batch").status.phase == .preempted)
        }
    }

    @Test func crashedContainerRestartsWithGrowingCount() async throws {
        try await withAgentWorld { world in
            world.startAgent(restartBackoff: .milliseconds(200))
            try await world.createReplica("crashy", gpus: [2], command: ["sh", "-c", "echo up; sleep 1; exit 3"])
            var sawExit = false
            var firstID: String?
            try await eventually("two restarts", timeout: 60, every: 0.05) {
                let replica = try await world.replica("crashy")
                if replica.status.phase == .failed, replica.status.exitCode == 3 {
                    sawExit = true
                    #expect(replica.status.message?.contains("exited with code 3") == true, "\(replica.status)")
                }
                if firstID == nil { firstID = replica.status.containerID }
                return replica.status.restarts >= 2
            }
            #expect(sawExit)
            let replica = try await world.replica("crashy")
            #expect(replica.status.containerID == firstID)
            #expect(try await world.containers(of: "crashy").count == 1)
        }
    }

    @Test func restartedAgentAdoptsWithoutRestartingAndRemovesOrphans() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            try await world.createReplica("keep", gpus: [3])
            let running = try await world.waitForReplica("keep", "running") { $0.status.phase == .running }
            let id = try #require(running.status.containerID)
            let startedAt = try #require(try await world.engine.inspect(id).state.startedAt)
            await world.stopAgents()

            // While no agent runs: an orphan of this node that no replica wants.
            let orphan = try await world.engine.create(
                ContainerEngine.ContainerSpec(
                    name: world.podman.uniqueName("orphan"), image: world.podman.testImage, command: ["sleep", "1000"],
                    labels: [ContainerPlan.nodeLabel: world.node, ContainerPlan.replicaLabel: "\(world.tenant)/app.gone"],
                    network: .none))
            try await world.engine.start(orphan)

            let second = world.startAgent()
            try await eventually("second agent reconciled") { second.lastSummary?.running == 1 }
            try await eventually("orphan removed") { try await world.containers().allSatisfy { $0.id != orphan } }
            let containers = try await world.containers(of: "keep")
            #expect(containers.map(\.id) == [id])
            let details = try await world.engine.inspect(id)
            #expect(details.state.isRunning)
            #expect(details.state.startedAt == startedAt)
            let after = try await world.replica("keep")
            #expect(after.status.phase == .running)
            #expect(after.status.containerID == id)
            #expect(after.status.restarts == 0)
        }
    }

    @Test func missingImageFailsWithAClearMessage() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            try await world.createReplica("ghost", gpus: [0], image: "localhost/gpuplane-test/no-such-image:v0")
            // Not in the engine's store, so the agent pulls it, from a registry (localhost:443)
            // that does not answer: the pull fails, and is tried again after a backoff.
            let replica = try await world.waitForReplica("ghost", "failed") { $0.status.phase == .failed }
            #expect(replica.status.reason == .errImagePull || replica.status.reason == .imagePullBackOff)
            let message = try #require(replica.status.message)
            #expect(message.hasPrefix("pulling image localhost/gpuplane-test/no-such-image:v0 from localhost failed: "), "\(message)")
            #expect(try await world.containers(of: "ghost").isEmpty)
        }
    }

    @Test func specChangeReplacesTheContainer() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            try await world.createReplica("moved", gpus: [4])
            let before = try await world.waitForReplica("moved", "running") { $0.status.phase == .running }
            // Rebound to another GPU: a new container with the new GPU.
            try await world.updateReplica("moved") { $0.binding = Binding(node: world.node, gpuIndices: [6]) }
            let after = try await world.waitForReplica("moved", "running elsewhere") {
                $0.status.phase == .running && $0.status.containerID != nil && $0.status.containerID != before.status.containerID
            }
            let id = try #require(after.status.containerID)
            try await eventually("env printed") { try await world.output(id).contains("GPUPLANE_FAKE_GPU_6_UUID=\(world.podman.fakeGPUs[6].uuid)") }
            #expect(try await world.output(id).contains("NXL_GPU_INDEX=0"))
            try await eventually("one container") { try await world.containers(of: "moved").map(\.id) == [id] }
        }
    }
}
