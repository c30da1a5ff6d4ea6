import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

/// Whether the pull tests can run: the agent's needs, and Debian's docker-registry and htpasswd.
let pullTestsAvailable = agentTestsAvailable && RegistryFixture.isAvailable

/// One registry on loopback (htpasswd logins; a throttled second address) and one podman that
/// speaks plain HTTP to it, for every pull test of this process.
enum PullFixtures {
    static let user = "alice"
    /// A password no other string of the run contains, so finding it anywhere is a leak.
    static let password = "pw-" + UUID().uuidString.lowercased()
    /// The throttled address's rate: a 24 MB layer takes about 3 s through it.
    static let throttle = 8_000_000

    static let shared = Task { () throws -> (RegistryFixture, PodmanFixture) in
        let registry = try await RegistryFixture.start(users: [user: password], throttle: throttle)
        let podman = try await PodmanFixture.start(insecureRegistries: registry.locations)
        return (registry, podman)
    }

    static func get() async throws -> (RegistryFixture, PodmanFixture) { try await shared.value }

    /// A repository name no other test uses.
    static func repository(_ base: String) -> String { "team/\(base)-\(UUID().uuidString.lowercased().prefix(8))" }

    static func engine(_ podman: PodmanFixture, logger: Logger = Logger(label: "test.engine")) -> ContainerEngine.Client {
        ContainerEngine.Client(ContainerEngine.Configuration(socketPath: podman.socketPath, cdiGPUKind: podman.cdiKind, logger: logger))
    }
}

/// Every log line (message and metadata) of a logger, for checking what was logged.
final class LogRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    var all: [String] { lock.withLock { lines } }

    func append(_ line: String) { lock.withLock { lines.append(line) } }

    /// A logger at trace level writing here.
    func logger(_ label: String = "gpuplane.agent") -> Logger {
        var logger = Logger(label: label) { _ in RecordingLogHandler(recorder: self) }
        logger.logLevel = .trace
        return logger
    }

    struct RecordingLogHandler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = self.metadata.merging(event.metadata ?? [:]) { $1 }
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            recorder.append("\(event.level) \(event.message) \(fields)")
        }
    }
}

/// Every status a replica was written with, as the store's watch saw it, with when it arrived.
final class StatusHistory: @unchecked Sendable {
    private let lock = NSLock()
    /// One status and when the watch brought it.
    struct Seen: Sendable {
        let at: Date
        let status: ReplicaStatus
    }
    private var entries: [Seen] = []
    private var task: Task<Void, Never>?

    var all: [Seen] { lock.withLock { entries } }
    var statuses: [ReplicaStatus] { all.map(\.status) }

    /// Starts watching replica `app.<name>` of `tenant` (call before creating it).
    static func watch(_ world: AgentWorld, _ name: String) async throws -> StatusHistory {
        let history = StatusHistory()
        let from = try await world.store.list(Replica.self, tenant: world.tenant).revision + 1
        let store = world.store
        let tenant = world.tenant
        history.task = Task {
            do {
                for try await batch in store.watch(Replica.self, tenant: tenant, from: from, progressNotify: false) {
                    for event in batch.events {
                        guard let replica = event.object, replica.metadata.name == "app.\(name)" else { continue }
                        history.lock.withLock { history.entries.append(Seen(at: Date(), status: replica.status)) }
                    }
                }
            } catch {}
        }
        return history
    }

    func stop() { task?.cancel() }

    /// Every status as text, for failure messages and leak checks.
    var text: String { statuses.map { "\($0.phase.rawValue) \($0.reason?.rawValue ?? "-") \($0.message ?? "")" }.joined(separator: "\n") }
}

/// The engine's pull against a real registry with htpasswd logins.
@Suite(.enabled(if: pullTestsAvailable, "needs root with podman, runc, busybox-static, docker-registry and htpasswd"))
struct ImagePullEngineTests {
    @Test func pullWithCredentialsBringsTheImageAndReportsLayers() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let reference = try registry.push(podman.testImage, as: PullFixtures.repository("engine") + ":1", from: podman, user: PullFixtures.user)
        let engine = PullFixtures.engine(podman)
        #expect(try await engine.imageExists(reference) == false)

