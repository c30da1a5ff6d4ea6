import Foundation
import EtcdClient
import GPUPlaneSystem
import GPUPlaneStore
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// Issue 12, item 4 ("one GPU bound to two tenants"), on the node: a GPU runs one container at
/// a time whatever the bindings say, a replica moved away and back waits for its previous
/// container instead of failing on its name, and the api-server refuses reports that could
/// resurrect a binding or a phase. Real podman, etcd and api-server, fake GPUs.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AgentLifecycleTests {
    /// A crash-looping replica keeps its GPU while it waits out its backoff: a replica bound
    /// to the same GPU (a stale scheduler decision) gets no container and waits with
    /// `WaitingForGPU`, the crashed one keeps restarting, and the waiting one starts once the
    /// crashed one is unbound and its container gone.
    @Test func crashLoopingReplicaKeepsItsGPUFromAReplicaBoundOnTop() async throws {
        try await withAgentWorld { world in
            world.startAgent(restartBackoff: .seconds(1))
            try await world.createReplica("crashy", gpus: [0], command: ["sh", "-c", "echo up; sleep 1; exit 1"])
            try await world.waitForReplica("crashy", "failed, in restart backoff") {
                $0.status.phase == .failed && $0.status.reason == .crashLoopBackOff
            }
            let restartsBefore = try await world.replica("crashy").status.restarts

            try await world.createReplica("late", gpus: [0])
            let waiting = try await world.waitForReplica("late", "waiting for GPU 0") {
                $0.status.phase == .starting && $0.status.reason == .waitingForGPU
            }
            #expect(waiting.status.message?.contains("GPU 0") == true, "\(waiting.status)")
            #expect(waiting.status.message?.contains(world.tenant) != true, "names no other replica: \(waiting.status)")
            #expect(waiting.status.observedBinding == waiting.binding)
            // Long enough for the crashed replica to restart at least once more: the late one
            // never gets a container on GPU 0 meanwhile.
            let until = Date().addingTimeInterval(4)
            while Date() < until {
                #expect(try await world.containers(of: "late").isEmpty)
                try await Task.sleep(for: .milliseconds(100))
            }
            let crashy = try await world.replica("crashy")
            #expect(crashy.status.restarts > restartsBefore, "\(crashy.status)")
            #expect(try await world.replica("late").status.phase == .starting)

            // The scheduler takes the crashed one away: its container goes, the late one starts.
            try await world.updateReplica("crashy") { $0.unbind(message: "node is being drained") }
            let running = try await world.waitForReplica("late", "running") { $0.status.phase == .running }
            let id = try #require(running.status.containerID)
            try await eventually("env printed") { try await world.output(id).contains("NXL_GPU_INDEX=0") }
            #expect(try await world.containers(of: "crashy").isEmpty)
        }
    }

    /// Drained and placed on the same node again while its container is still being stopped:
    /// the replica waits for that container (`WaitingForPreviousContainer`), never reports
    /// `failed` ("container name taken"), and runs in a new container once the old one is gone.
    @Test func replicaPlacedBackOnItsNodeWaitsForItsPreviousContainer() async throws {
        try await withAgentWorld { world in
            // Ignores SIGTERM, so stopping it takes the whole grace period: 20 s, long enough that
            // the new binding lands while it still stops even on a loaded machine.
            world.startAgent(stopGracePeriod: .seconds(20))
            try await world.createReplica("mover", gpus: [1], command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
            let before = try await world.waitForReplica("mover", "running") { $0.status.phase == .running }
            let oldID = try #require(before.status.containerID)
            try await eventually("node reports 1 container") { try await world.node().status.containers == 1 }

            // Drained, as the api-server does it; the agent starts stopping the container.
            try await world.updateReplica("mover") { $0.binding = nil; $0.status = ReplicaStatus(phase: .pending, message: "node is being drained") }
            try await eventually("agent saw the drain") { try await world.node().status.containers == 0 }
            #expect(try await world.containers(of: "mover").map(\.id) == [oldID])

            // Placed back on the same node and GPU while the old container still stops. Every
            // status written from here on is read from etcd's history (a watch from the
            // rebinding's revision), so a short-lived one is seen however loaded the machine.
            let key = before.storageKey
            let from = try await world.plane.client.range(.key(key)).header.revision + 1
            let written = Locked<[ReplicaStatus]>([])
            let failure = Locked<String?>(nil)
            let history = Task {
                do {
                    for try await response in world.plane.client.watch(.key(key), startRevision: from) {
                        for event in response.events where event.type == .put {
                            let status = try ResourceStore.decode(Replica.self, event.kv).status
                            written.withLock { $0.append(status) }
                        }
                    }
                } catch {
                    failure.withLock { $0 = "\(error)" }
                }
            }
            defer { history.cancel() }
            try await world.updateReplica("mover") {
                $0.binding = Binding(node: world.node, gpuIndices: [1])
                $0.status = ReplicaStatus(phase: .bound)
            }
            do {
                try await eventually("running in a new container", timeout: 90, every: 0.05) {
                    written.withLock { statuses in
                        statuses.contains { $0.phase == .running && $0.containerID != nil && $0.containerID != oldID }
                    }
                }
            } catch {
                Issue.record("statuses written since the rebinding: \(written.withLock { $0 }); now: \(try await world.replica("mover").status); key \(key) from \(from); watch: \(failure.withLock { $0 } ?? "no error")")
                throw error
            }
            let phases = written.withLock { $0 }
            #expect(!phases.contains { $0.phase == .failed }, "\(phases)")
            #expect(phases.contains { $0.phase == .starting && $0.reason == .waitingForPreviousContainer }, "\(phases)")
            let after = try await world.replica("mover")
            #expect(try await world.containers(of: "mover").map(\.id) == [try #require(after.status.containerID)])
        }
    }

    /// A report is checked against the replica as stored: it never binds, never overwrites a
    /// newer binding's status, and a node reports only its own phases.
    @Test func staleOrForeignReportsAreRefused() async throws {
        try await withAgentWorld { world in
            // 60 s per call: a status report outlived the agent's 5 s in a loaded full run.
            let api = world.apiClient(requestTimeout: .seconds(60))
            let replica = try await world.createReplica("reported", gpus: [2])
            let binding = try #require(replica.binding)

            // About an earlier binding (GPU 3): 404, nothing written.
            var stale = ReplicaStatus(phase: .failed, reason: .crashLoopBackOff, observedBinding: Binding(node: world.node, gpuIndices: [3]))
            await #expect { try await api.reportStatus(replica: world.tenant, "app.reported", stale) } throws: {
                ($0 as? NodeAPIError)?.code == .notFound
            }
            #expect(try await world.replica("reported").status.phase == .bound)

            // A phase that is not the agent's: refused.
            await #expect { try await api.reportStatus(replica: world.tenant, "app.reported", ReplicaStatus(phase: .pending)) } throws: {
                ($0 as? NodeAPIError)?.httpStatus == 422
            }

            // About the current binding: stored, with the binding it observed.
            let current = ReplicaStatus(phase: .running, containerID: "c1", observedBinding: binding)
            let stored = try await api.reportStatus(replica: world.tenant, "app.reported", current)
            #expect(stored.status == current)

            // Unbound meanwhile: a late report neither rebinds nor changes the phase.
            try await world.updateReplica("reported") { $0.unbind(message: "node is being drained") }
            stale = ReplicaStatus(phase: .running, containerID: "c1", observedBinding: binding)
            await #expect { try await api.reportStatus(replica: world.tenant, "app.reported", stale) } throws: {
                ($0 as? NodeAPIError)?.code == .notFound
            }
            // Not even an admin sets the status of an unbound replica.
            let answer = try await ControlPlane.call(
                world.plane, .put, "/v1/replicas/\(world.tenant)/app.reported/status", token: world.plane.admin,
                body: #"{"phase": "running", "restarts": 0}"#)
            #expect(answer.status == 409)
            let after = try await world.replica("reported")
            #expect(after.binding == nil)
            #expect(after.status.phase == .pending)
            #expect(after.status.observedBinding == nil)
        }
    }
}
