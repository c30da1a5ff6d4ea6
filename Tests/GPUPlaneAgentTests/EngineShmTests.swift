import Foundation
@testable import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// `/dev/shm` as the engine sizes it: vLLM's servers get ``ContainerEngine/ContainerSpec/shmSizeBytes``
/// (from the catalog's ``ModelServer/Serving/shmMiB``), other containers the engine's default.
@Suite(.enabled(if: podmanAvailable, "needs root, podman, runc and busybox-static"))
struct EngineShmTests {
    /// The size of `/dev/shm` in the container, in KiB, as its mount table says.
    static func shmKiB(_ lines: [String]) -> Int? {
        guard let line = lines.first(where: { $0.split(separator: " ").dropFirst().first == "/dev/shm" }),
            let size = line.split(separator: " ").dropFirst(3).first?.split(separator: ",").first(where: { $0.hasPrefix("size=") })
        else { return nil }
        let value = size.dropFirst("size=".count)
        guard value.hasSuffix("k"), let kib = Int(value.dropLast()) else { return nil }
        return kib
    }

    @Test func aModelServersContainerGetsTheShmItsServingSpecAsksFor() async throws {
        try await withContainers { scope in
            // The model server's plan, as the node-agent makes it from the scheduler's spec.
            var server = ModelServer(
                metadata: ObjectMeta(name: "shm-\(scope.podman.runID)", uid: "u-shm"),
                spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10,
                            serving: .init(image: scope.podman.testImage, args: [], port: 8000, shmMiB: 96)),
                binding: Binding(node: "n", gpuIndices: []))
            server.spec.serving?.args = []
            let plan = try #require(ContainerPlan(server: server, node: "n"))
            #expect(plan.spec.shmSizeBytes == 96 << 20)
            var spec = scope.spec("shm", command: ["sh", "-c", "cat /proc/mounts; sleep 1000"])
            spec.shmSizeBytes = plan.spec.shmSizeBytes
            let id = try await scope.run(spec)
            try await eventually("mounts printed") { Self.shmKiB(try await output(scope.engine, id)) != nil }
            #expect(Self.shmKiB(try await output(scope.engine, id)) == 96 * 1024)

            // Without one, the engine's default, and the plan's hash is the one it had.
            let plain = try await scope.run(scope.spec("noshm", command: ["sh", "-c", "cat /proc/mounts; sleep 1000"]))
            try await eventually("mounts printed") { Self.shmKiB(try await output(scope.engine, plain)) != nil }
            let standard = Self.shmKiB(try await output(scope.engine, plain))
            #expect(standard != nil && standard != 96 * 1024, "\(standard ?? -1) KiB")
            server.spec.serving?.shmMiB = nil
            let without = try #require(ContainerPlan(server: server, node: "n"))
            #expect(without.spec.shmSizeBytes == nil && without.specHash != plan.specHash)
        }
    }
}

/// The create bodies, without an engine.
@Suite struct EngineShmBodyTests {
    /// Both engines' create bodies carry it: Docker's `HostConfig.ShmSize`, Podman's `shm_size`,
    /// both in bytes; absent, neither key is sent (the engine's default), and IPC stays private.
    @Test func bothCreateBodiesCarryTheShmSize() throws {
        var spec = ContainerEngine.ContainerSpec(name: "shm", image: "localhost/busybox:1", command: ["true"])
        spec.shmSizeBytes = 8 << 30
        let docker = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(spec, labels: [:]))) as? [String: Any]
        let host = docker?["HostConfig"] as? [String: Any]
        #expect(host?["ShmSize"] as? Int64 == 8 << 30)
        #expect(host?["IpcMode"] as? String == "private")
        let libpod = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(LibpodCreate(spec, labels: [:], cdiKind: "nvidia.com/gpu"))) as? [String: Any]
        #expect(libpod?["shm_size"] as? Int64 == 8 << 30)
        #expect((libpod?["ipcns"] as? [String: String])?["nsmode"] == "private")
        spec.shmSizeBytes = nil
        let plain = try JSONSerialization.jsonObject(with: JSONEncoder().encode(DockerCreate(spec, labels: [:]))) as? [String: Any]
        #expect((plain?["HostConfig"] as? [String: Any])?["ShmSize"] == nil)
        let plainPod = try JSONSerialization.jsonObject(
            with: JSONEncoder().encode(LibpodCreate(spec, labels: [:], cdiKind: "nvidia.com/gpu"))) as? [String: Any]
        #expect(plainPod?["shm_size"] == nil)
    }
}