        let seen = ProgressLog()
        let login = ContainerEngine.RegistryCredential(server: registry.address, username: PullFixtures.user, password: PullFixtures.password)
        try await engine.pull(reference, credential: login, timeout: .seconds(60)) { seen.append($0) }
        #expect(try await engine.imageExists(reference))
        let last = try #require(seen.all.last)
        #expect(last.layers >= 1 && last.layersDone == last.layers, "\(seen.all)")
        #expect(!login.description.contains(PullFixtures.password))
    }

    @Test func failedPullsAreTypedAndNeverShowTheCredential() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let reference = try registry.push(podman.testImage, as: PullFixtures.repository("typed") + ":1", from: podman, user: PullFixtures.user)
        let engine = PullFixtures.engine(podman)
        let good = ContainerEngine.RegistryCredential(server: registry.address, username: PullFixtures.user, password: PullFixtures.password)
        let wrongSecret = "wrong-" + PullFixtures.password
        let wrong = ContainerEngine.RegistryCredential(server: registry.address, username: PullFixtures.user, password: wrongSecret)

        func failure(_ image: String, _ credential: ContainerEngine.RegistryCredential?) async -> EngineError? {
            do {
                try await engine.pull(image, credential: credential, timeout: .seconds(60))
                return nil
            } catch {
                return error
            }
        }

        let refused = try #require(await failure(reference, wrong))
        #expect(refused.code == .registryUnauthorized, "\(refused)")
        #expect(!"\(refused)".contains(wrongSecret) && !(refused.body ?? "").contains(wrongSecret))

        let anonymous = try #require(await failure(reference, nil))
        #expect(anonymous.code == .registryUnauthorized, "\(anonymous)")

        let missing = try #require(await failure("\(registry.address)/\(PullFixtures.repository("absent")):1", good))
        #expect(missing.code == .imageNotFound, "\(missing)")
        let missingTag = try #require(await failure(String(reference.dropLast(2)) + ":2", good))
        #expect(missingTag.code == .imageNotFound, "\(missingTag)")

        // Nothing listens there, and it is not an insecure registry: HTTPS to a closed port.
        let nowhere = try #require(await failure("127.0.0.1:\(TestEnvironment.freePort())/team/x:1", nil))
        #expect(nowhere.code == .pullFailed, "\(nowhere)")
        #expect(try await engine.imageExists(reference) == false)
    }

    @Test func slowPullReportsBytesAsTheyCome() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let local = "localhost/gpuplane-pull-big-\(UUID().uuidString.lowercased().prefix(8)):1"
        try podman.importImage(local, payloadBytes: 24_000_000)
        let repository = PullFixtures.repository("big") + ":1"
        try registry.push(local, as: repository, from: podman, user: PullFixtures.user)
        let throttled = try #require(registry.throttledAddress)
        let engine = PullFixtures.engine(podman)
        let seen = ProgressLog()
        let login = ContainerEngine.RegistryCredential(server: throttled, username: PullFixtures.user, password: PullFixtures.password)
        // The local image shares the payload layer: remove it so the pull must download it.
        try await podman.podman(["rmi", local])
        try await engine.pull("\(throttled)/\(repository)", credential: login, timeout: .seconds(120)) { seen.append($0) }
        let partial = seen.all.filter { $0.bytesTotal > 20_000_000 && $0.bytesDone > 0 && $0.bytesDone < $0.bytesTotal }
        #expect(!partial.isEmpty, "no progress in bytes while pulling: \(seen.all)")
        #expect(partial.first.map { "\($0)".contains(" MB") } == true)
    }
}

/// Progress callbacks, in order.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [ContainerEngine.PullProgress] = []
    var all: [ContainerEngine.PullProgress] { lock.withLock { entries } }
    func append(_ progress: ContainerEngine.PullProgress) { lock.withLock { entries.append(progress) } }
}

