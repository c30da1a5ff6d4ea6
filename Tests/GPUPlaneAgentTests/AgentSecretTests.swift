import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneTestSupport
import Logging
import Testing

/// Secret vars through a real node-agent and podman: the value reaches the container's
/// environment and nothing else the agent makes (labels, statuses, the node's status, its log
/// lines in journald); a replaced secret replaces the container; a missing one makes the
/// replica wait with CreateContainerConfigError until it exists.
@Suite(.timeLimit(.minutes(5))) struct AgentSecretTests {
    @Test(.enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func theValueReachesOnlyTheContainersEnvironment() async throws {
        try await JournaldFixture.shared.ensureRunning()
        let identifier = "gpuplane-test-secrets-\(UUID().uuidString.prefix(8).lowercased())"
        // Everything the agent, its API client and its engine client log, at the most verbose level.
        let logger = Logger(label: "gpuplane.agent") {
            JournaldLogHandler(label: $0, identifier: identifier, level: .trace, fallback: LogLineSink { _ in })
        }
        try await withAgentWorld { world in
            let user = try await ControlPlane.userToken(world.plane, tenant: world.tenant)
            let value = "s3cr3t-" + UUID().uuidString
            let created = try await ControlPlane.call(
                world.plane, .post, "/v1/secrets", token: user, body: #"{"name": "db-url", "data": {"url": "\#(value)"}}"#)
            #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
            try await world.createReplica("web", mode: nil, command: ["sleep", "1000"], env: ["PLAIN": "visible"])
            try await world.updateReplica("web") { $0.spec.secretEnv = ["DATABASE_URL": SecretReference(secret: "db-url")] }
            // This one names a secret the tenant does not have yet.
            try await world.createReplica("waits", mode: nil, command: ["sleep", "1000"])
            try await world.updateReplica("waits") { $0.spec.secretEnv = ["API_KEY": SecretReference(secret: "api-key", key: "key")] }
            world.startAgent(logger: logger)

            let running = try await world.waitForReplica("web", "running") { $0.status.phase == .running }
            let container = try #require(try await world.containers(of: "web").first)
            let details = try await world.engine.inspect(container.id)
            #expect(details.environment["DATABASE_URL"] == value)
            #expect(details.environment["PLAIN"] == "visible")
            #expect(!details.labels.values.contains { $0.contains(value) })
            #expect(!"\(running.status)".contains(value))

            let waiting = try await world.waitForReplica("waits", "CreateContainerConfigError") {
                $0.status.reason == .createContainerConfigError
            }
            #expect(waiting.status.phase == .failed)
            #expect(waiting.status.message?.contains("API_KEY") == true && waiting.status.message?.contains("api-key") == true, "\(waiting.status)")
            #expect(try await world.containers(of: "waits").isEmpty)
            // Once the secret exists, it starts (the agent asks again after its backoff).
            let apiKey = "k-" + UUID().uuidString
            #expect(
                try await ControlPlane.call(
                    world.plane, .post, "/v1/secrets", token: user, body: #"{"name": "api-key", "data": {"key": "\#(apiKey)"}}"#
                ).status == 201)
            try await world.waitForReplica("waits", "running once its secret exists") { $0.status.phase == .running }
            let late = try #require(try await world.containers(of: "waits").first)
            #expect(try await world.engine.inspect(late.id).environment["API_KEY"] == apiKey)

            // A replaced value replaces the container, which gets the new value.
            let newValue = "s3cr3t-" + UUID().uuidString
            let replaced = try await ControlPlane.call(
                world.plane, .put, "/v1/secrets/db-url", token: user, body: #"{"data": {"url": "\#(newValue)"}}"#)
            #expect(replaced.status == 200)
            var fresh: ContainerEngine.ContainerSummary?
            try await eventually("a new container with the new value", timeout: 60) {
                fresh = try await world.containers(of: "web").first { $0.id != container.id && $0.status == .running }
                guard let fresh else { return false }
                return try await world.engine.inspect(fresh.id).environment["DATABASE_URL"] == newValue
            }
            try await world.waitForReplica("web", "running again") { $0.status.phase == .running && $0.status.containerID == fresh?.id }

            // Nothing the agent wrote or logged holds a value.
            let secrets = [value, newValue, apiKey]
            let node = try await world.node()
            let nodeText = String(decoding: try GPUPlaneJSON.encode(node), as: UTF8.self)
            let replicasText = try await ["web", "waits"].asyncMap { String(decoding: try GPUPlaneJSON.encode(try await world.replica($0)), as: UTF8.self) }
            for secret in secrets {
                #expect(!nodeText.contains(secret))
                #expect(!replicasText.contains { $0.contains(secret) })
            }
            for summary in try await world.containers() {
                #expect(!summary.labels.values.contains { value in secrets.contains { value.contains($0) } })
            }
            var entries: [JournalEntry] = []
            try await eventually("the agent's lines in journald", timeout: 30) {
                entries = try await JournaldFixture.read(arguments: ["-t", identifier])
                return entries.contains { $0["GPUPLANE_REPLICA"] == "\(world.tenant)/app.web" }
                    && entries.contains { $0["GPUPLANE_REPLICA"] == "\(world.tenant)/app.waits" }
            }
            for entry in entries {
                for secret in secrets {
                    #expect(!entry.fields.values.flatMap { $0 }.contains { $0.contains(secret) }, "\(entry)")
                }
            }
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
