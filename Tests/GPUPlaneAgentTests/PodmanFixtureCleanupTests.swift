import Foundation
import GPUPlaneTestSupport
import Testing

/// The podman fixture's shutdown leaves no container process behind, even one podman lost.
@Suite(.enabled(if: podmanAvailable, "needs root, podman, runc and busybox-static"))
struct PodmanFixtureCleanupTests {
    static let runc = ["/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// runc's containers, id → bundle.
    static func runtimeContainers(_ runc: String) throws -> [String: String] {
        struct Entry: Decodable {
            let id: String
            let bundle: String
        }
        let (status, output) = try Command.run(runc, ["list", "--format", "json"])
        try #require(status == 0, "runc list: \(output)")
        let entries = try JSONDecoder().decode([Entry]?.self, from: Data(output.utf8)) ?? []
        return Dictionary(entries.map { ($0.id, $0.bundle) }, uniquingKeysWith: { a, _ in a })
    }

    /// What a podman killed mid-start leaves (the fault suite kills the service while it
    /// creates a container): a container runc created, its `runc init` waiting, that podman's
    /// database does not count as started, so `podman rm --all --force` stops nothing of it.
    /// Made here with runc directly, in a bundle under the fixture's storage; the fixture's
    /// shutdown must delete it (its process gone) along with the folder.
    @Test func aRuntimeContainerPodmanLostIsDeletedWithTheFixture() async throws {
        let runc = try #require(Self.runc)
        let podman = try await PodmanFixture.start()
        var shutDown = false
        defer { if !shutDown { podman.shutdown() } }
        let bundle = podman.directory.appendingPathComponent("root/stranded-\(podman.runID)")
        let rootfs = bundle.appendingPathComponent("rootfs/bin")
        try FileManager.default.createDirectory(at: rootfs, withIntermediateDirectories: true)
        let busybox = try #require(["/bin/busybox", "/usr/bin/busybox"].first { FileManager.default.isExecutableFile(atPath: $0) })
        try FileManager.default.copyItem(atPath: busybox, toPath: rootfs.appendingPathComponent("busybox").path)
        let spec = try Command.run(runc, ["spec", "--bundle", bundle.path])
        try #require(spec.status == 0, "runc spec: \(spec.output)")
        let configURL = bundle.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        var process = try #require(config["process"] as? [String: Any])
        process["terminal"] = false
        process["args"] = ["/bin/busybox", "sleep", "1000"]
        config["process"] = process
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        let id = "gpuplane-test-stranded-\(podman.runID)"
        // Its `runc init` outlives `runc create` and would hold a pipe for the output open.
        let log = bundle.appendingPathComponent("create.log").path
        let created = try Command.run(
            "/bin/sh", ["-c", "exec '\(runc)' create --bundle '\(bundle.path)' \(id) </dev/null >'\(log)' 2>&1"], timeout: .seconds(60))
        try #require(created.status == 0, "runc create: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        let before = try Self.runtimeContainers(runc)
        #expect(before[id] == bundle.path)

        podman.shutdown()
        shutDown = true
        let after = try Self.runtimeContainers(runc)
        if after[id] != nil { _ = try? Command.run(runc, ["delete", "--force", id]) }
        #expect(after[id] == nil, "the fixture's shutdown left runc container \(id)")
        #expect(!FileManager.default.fileExists(atPath: podman.directory.path))
    }
}