/// The node-agent pulls what the engine lacks before creating the container, with the tenant's
/// registry credential, progress and a backoff, against a real registry, podman, etcd and
/// api-server.
@Suite(.enabled(if: pullTestsAvailable, "needs etcd, root with podman, runc, busybox-static, docker-registry and htpasswd"))
struct ImagePullAgentTests {
    /// Stores a registry secret of the world's tenant through the API (`POST /v1/secrets`), as
    /// its user would; the agent gets it from the api-server's runtime answer.
    static func registrySecret(_ world: AgentWorld, _ name: String, registry: String, username: String, password: String) async throws {
        let token = try await ControlPlane.userToken(world.plane, tenant: world.tenant)
        let body = try JSONSerialization.data(withJSONObject: [
            "name": name, "type": "registry", "registry": registry, "username": username, "password": password,
        ])
        // A 503 (etcd slow at the full suite's peak: the api-server's store deadline) is
        // answered "retry": sent again, as a client would; a 409 after it means the first one
        // was stored after all.
        var reply = try await ControlPlane.call(world.plane, .post, "/v1/secrets", token: token, body: String(decoding: body, as: UTF8.self))
        var unavailable = 0
        while reply.status == 503, unavailable < 5 {
            unavailable += 1
            try await Task.sleep(for: .seconds(1))
            reply = try await ControlPlane.call(world.plane, .post, "/v1/secrets", token: token, body: String(decoding: body, as: UTF8.self))
        }
        guard reply.status == 201 || (reply.status == 409 && unavailable > 0) else {
            throw AgentHarnessError(description: "POST /v1/secrets: HTTP \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
        }
    }

    @Test func agentPullsWithTheTenantsCredentialShowingProgressThenRuns() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let local = "localhost/gpuplane-pull-agent-\(UUID().uuidString.lowercased().prefix(8)):1"
        try podman.importImage(local, payloadBytes: 24_000_000)
        let repository = PullFixtures.repository("agent") + ":1"
        try registry.push(local, as: repository, from: podman, user: PullFixtures.user)
        try await podman.podman(["rmi", local])
        let throttled = try #require(registry.throttledAddress)
        let image = "\(throttled)/\(repository)"
        let logs = LogRecorder()
        try await withAgentWorld(podman: podman) { world in
            let history = try await StatusHistory.watch(world, "pulled")
            defer { history.stop() }
            try await Self.registrySecret(world, "other", registry: "registry.example.com", username: "x", password: "other-" + PullFixtures.password)
            try await Self.registrySecret(world, "regcred", registry: throttled, username: PullFixtures.user, password: PullFixtures.password)
            world.startAgent(logger: logs.logger(), configure: { $0.imagePullProgressInterval = .milliseconds(300) })
            // The layer's transfer stands still after 12 MB (about half) until the agent has said so.
            try registry.holdThrottledPulls()
            defer { registry.releaseThrottledPulls() }
            try await world.createReplica("pulled", gpus: [2], image: image, command: ["sh", "-c", "echo pulled-and-running; sleep 1000"])
            try await eventually("progress while pulling", timeout: 120) {
                history.statuses.contains { $0.reason == .pullingImage && $0.message?.contains(" MB)") == true && $0.message?.contains("2/2 layers") == false }
            }
            registry.releaseThrottledPulls()
            let running = try await world.waitForReplica("pulled", "running", timeout: 120) { $0.status.phase == .running }
            let id = try #require(running.status.containerID)
            try await eventually("the container's output") { try await world.output(id).contains("pulled-and-running") }

            try await eventually("the watch saw the running status") { history.statuses.contains { $0.phase == .running } }
            let pulling = history.statuses.filter { $0.reason == .pullingImage }
            #expect(pulling.allSatisfy { $0.phase == .starting })
            // The secret is named once the api-server gave the tenant's registry logins.
            #expect(pulling.first?.message?.hasPrefix("pulling image \(image) from \(throttled)") == true, "\(history.text)")
            #expect(pulling.last?.message?.hasPrefix("pulling image \(image) from \(throttled) with the credentials of secret regcred (") == true, "\(history.text)")
            // Progress while the layer came: bytes of it, short of its size.
            let midway = pulling.compactMap(\.message).filter { $0.contains(" MB)") && !$0.contains("2/2 layers") }
            #expect(!midway.isEmpty, "no progress seen while pulling:\n\(history.text)")
            #expect(!history.text.contains(PullFixtures.password))
            #expect(!logs.all.contains { $0.contains(PullFixtures.password) })
            #expect(logs.all.contains { $0.contains("pulling image") && $0.contains(image) })
        }
    }

