import Foundation
import GPUPlaneCore
import GPUPlaneScheduling
import GPUPlaneService
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

    /// Runs the checker; its exit status and output.
    static func runChecker(output: URL) throws -> (status: Int32, text: String) {
        let log = output.appendingPathComponent("checker.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [
            root.appendingPathComponent("Tests/GPUPlaneChartTests/chart_check.py").path,
            "--chart", root.appendingPathComponent("charts/gpuplane").path, "--out", output.path,
        ]
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = ContinuousClock.now + .seconds(150)
        while process.isRunning, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return (-1, "chart_check.py did not finish in 150 s\n" + ((try? String(contentsOf: log, encoding: .utf8)) ?? ""))
        }
        return (process.terminationStatus, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    @Test func chartRendersValidManifestsAndTheDaemonsAcceptTheirConfiguration() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.python) else {
            Issue.record("no \(Self.python): run scripts/install-deps (it installs helm-python-sdk, kubernetes-validate and jsonschema there)")
            return
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("gpuplane-chart-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: output) }

        let (status, text) = try Self.runChecker(output: output)
        #expect(status == 0, "chart_check.py failed:\n\(text)")
        guard status == 0 else { return }
        let rendered = try JSONDecoder().decode([Rendered].self, from: Data(contentsOf: output.appendingPathComponent("daemons.json")))
        #expect(rendered.map(\.values).first == "values.yaml")
        #expect(rendered.count >= 4, "the default values and at least three example values files")

        for daemons in rendered {
            try checkAPIServer(daemons, scratch: output)
            try checkScheduler(daemons)
        }
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
    }
}
