import Foundation
import GPUPlaneTestSupport
import Testing

/// The dashboard (`/ui`) in real headless Chromium, driven by Selenium
/// (`scripts/dashboard-browser-check.py`) against a live local cluster: etcd, the real
/// api-server, scheduler and node-agents, podman with fake GPUs and the fake NVML. A user signs
/// in, creates a deployment (the form checked as it is typed) and sees it listed, changes its
/// max instances, sees a bad manifest's finding at its line and column, applies a good one,
/// reads usage and events, and is refused another tenant's objects; an admin sees both tenants
/// with the tenant filter, and a node's GPU turn unhealthy, live, after a fake-NVML XID event.
/// Each page's screenshot is taken on the way (docs/dashboard.md shows them).
///
/// Chromium, chromedriver and Selenium come from `scripts/install-deps` (Debian's `chromium`
/// and `chromium-driver`; Selenium in the tools venv); without them the test is skipped, saying
/// so. `GPUPLANE_DASHBOARD_SCREENSHOTS=<folder>` keeps the screenshots there (docs/dashboard to
/// refresh the docs'); otherwise they go to a temporary folder.
@Suite(.serialized, .timeLimit(.minutes(15))) struct DashboardBrowserTests {
    static let chromium = "/usr/bin/chromium"
    static let chromedriver = "/usr/bin/chromedriver"
    static var python: String {
        (ProcessInfo.processInfo.environment["GPUPLANE_TOOLS_VENV"].flatMap { $0.isEmpty ? nil : $0 } ?? "/opt/gpuplane-venv") + "/bin/python"
    }

    /// Whether Selenium is in the tools venv (its package folder, without running Python).
    static var hasSelenium: Bool {
        let lib = URL(fileURLWithPath: python).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("lib")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: lib.path)) ?? []
        return versions.contains { FileManager.default.fileExists(atPath: lib.appendingPathComponent("\($0)/site-packages/selenium/webdriver").path) }
    }

    static var browserAvailable: Bool {
        TestEnvironment.hasExecutable(chromium) && TestEnvironment.hasExecutable(chromedriver) && TestEnvironment.hasExecutable(python) && hasSelenium
    }

    static var repository: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }

    @Test(
        .enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable, "needs etcd, and root with podman, runc and busybox-static"),
        .enabled(if: browserAvailable, "needs chromium, chromium-driver and selenium in the tools venv: run scripts/install-deps (scripts/test does)"))
    func aUserAndAnAdminUseTheDashboardInChromium() async throws {
        let cluster = try await LocalCluster.start(binaries: LocalClusterTests.binaries)
        defer { cluster.shutdown() }
        do {
            // Two tenants; the other one has a deployment and an application of its own.
            let suffix = UUID().uuidString.prefix(6).lowercased()
            let (user, other) = ("acme-\(suffix)", "globex-\(suffix)")
            for (name, plan) in [(user, "scale"), (other, "pro")] {
                let created = try await cluster.call(
                    "POST", "/v1/tenants", token: cluster.adminToken,
                    body: #"{"name": "\#(name)", "plan": "\#(plan)", "gpu_limit": 8, "spending_limit_usd": 500}"#)
                #expect(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
            }
            let userToken = try #require(try await cluster.json("POST", "/v1/tokens", token: cluster.adminToken, body: #"{"tenant": "\#(user)", "role": "user"}"#)["token"] as? String)
            let revocable = try await cluster.json("POST", "/v1/tokens", token: cluster.adminToken, body: #"{"tenant": "\#(user)", "role": "user"}"#)
            let (revokedToken, revokedID) = (try #require(revocable["token"] as? String), try #require(revocable["id"] as? String))
            let otherToken = try #require(try await cluster.json("POST", "/v1/tokens", token: cluster.adminToken, body: #"{"tenant": "\#(other)", "role": "user"}"#)["token"] as? String)
            let deployment = try await cluster.json(
                "POST", "/v1/deployments", token: otherToken,
                body: #"{"model_name": "other-model", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 0, "max_instances": 1}}"#)
            let otherDeployID = try #require(deployment["deploy_id"] as? String, "\(deployment)")
            let app = "application:\n  name: other-app\n  pods:\n    - name: tool\n      image: \(cluster.podman.testImage)\n      command: [\"sleep\", \"100000\"]\n      machineType: S\n"
            let applied = try await cluster.call("POST", "/v1/applications", token: otherToken, body: app)
            #expect(applied.status == 201, "\(String(decoding: applied.body, as: UTF8.self))")

            let keep = ProcessInfo.processInfo.environment["GPUPLANE_DASHBOARD_SCREENSHOTS"].flatMap { $0.isEmpty ? nil : $0 }
            let shots = try keep.map { URL(fileURLWithPath: $0) } ?? TestEnvironment.temporaryDirectory(prefix: "dashboard-shots")
            let environment = [
                "BASE": cluster.apiURL, "ADMIN_TOKEN": cluster.adminToken, "USER_TOKEN": userToken, "USER_TENANT": user,
                "REVOKED_TOKEN": revokedToken, "REVOKED_TOKEN_ID": revokedID,
                "OTHER_TENANT": other, "OTHER_TOKEN": otherToken, "OTHER_DEPLOY_ID": otherDeployID, "OTHER_DEPLOYMENT": "\(other)/other-model", "OTHER_APP": "other-app",
                "NODE": cluster.nodeName, "NVML_EVENTS": cluster.directory.appendingPathComponent("\(cluster.nodeName).fake-nvml.events").path,
                "CPU_IMAGE": cluster.podman.testImage, "SCREENSHOTS": shots.path, "CHROMIUM": Self.chromium, "CHROMEDRIVER": Self.chromedriver,
                "WAIT_SECONDS": String(Int(min(60 * TestEnvironment.timeScale, 180))), "PYTHONUNBUFFERED": "1",
            ]
            let script = Self.repository.appendingPathComponent("scripts/dashboard-browser-check.py").path
            let (status, output) = try await TestEnvironment.offPool {
                try Command.run(Self.python, [script], environment: environment, timeout: .seconds(780))
            }
            print(output.split(separator: "\n").filter { $0.hasPrefix("step: ") || $0.hasPrefix("all steps") }.joined(separator: "\n"))
            #expect(status == 0, "the browser check failed (screenshots in \(shots.path)):\n\(output.suffix(12_000))\n\(cluster.logTails(bytes: 1500))")
            #expect(output.contains("all steps passed"), "\(output.suffix(4_000))")
            // A page for each screenshot the docs show.
            for name in ["sign-in", "deployments", "deployment-create-invalid", "deployment-details", "apply-findings", "applications", "application-details", "usage", "events", "refused", "admin-deployments", "fleet", "phone-deployments", "unreachable", "plan-refused"] where status == 0 {
                #expect(FileManager.default.fileExists(atPath: shots.appendingPathComponent("\(name).png").path), "\(name).png")
            }
        } catch {
            Issue.record("\(error)\n\(cluster.logTails(bytes: 2000))")
        }
    }
}