    @Test func refusedOrMissingCredentialsGiveAClearReasonAndNoSecret() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let image = try registry.push(podman.testImage, as: PullFixtures.repository("refused") + ":1", from: podman, user: PullFixtures.user)
        let wrongPassword = "wrong-" + PullFixtures.password
        let logs = LogRecorder()
        try await withAgentWorld(podman: podman) { world in
            try await Self.registrySecret(world, "badcred", registry: registry.address, username: PullFixtures.user, password: wrongPassword)
            world.startAgent(logger: logs.logger(), configure: { $0.imagePullBackoff = .seconds(30) })
            try await world.createReplica("refused", gpus: [0], image: image)
            let refused = try await world.waitForReplica("refused", "a pull failure") {
                $0.status.reason == .errImagePull || $0.status.reason == .imagePullBackOff
            }
            #expect(refused.status.phase == .failed)
            #expect(refused.status.message?.hasPrefix("registry \(registry.address) refused the credentials of secret badcred for image \(image)") == true, "\(refused.status)")
            #expect(refused.holdsCapacity)
            #expect(try await world.containers(of: "refused").isEmpty)
            #expect(!"\(refused.status)".contains(wrongPassword))
            #expect(!logs.all.contains { $0.contains(wrongPassword) })
            #expect(logs.all.contains { $0.contains("image pull failed") && $0.contains("badcred") })
        }
        // A tenant without a registry secret for it.
        try await withAgentWorld(podman: podman) { world in
            world.startAgent(configure: { $0.imagePullBackoff = .seconds(30) })
            try await world.createReplica("anonymous", gpus: [0], image: image)
            let anonymous = try await world.waitForReplica("anonymous", "a pull failure") {
                $0.status.reason == .errImagePull || $0.status.reason == .imagePullBackOff
            }
            #expect(anonymous.status.message?.hasPrefix("no credentials for registry \(registry.address)") == true, "\(anonymous.status)")
        }
    }

    @Test func missingImageBacksOffLongerEachTimeAndRunsOncePushed() async throws {
        let (registry, podman) = try await PullFixtures.get()
        let repository = PullFixtures.repository("later") + ":1"
        let image = "\(registry.address)/\(repository)"
        try await withAgentWorld(podman: podman) { world in
            let history = try await StatusHistory.watch(world, "later")
            defer { history.stop() }
            try await Self.registrySecret(world, "regcred", registry: registry.address, username: PullFixtures.user, password: PullFixtures.password)
            world.startAgent(configure: {
                $0.imagePullBackoff = .milliseconds(400)
                $0.imagePullBackoffMax = .milliseconds(3200)
            })
            try await world.createReplica("later", gpus: [3], image: image)
            // The pause doubles from 0.4 s up to 3.2 s. Statuses between two passes may be
            // overwritten before anyone reads them on a loaded machine, so the test waits until
            // it has seen the backoff after the third failed pull (1.6 s) or a later one, and
            // checks every backoff it saw against the doubling rule.
            try await eventually("the backoff after a third failed pull", timeout: 60) {
                Self.backoffs(history, image: image, registry: registry.address).contains { $0.failures >= 3 }
            }
            Self.checkBackoff(history, image: image, registry: registry.address)
            #expect(try await world.replica("later").holdsCapacity)

            // Once the image is there, the next pull gets it and the replica runs.
            try registry.push(podman.testImage, as: repository, from: podman, user: PullFixtures.user)
            try await world.waitForReplica("later", "running once pushed", timeout: 30) { $0.status.phase == .running }
        }
    }

    /// The backoffs a history shows: how many pulls had failed and the pause the agent stated,
    /// read from messages "image I not found in registry R; back-off 1.6s after 3 failed pulls
    /// before pulling again".
    static func backoffs(_ history: StatusHistory, image: String, registry: String) -> [(failures: Int, pause: String)] {
        let prefix = "image \(image) not found in registry \(registry); back-off "
        return history.statuses.compactMap { status -> (failures: Int, pause: String)? in
            guard status.reason == .imagePullBackOff, let message = status.message, message.hasPrefix(prefix) else { return nil }
            let words = message.dropFirst(prefix.count).split(separator: " ")
            guard words.count >= 3, let failures = Int(words[2]) else { return nil }
            return (failures, String(words[0]))
        }
    }

    /// Every failed pull shows as ErrImagePull with the image and registry named, and every
    /// backoff seen states the pause of the doubling rule (0.4 s, 0.8 s, 1.6 s, then 3.2 s).
    static func checkBackoff(_ history: StatusHistory, image: String, registry: String) {
        let errors = history.statuses.filter { $0.reason == .errImagePull }
        #expect(!errors.isEmpty, "\(history.text)")
        #expect(errors.allSatisfy { $0.phase == .failed && $0.message == "image \(image) not found in registry \(registry)" }, "\(history.text)")
        let seen = backoffs(history, image: image, registry: registry)
        let unreadable = history.statuses.filter { $0.reason == .imagePullBackOff }.count - seen.count
        #expect(unreadable == 0, "\(history.text)")
        for backoff in seen {
            let expected = ["0.4s", "0.8s", "1.6s"].indices.contains(backoff.failures - 1) ? ["0.4s", "0.8s", "1.6s"][backoff.failures - 1] : "3.2s"
            #expect(backoff.pause == expected, "after \(backoff.failures) failed pulls: \(history.text)")
        }
    }
}
