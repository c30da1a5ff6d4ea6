import Foundation
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// Schemathesis (property-based API testing, pinned and installed by `scripts/install-deps`)
/// against the live test api-server and the OpenAPI document it serves, once per role: every
/// documented operation, with generated valid and invalid inputs. It fails on any 5xx, any
/// status code, content type, header or body the document does not describe, and any method a
/// path does not take that is not answered 405 with `Allow`.
///
/// It runs on the shared server (the other tests use their own tenants; the ones generated here
/// are random names, and anything they change is theirs).
@Suite(.serialized, .timeLimit(.minutes(10))) struct SchemathesisTests {
    /// `$GPUPLANE_SCHEMATHESIS`, else `schemathesis` in the tools environment install-deps
    /// makes (`$GPUPLANE_TOOLS_VENV`, default `/opt/gpuplane-venv`).
    static var executable: String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["GPUPLANE_SCHEMATHESIS"], !path.isEmpty { return path }
        return (environment["GPUPLANE_TOOLS_VENV"].flatMap { $0.isEmpty ? nil : $0 } ?? "/opt/gpuplane-venv") + "/bin/schemathesis"
    }

    /// What schemathesis checks: everything a response can get wrong against the document.
    /// (Not `positive_data_acceptance` and kin: valid-looking generated names mostly name no
    /// object, which is a correct 404, and a random token role may rightly refuse.)
    static let checks = [
        "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
        "response_schema_conformance", "unsupported_method",
    ]

    /// `?watch=true` streams until the client hangs up (that is the feature: a BOOKMARK every
    /// interval, never an end), so schemathesis would wait for each such response until its
    /// request timeout and report it. The hook turns those requests into `watch=false` (a
    /// list); the list routes are still tested with every other input, and a `watch` that is
    /// neither true nor false still goes out (it must be a 400). A node's watch
    /// (`/v1/nodes/{name}/watch`) is always a stream: its calls go out with a replicaVersion
    /// that is no version (a 400 naming it, or the caller's 401/403 first). The streams
    /// themselves are tested in DeploymentAPITests, NodeWatchAPITests and HostileRequestTests.
    /// A generated `Gpuplane-Timeout-Ms` that is a valid wait (1 to 3,600,000 ms) goes out as a
    /// minute: a wait of a few milliseconds passes while the request runs, and its rightful
    /// answer, 504 `deadline_exceeded`, is a 5xx schemathesis counts as a server error. Values
    /// that are not a wait still go out (each must be a 400); deadlines are tested in
    /// RequestDeadlineTests.
    static let hooks = """
        import schemathesis


        @schemathesis.hook
        def before_call(context, case, kwargs):
            query = case.query
            if query and str(query.get("watch", "")).lower() in ("true", "1"):
                query["watch"] = "false"
            if case.path == "/v1/nodes/{name}/watch":
                case.query = dict(query or {}, replicaVersion="not-a-version")
            headers = case.headers or {}
            for name in list(headers):
                if name.lower() == "gpuplane-timeout-ms" and str(headers[name]).isdigit() and 1 <= int(headers[name]) <= 3600000:
                    headers[name] = "60000"
        """

    @Test func everyRoleGetsOnlyWhatTheDocumentSays() async throws {
        let executable = Self.executable
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            Issue.record("schemathesis is not installed at \(executable): run scripts/install-deps (scripts/test does)")
            return
        }
        let h = try await SharedServer.shared.get()
        // A tenant that has objects: an application (with its replica) and a deployment.
        let (tenant, token) = try await h.tenant(.scale, gpuLimit: 8)
        let applied = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(applied.status == 201, "\(applied.text)")
        let deployment = #"{"model_name": "st-model", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 1, "max_instances": 2}}"#
        let created = try await h.call("POST", "/v1/deployments", token: token, body: deployment)
        #expect(created.status == 201, "\(created.text)")
        // A registered node with its token.
        let node = "st-" + UUID().uuidString.prefix(8).lowercased()
        let nodeToken = try await h.nodeToken(node)
        let registration = #"{"name": "\#(node)", "gpus": [{"index": 0, "uuid": "GPU-\#(node)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}]}"#
        let registered = try await h.call("POST", "/v1/nodes", token: nodeToken, body: registration)
        #expect(registered.status == 201 || registered.status == 200, "\(registered.text)")

        let directory = try TestEnvironment.temporaryDirectory(prefix: "schemathesis")
        defer { try? FileManager.default.removeItem(at: directory) }
        let hooks = directory.appendingPathComponent("hooks.py")
        try Self.hooks.write(to: hooks, atomically: true, encoding: .utf8)
        // The document is read here (30 s) and handed over as a file: schemathesis loads a
        // document URL with a fixed 10 s read timeout, which the in-process server missed once
        // in a loaded full run. Every call it then makes goes to the server (`--url`).
        let served = try await h.call("GET", "/openapi.json")
        #expect(served.status == 200)
        let document = directory.appendingPathComponent("openapi.json")
        try served.body.write(to: document)

        for (role, secret) in [("admin", h.admin), ("user of \(tenant)", token), ("node \(node)", nodeToken)] {
            let started = Date()
            let (status, output) = try await Self.run(
                executable,
                [
                    "run", document.path, "--url", h.base, "--header", "Authorization: Bearer \(secret)",
                    "--checks", Self.checks.joined(separator: ","),
                    "--phases", "examples,coverage,fuzzing", "--max-examples", "12", "--seed", "1205",
                    "--request-timeout", "60", "--workers", "2", "--generation-database", "none",
                    "--no-shrink", "--no-color", "--continue-on-failure", "--suppress-health-check", "all",
                ],
                environment: ["SCHEMATHESIS_HOOKS": hooks.path], in: directory)
            let seconds = Int(Date().timeIntervalSince(started))
            // What was run, for the log: the test-case count and the closing line.
            let summary = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { $0.hasSuffix(" generated") || $0.contains(" generated,") || ($0.hasPrefix("==") && $0.contains(" in ")) }
            print("schemathesis as \(role) (\(seconds) s): \(summary.joined(separator: " | "))")
            #expect(status == 0, "schemathesis as \(role) (\(seconds) s) exited \(status):\n\(output.suffix(12_000))")
            // A run that tested nothing would pass too.
            #expect(output.contains("passed") && !output.contains("No operations"), "as \(role):\n\(output.suffix(4_000))")
        }
        #expect(try await h.call("GET", "/healthz").status == 200)
    }

    /// Runs `executable` and returns its exit status and its output (stdout and stderr).
    static func run(_ executable: String, _ arguments: [String], environment: [String: String], in directory: URL) async throws
        -> (Int32, String)
    {
        try await TestEnvironment.offPool {
            var env = environment
            env["NO_COLOR"] = "1"
            env["COLUMNS"] = "160"
            // `env -C` runs it in `directory` (Command spawns without Foundation's Process).
            let result = try Command.run("/usr/bin/env", ["-C", directory.path, executable] + arguments, environment: env)
            return (result.status, result.output)
        }
    }
}
