import Foundation
import GPUPlaneTestSupport
import Testing

/// The README's main job, as a test: the real daemons, etcd, podman with fake GPUs; an
/// application is applied, placed by the scheduler, started by the node-agent on exactly its
/// GPU, and stopped when deleted.
@Suite(.serialized, .timeLimit(.minutes(10))) struct LocalClusterTests {
    static var binaries: URL {
        // The test bundle sits beside the executables in .build/<configuration>/.
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1, !FileManager.default.fileExists(atPath: url.appendingPathComponent("gpuplane-api-server").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable))
    func applyPlaceRunAndDelete() async throws {
        let cluster = try await LocalCluster.start(binaries: Self.binaries)
        do {
            let token = try await cluster.tenant("e2e", plan: "enterprise")
            let manifest = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("examples/local-gpu-app.yaml"), encoding: .utf8)
            let applied = try await cluster.call("POST", "/v1/applications", token: token, body: manifest)
            #expect(applied.status == 201)

            var replica: [String: Any] = [:]
            try await eventually("placed and running", timeout: 120, every: 0.25) {
                replica = (try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]])?.first ?? [:]
                return (replica["status"] as? [String: Any])?["phase"] as? String == "running"
            }
            let binding = try #require(replica["binding"] as? [String: Any])
            #expect(binding["node"] as? String == cluster.nodeName)
            let gpus = try #require(binding["gpuIndices"] as? [Int])
            #expect(gpus.count == 1)
            let index = try #require(gpus.first)

            // From inside the container: exactly its GPU, and the env contract.
            let name = "gpuplane_e2e_hello-gpu.worker"
            var logs = ""
            try await eventually("the container printed its GPU") {
                logs = (try? cluster.podman.podman(["logs", name])) ?? ""
                return logs.contains("GPUPLANE_FAKE_GPU_INDEX=")
            }
            #expect(logs.contains("NXL_GPU_INDEX=\(index)\n"))
            #expect(logs.contains("GPUPLANE_FAKE_GPU_INDEX=\(index)\n"))
            #expect(logs.contains("GPUPLANE_FAKE_GPU_UUID=\(cluster.podman.fakeGPUs[index].uuid)\n"))
            #expect(logs.components(separatedBy: "_UUID=").count == 3, "exactly one GPU's CDI edits: \(logs)")

            // Deleting the application stops the container.
            #expect(try await cluster.call("DELETE", "/v1/applications/hello-gpu", token: token).status == 204)
            try await eventually("the container is gone", timeout: 60) {
                !((try? cluster.podman.podman(["ps", "--format", "{{.Names}}"])) ?? name).contains(name)
            }
        } catch {
            Issue.record("\(error)\n\(cluster.logTails())")
        }
        await Task.detached { cluster.shutdown() }.value
    }
}
