import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneService
import GPUPlaneTestSupport
import Testing

@testable import GPUPlaneAPI

/// The Helm chart (`charts/gpuplane`), rendered by Helm's own engine, and what it starts the
/// daemons with, read by the daemons' own configuration code.
///
/// `chart_check.py` (next to this file) runs in the tools environment `scripts/install-deps`
/// makes (`$GPUPLANE_TOOLS_VENV`, default `/opt/gpuplane-venv`: helm-python-sdk, which embeds
/// Helm v4, kubernetes-validate, jsonschema). For the default values and every
/// `charts/gpuplane/ci/*.yaml` it checks the values against `values.schema.json`, lints and
/// renders the chart, validates every document strictly for Kubernetes 1.31 and the newest
/// version kubernetes-validate knows, checks replicas, probes, selectors, mounts and that no
/// ConfigMap holds a secret, and checks that bad values are refused. It writes each daemon's
/// arguments, environment and configuration file, which this test then loads with
/// ``Configuration`` and the daemons' declared keys: a key or value the daemon would refuse at
/// start-up fails here.
@Suite(.timeLimit(.minutes(3))) struct ChartTests {
    /// The package's root directory.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// `$GPUPLANE_TOOLS_VENV/bin/python`, default `/opt/gpuplane-venv/bin/python`.
    static var python: String {
        let environment = ProcessInfo.processInfo.environment
        return (environment["GPUPLANE_TOOLS_VENV"].flatMap { $0.isEmpty ? nil : $0 } ?? "/opt/gpuplane-venv") + "/bin/python"
    }

    /// How a rendered container starts one daemon.
    struct Started: Decodable {
        let command: [String]
        let args: [String]
        let environment: [String: String]
        let configFile: String
        let configPath: String
    }

    /// What one values file renders for the daemons.
    struct Rendered: Decodable {
        let values: String
        let apiServer: Started
        let scheduler: Started
        let catalog: String?
        let adminTokens: String?
        let secretKey: String?
    }

    /// The directory of the built executables: the test bundle sits beside them in .build/<configuration>/.
    static var binaries: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1, !FileManager.default.fileExists(atPath: url.appendingPathComponent("gpuplane-api-server").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    /// Whether the pods can be started here: root (namespaces, mounts, setpriv) and etcd.
    static var canStartPods: Bool {
        getuid() == 0 && ["/usr/bin/etcd", "/usr/local/bin/etcd"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs a script of this folder with the tools venv's Python; its exit status and output.
    static func runScript(_ name: String, _ arguments: [String], log: URL, timeout: Duration) throws -> (status: Int32, text: String) {
        let (status, text) = try Command.run(
            python, [root.appendingPathComponent("Tests/GPUPlaneChartTests/\(name)").path] + arguments, timeout: timeout)
        try text.write(to: log, atomically: true, encoding: .utf8)
        // SIGKILL (128 + 9) is what the timeout sends.
        return status == 137 ? (-1, "\(name) did not finish in \(timeout)\n" + text) : (status, text)
    }

    /// Renders and checks the chart into `output`; what each values file starts the daemons with,
    /// or nil when the checker failed (recorded as an issue).
    static func render(into output: URL) throws -> [Rendered]? {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            Issue.record("no \(python): run scripts/install-deps (it installs helm-python-sdk, kubernetes-validate and jsonschema there)")
            return nil
        }
        let (status, text) = try runScript(
            "chart_check.py", ["--chart", root.appendingPathComponent("charts/gpuplane").path, "--out", output.path],
            log: output.appendingPathComponent("chart_check.log"), timeout: .seconds(150))
        #expect(status == 0, "chart_check.py failed:\n\(text)")
        guard status == 0 else { return nil }
        return try JSONDecoder().decode([Rendered].self, from: Data(contentsOf: output.appendingPathComponent("daemons.json")))
    }

    /// A fresh scratch directory.
    static func scratchDirectory() throws -> URL {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("gpuplane-chart-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        return output
    }

    @Test func chartRendersValidManifestsAndTheDaemonsAcceptTheirConfiguration() throws {
        let output = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(at: output) }
        guard let rendered = try Self.render(into: output) else { return }
        #expect(rendered.map(\.values).first == "values.yaml")
        #expect(rendered.count >= 4, "the default values and at least three example values files")

        for daemons in rendered {
            try checkAPIServer(daemons, scratch: output)
            try checkScheduler(daemons)
        }
    }

    /// The rendered pods started here by `pod_check.py` as a kubelet lays them out (Secret and
    /// ConfigMap volumes of symbolic links, fsGroup, the pods' user, the init container first)
    /// with the built daemons and a real etcd, in namespaces of their own: the api-server's
    /// probes answer, its admin token works and it seals a secret with the copied key; the two
    /// scheduler replicas elect a leader under their pod names and fail over on SIGTERM.
    @Test(.enabled(if: canStartPods)) func renderedPodsStartTheDaemons() throws {
        let output = try Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(at: output) }
        guard try Self.render(into: output) != nil else { return }
        let (status, text) = try Self.runScript(
            "pod_check.py", ["--daemons", output.appendingPathComponent("daemons.json").path, "--binaries", Self.binaries.path],
            log: output.appendingPathComponent("pod_check.log"), timeout: .seconds(150))
        #expect(status == 0, "pod_check.py failed:\n\(text)")
    }

    /// The catalog both daemons load: the built-in one, overridden by the chart's when it has one.
    func catalog(of daemons: Rendered) throws -> Catalog {
        guard let text = daemons.catalog else { return try Catalog.standard() }
        return try Catalog.standard().overridden(by: try Catalog(json: Data(text.utf8)))
    }

    func checkAPIServer(_ daemons: Rendered, scratch: URL) throws {
        let started = daemons.apiServer
        let source = Comment(rawValue: "\(daemons.values): api-server")
        #expect(started.command == ["/usr/local/bin/gpuplane-api-server"], source)
        let config = try Configuration(
            keys: APIServerMain.keys, file: (started.configPath, started.configFile), environment: started.environment,
            arguments: started.args)
        // What APIServerMain.run checks before it serves.
        _ = try APIServerMain.connectionLimits(config)
        for key in ["inference-timeout", "inference-queue-timeout", "app-timeout"] {
            #expect(try config.int(key).map { $0 >= 1 } ?? true, "\(source): \(key)")
        }
        #expect(try config.string("listen") == "0.0.0.0", source)
        #expect(try config.string("log-destination") == "stderr", source)
        #expect(try config.list("etcd.endpoints").map { !$0.isEmpty } == true, source)
        _ = try catalog(of: daemons)
        #expect((try config.string("catalog-file") != nil) == (daemons.catalog != nil), source)

        // The admin tokens as the api-server reads them, when the chart made the Secret.
        #expect(try config.string("admin-token-file") != nil, source)
        if let tokens = daemons.adminTokens {
            let lines = tokens.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            #expect(!lines.isEmpty && lines.allSatisfy { $0.count >= 16 }, "\(source): admin tokens")
        }
        // The key file the chart made, as the init container leaves it (mode 0600), opens and seals.
        #expect(try config.string("secret-key-file") != nil, source)
        if let key = daemons.secretKey {
            let path = scratch.appendingPathComponent("secret.key").path
            #expect(FileManager.default.createFile(atPath: path, contents: Data(key.utf8), attributes: [.posixPermissions: 0o600]))
            defer { try? FileManager.default.removeItem(atPath: path) }
            let keyring = try SecretKeyring.load(path: path)
            #expect(keyring.sealingKeyID == "k1", source)
            let sealed = try keyring.seal(["k": "v"], tenant: "acme", name: "s")
            #expect(try keyring.open(sealed, tenant: "acme", name: "s") == ["k": "v"], source)
        }
    }

    func checkScheduler(_ daemons: Rendered) throws {
        let started = daemons.scheduler
        let source = Comment(rawValue: "\(daemons.values): scheduler")
        #expect(started.command == ["/usr/local/bin/gpuplane-scheduler"], source)
        let config = try Configuration(
            keys: SchedulerMain.keys, file: (started.configPath, started.configFile), environment: started.environment,
            arguments: started.args)
        let scheduler = try SchedulerMain.schedulerConfiguration(config, catalog: try catalog(of: daemons))
        #expect(scheduler.identity == started.environment["GPUPLANE_IDENTITY"], source)
        #expect(try config.string("log-destination") == "stderr", source)
        #expect(try config.list("etcd.endpoints").map { !$0.isEmpty } == true, source)
        #expect((try config.string("catalog-file") != nil) == (daemons.catalog != nil), source)
        // Its /metrics listener: every address of the pod, a port the pod declares (chart_check.py).
        #expect(try config.string("listen") == "0.0.0.0", source)
        #expect(try config.int("port").map { (1...65535).contains($0) } == true, source)
    }
}
