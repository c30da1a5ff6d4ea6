import Foundation
import GPUPlaneAgent
import GPUPlaneTestSupport
import Testing

/// One podman service shared by every engine test of this process; each test names its
/// containers uniquely and removes them, and the fixture removes whatever is left at exit.
enum SharedPodman {
    static let fixture = Task { try await PodmanFixture.start() }

    /// The fixture and a client for it, with GPUs as the fixture's fake CDI devices.
    static func engine() async throws -> (PodmanFixture, ContainerEngine.Client) {
        let podman = try await fixture.value
        let client = ContainerEngine.Client(
            ContainerEngine.Configuration(socketPath: podman.socketPath, cdiGPUKind: podman.cdiKind))
        return (podman, client)
    }
}

/// The containers one test made, removed when the test ends, passing or failing.
final class ContainerScope: @unchecked Sendable {
    let podman: PodmanFixture
    let engine: ContainerEngine.Client
    /// A label carried by this scope's containers only.
    let scopeLabel: [String: String]
    private let lock = NSLock()
    private var names: [String] = []

    init(podman: PodmanFixture, engine: ContainerEngine.Client) {
        self.podman = podman
        self.engine = engine
        scopeLabel = ["gpuplane.io/test-scope": UUID().uuidString.lowercased()]
    }

    /// A unique container name, remembered for removal.
    func name(_ base: String) -> String {
        let name = podman.uniqueName(base)
        lock.withLock { names.append(name) }
        return name
    }

    /// A spec from the test image with this scope's label.
    func spec(
        _ base: String, command: [String], environment: [String: String] = [:], labels: [String: String] = [:],
        gpus: [Int] = [], network: ContainerEngine.ContainerSpec.Network = .none
    ) -> ContainerEngine.ContainerSpec {
        ContainerEngine.ContainerSpec(
            name: name(base), image: podman.testImage, command: command, environment: environment,
            labels: labels.merging(scopeLabel) { $1 }, gpuIndices: gpus, network: network)
    }

    /// Creates and starts `spec`, returning the id.
    func run(_ spec: ContainerEngine.ContainerSpec) async throws -> String {
        let id = try await engine.create(spec)
        try await engine.start(id)
        return id
    }

    func removeAll() async {
        for name in lock.withLock({ names }) {
            if (try? await engine.remove(name)) == nil { _ = try? await podman.podman(["rm", "--force", "--time", "0", name]) }
        }
    }
}

/// Runs `body` with a scope whose containers are removed afterwards, even when it throws.
func withContainers(_ body: (ContainerScope) async throws -> Void) async throws {
    let (podman, engine) = try await SharedPodman.engine()
    let scope = ContainerScope(podman: podman, engine: engine)
    do {
        try await body(scope)
    } catch {
        await scope.removeAll()
        throw error
    }
    await scope.removeAll()
}

/// Whether the podman tests can run here (root, podman, runc, busybox-static).
let podmanAvailable = PodmanFixture.isAvailable

/// The text of a container's output so far.
func output(_ engine: ContainerEngine.Client, _ id: String) async throws -> [String] {
    try await engine.logs(id, tail: nil).map(\.text)
}

/// Waits until `id` has exited and returns its state.
func waitExited(_ engine: ContainerEngine.Client, _ id: String, timeout: Double = 30) async throws
    -> ContainerEngine.ContainerState
{
    try await eventually("container \(id) exited", timeout: timeout) {
        try await engine.inspect(id).state.status == .exited
    }
    return try await engine.inspect(id).state
}
