import Foundation
import GPUPlaneTestSupport
import Testing

/// The podman fixture's shutdown leaves no container process behind, even one podman lost.
@Suite(.enabled(if: podmanAvailable, "needs root, podman, runc and busybox-static"))
struct PodmanFixtureCleanupTests {
    /// A step of the test that failed, off the cooperative pool.
    struct StepFailed: Error, CustomStringConvertible {
        let description: String
    }

    /// runc's containers, id → bundle.
    static func runtimeContainers(_ runc: String) throws -> [String: String] {
        struct Entry: Decodable {
            let id: String
            let bundle: String
        }
        let (status, output) = try Command.run(runc, ["list", "--format", "json"])
        guard status == 0 else { throw StepFailed(description: "runc list: \(output)") }
        let entries = try JSONDecoder().decode([Entry]?.self, from: Data(output.utf8)) ?? []
        return Dictionary(entries.map { ($0.id, $0.bundle) }, uniquingKeysWith: { a, _ in a })
    }

    /// Makes container `id` with runc directly (created, its `runc init` waiting), in a bundle
    /// at `bundle` with busybox for its root.
    static func createRuntimeContainer(_ runc: String, id: String, bundle: URL) throws {
        let rootfs = bundle.appendingPathComponent("rootfs/bin")
        try FileManager.default.createDirectory(at: rootfs, withIntermediateDirectories: true)
        guard let busybox = PodmanFixture.busybox else {
            throw StepFailed(description: "no busybox")
        }
        try FileManager.default.copyItem(atPath: busybox, toPath: rootfs.appendingPathComponent("busybox").path)
        let spec = try Command.run(runc, ["spec", "--bundle", bundle.path])
        guard spec.status == 0 else { throw StepFailed(description: "runc spec: \(spec.output)") }
        let configURL = bundle.appendingPathComponent("config.json")
        guard var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any],
            var process = config["process"] as? [String: Any]
        else { throw StepFailed(description: "runc spec wrote no process") }
        process["terminal"] = false
        process["args"] = ["/bin/busybox", "sleep", "1000"]
        config["process"] = process
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        // Its `runc init` outlives `runc create` and would hold a pipe for the output open.
        let log = bundle.appendingPathComponent("create.log").path
        let created = try Command.run(
            "/bin/sh", ["-c", "exec '\(runc)' create --bundle '\(bundle.path)' \(id) </dev/null >'\(log)' 2>&1"], timeout: .seconds(60))
        guard created.status == 0 else {
            throw StepFailed(description: "runc create: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
    }

    /// What a podman killed mid-start leaves (the fault suite kills the service while it
    /// creates a container): a container runc created, its `runc init` waiting, that podman's
    /// database does not count as started, so `podman rm --all --force` stops nothing of it.
    /// Made here with runc directly, in a bundle under the fixture's storage; the fixture's
    /// shutdown must delete it (its process gone) along with the folder. The blocking steps
    /// (runc, podman) run off the cooperative pool.
    @Test func aRuntimeContainerPodmanLostIsDeletedWithTheFixture() async throws {
        let runc = try #require(PodmanFixture.runc)
        let podman = try await PodmanFixture.start()
        let id = "gpuplane-test-stranded-\(podman.runID)"
        let bundle = podman.directory.appendingPathComponent("root/stranded-\(podman.runID)")
        let (before, after) = try await TestEnvironment.offPool("podman-cleanup-test") { () throws -> (String?, String?) in
            do {
                try Self.createRuntimeContainer(runc, id: id, bundle: bundle)
            } catch {
                podman.shutdown()
                throw error
            }
            let before = try Self.runtimeContainers(runc)[id]
            podman.shutdown()
            let after = try Self.runtimeContainers(runc)[id]
            if after != nil { _ = try? Command.run(runc, ["delete", "--force", id]) }
            return (before, after)
        }
        #expect(before == bundle.path)
        #expect(after == nil, "the fixture's shutdown left runc container \(id)")
        #expect(!FileManager.default.fileExists(atPath: podman.directory.path))
    }
}
