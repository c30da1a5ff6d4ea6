import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneTestSupport
import Testing

/// The api-server (serving HTTPS) and the scheduler on an etcd that takes only TLS with client
/// certificates (`--client-cert-auth`) and has auth on, with a user allowed `/gpuplane/` and
/// nothing else: certificates from `scripts/dev-certs`, the `etcd.*` and `tls-*` keys as an
/// operator sets them. Also that half-given TLS or credentials stop a daemon at start, naming
/// the key.
@Suite(.timeLimit(.minutes(4))) struct EtcdTLSTests {
    @Test(.enabled(if: EtcdFixture.isAvailable && TestEnvironment.hasExecutable("/usr/bin/etcdctl") && TestEnvironment.hasExecutable("/usr/bin/openssl")))
    func theControlPlaneRunsOnEtcdWithClientCertificatesAndAuth() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "etcd-tls")
        defer { try? FileManager.default.removeItem(at: directory) }
        let certs = directory.appendingPathComponent("certs").path
        let made = try await Self.run(Self.repository.appendingPathComponent("scripts/dev-certs").path, [certs])
        #expect(made.status == 0, "\(made.output)")
        let etcd = try await EtcdFixture.start(
            tls: EtcdTLSFiles(caFile: certs + "/ca.pem", certFile: certs + "/server.pem", keyFile: certs + "/server-key.pem"))
        defer { etcd.shutdown() }
        let endpoint = etcd.endpoints[0]
        #expect(endpoint.hasPrefix("https://"))

        // etcd auth: root, and a gpuplane user whose role may use /gpuplane/ only.
        let password = "pw-" + UUID().uuidString
        let etcdctl = ["--endpoints", endpoint, "--cacert", certs + "/ca.pem", "--cert", certs + "/client.pem", "--key", certs + "/client-key.pem"]
        for arguments in [
            ["user", "add", "root:" + UUID().uuidString], ["user", "grant-role", "root", "root"], ["user", "add", "gpuplane:" + password],
            ["role", "add", "gpuplane"], ["role", "grant-permission", "gpuplane", "--prefix=true", "readwrite", "/gpuplane/"],
            ["user", "grant-role", "gpuplane", "gpuplane"], ["auth", "enable"],
        ] {
            let result = try await Self.run("/usr/bin/etcdctl", etcdctl + arguments, environment: ["ETCDCTL_API": "3"])
            #expect(result.status == 0, "etcdctl \(arguments.joined(separator: " ")): \(result.output)")
        }
        let passwordFile = directory.appendingPathComponent("etcd-password")
        try (password + "\n").write(to: passwordFile, atomically: true, encoding: .utf8)
        let etcdFlags = [
            "--etcd.endpoints", endpoint, "--etcd.ca-file", certs + "/ca.pem", "--etcd.cert-file", certs + "/client.pem",
            "--etcd.key-file", certs + "/client-key.pem", "--etcd.username", "gpuplane", "--etcd.password-file", passwordFile.path,
        ]
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        let admin = "gp_tls_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
        let adminFile = directory.appendingPathComponent("admin-token")
        try admin.write(to: adminFile, atomically: true, encoding: .utf8)
        let port = TestEnvironment.freePort()
        let api = try ChildProcess(
            executable: Self.binaries.appendingPathComponent("gpuplane-api-server").path,
            arguments: [
                "--port", "\(port)", "--admin-token-file", adminFile.path, "--log-destination", "stderr", "--log-level", "notice",
                "--tls-cert-file", certs + "/server.pem", "--tls-key-file", certs + "/server-key.pem",
            ] + etcdFlags,
            environment: ["GPUPLANE_CONFIG": emptyConfig.path], logFile: directory.appendingPathComponent("api-server.log"))
        let scheduler = try ChildProcess(
            executable: Self.binaries.appendingPathComponent("gpuplane-scheduler").path,
            arguments: ["--identity", "tls-scheduler", "--log-destination", "stderr", "--log-level", "notice"] + etcdFlags,
            environment: ["GPUPLANE_CONFIG": emptyConfig.path], logFile: directory.appendingPathComponent("scheduler.log"))
        defer {
            scheduler.stop(timeout: 10)
            api.stop(timeout: 10)
        }
        let http = CurlHTTP.Client(name: "etcd-tls-test", maxConnections: 2)
        defer { http.shutdown() }
        func call(_ method: CurlHTTP.Method, _ path: String, body: String? = nil, scheme: String = "https") async throws -> Int {
            try await http.perform(
                CurlHTTP.Request(
                    method: method, url: "\(scheme)://127.0.0.1:\(port)" + path, headers: [CurlHTTP.Header("Authorization", "Bearer \(admin)")],
                    body: body.map { Data($0.utf8) }, timeout: .seconds(10), tls: CurlHTTP.TLS(caFile: certs + "/ca.pem"))
            ).status
        }
        do {
            try await eventually("the api-server is ready on TLS etcd", timeout: 60) { (try? await call(.get, "/readyz")) == 200 }
            #expect(try await call(.post, "/v1/tenants", body: #"{"name": "tls-tenant", "plan": "pro"}"#) == 201)
            #expect(try await call(.get, "/v1/tenants/tls-tenant") == 200)
            // HTTPS only: plain HTTP on that port gets no HTTP answer, and a client that does
            // not trust the CA does not finish the handshake.
            #expect((try? await call(.get, "/readyz", scheme: "http")) == nil)
            let untrusting = try? await http.perform(CurlHTTP.Request(url: "https://127.0.0.1:\(port)/readyz", timeout: .seconds(10)))
            #expect(untrusting == nil)

            // The CLI verifies the server with --ca-file (or $GPUPLANE_CA_FILE), and refuses an
            // HTTPS server it cannot verify.
            let cli = Self.binaries.appendingPathComponent("gpuplane").path
            // (The tenant list is served from the api-server's watch of tenants: wait for it.)
            var listed = (status: Int32(-1), output: "")
            try await eventually("the CLI lists the tenant over HTTPS", timeout: 60) {
                listed = try await Self.run(cli, ["get", "tenants", "--server", "https://127.0.0.1:\(port)", "--token", admin, "--ca-file", certs + "/ca.pem"])
                return listed.status == 0 && listed.output.contains("tls-tenant")
            }
            let viaEnvironment = try await Self.run(
                cli, ["get", "tenants", "--server", "https://127.0.0.1:\(port)", "--token", admin], environment: ["GPUPLANE_CA_FILE": certs + "/ca.pem"])
            #expect(viaEnvironment.status == 0, "\(viaEnvironment.output)")
            let unverified = try await Self.run(cli, ["get", "tenants", "--server", "https://127.0.0.1:\(port)", "--token", admin])
            #expect(unverified.status != 0 && unverified.output.contains("cannot reach the api-server"), "\(unverified.output)")

            // What landed in etcd, read with the same certificate and user; and the scheduler
            // leads (its election key is there).
            let client = try Etcd.Client(
                Etcd.Configuration(
                    endpoints: etcd.endpoints, tls: CurlHTTP.TLS(caFile: certs + "/ca.pem", certFile: certs + "/client.pem", keyFile: certs + "/client-key.pem"),
                    credentials: ("gpuplane", password)))
            #expect(try await client.range(.prefix("/gpuplane/tenants/")).kvs.contains { $0.keyString.hasSuffix("/tls-tenant") })
            try await eventually("the scheduler leads on TLS etcd", timeout: 60) {
                try await client.range(.prefix("/gpuplane/election/")).kvs.contains { $0.valueString == "tls-scheduler" }
            }
            // Without the client certificate etcd does not even finish the handshake.
            let noCertificate = try Etcd.Client(
                Etcd.Configuration(endpoints: etcd.endpoints, tls: CurlHTTP.TLS(caFile: certs + "/ca.pem"), credentials: ("gpuplane", password)))
            await #expect(throws: EtcdError.self) { _ = try await noCertificate.get("/gpuplane/x") }
        } catch {
            Issue.record("\(error)\n--- api-server ---\n\(api.logTail())\n--- scheduler ---\n\(scheduler.logTail())")
        }
    }

    @Test func halfGivenTLSOrCredentialsStopADaemonNamingTheKey() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "etcd-tls-flags")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("some.pem")
        try "x".write(to: file, atomically: true, encoding: .utf8)
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        let cases: [(arguments: [String], names: String)] = [
            (["--etcd.endpoints", "https://127.0.0.1:1", "--etcd.cert-file", file.path], "etcd.key-file"),
            (["--etcd.endpoints", "http://127.0.0.1:1", "--etcd.ca-file", file.path], "etcd.ca-file"),
            (["--etcd.endpoints", "https://127.0.0.1:1", "--etcd.ca-file", directory.appendingPathComponent("missing.pem").path], "etcd.ca-file"),
            (["--etcd.endpoints", "http://127.0.0.1:1", "--etcd.username", "gpuplane"], "etcd.password-file"),
            (["--etcd.endpoints", "etcd:2379"], "etcd.endpoints"),
        ]
        let serverOnly: [(arguments: [String], names: String)] = [
            (["--tls-cert-file", file.path], "tls-key-file"),
            (["--tls-cert-file", file.path, "--tls-key-file", file.path], "tls-cert-file"),
        ]
        for daemon in ["gpuplane-api-server", "gpuplane-scheduler"] {
            for (arguments, key) in cases + (daemon == "gpuplane-api-server" ? serverOnly : []) {
                let result = try await Self.run(
                    Self.binaries.appendingPathComponent(daemon).path, arguments + ["--log-destination", "stderr"],
                    environment: ["GPUPLANE_CONFIG": emptyConfig.path])
                #expect(result.status == 1, "\(daemon) \(arguments): exit \(result.status)\n\(result.output)")
                #expect(result.output.contains(key), "\(daemon) \(arguments) should name \(key): \(result.output)")
            }
        }
    }

    /// Listening beyond loopback without TLS is allowed, with a warning saying what it costs.
    @Test func plainHTTPBeyondLoopbackIsWarnedAbout() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "plain-http")
        defer { try? FileManager.default.removeItem(at: directory) }
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        for (listen, warned) in [("0.0.0.0", true), ("127.0.0.1", false)] {
            let log = directory.appendingPathComponent("api-\(listen).log")
            let api = try ChildProcess(
                executable: Self.binaries.appendingPathComponent("gpuplane-api-server").path,
                arguments: [
                    "--listen", listen, "--port", "\(TestEnvironment.freePort())", "--etcd.endpoints", "http://127.0.0.1:1",
                    "--log-destination", "stderr", "--log-level", "info",
                ],
                environment: ["GPUPLANE_CONFIG": emptyConfig.path], logFile: log)
            defer { api.stop(timeout: 10) }
            // Its last start-up line (before it waits for etcd) says there is no secret key.
            // The whole log: its start-up lines soon scroll out of a tail (the informers retry
            // the etcd that is not there, and say so).
            func text() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
            do {
                try await eventually("the api-server's start-up lines", timeout: 120) { text().contains("secret-key-file") }
            } catch {
                Issue.record("\(error)\n\(text().prefix(3000))")
                continue
            }
            #expect(text().contains("without TLS on a non-loopback address") == warned, "\(listen): \(text().prefix(3000))")
        }
    }

    static var binaries: URL { LocalClusterTests.binaries }

    /// The repository root (scripts/ lives there).
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs a program to its end (60 s at most), its output and errors together.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        try await TestEnvironment.offPool { try Command.run(executable, arguments, environment: environment, timeout: .seconds(60)) }
    }
}

/// In the local cluster's suite, which runs its whole clusters one at a time (three at once
/// overloaded a 2-core machine).
extension LocalClusterTests {
    /// `gpuplane-local --tls`: the whole local cluster over TLS (etcd with client certificates,
    /// the api-server on HTTPS, agents verifying it) places and runs the GPU example.
    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable && TestEnvironment.hasExecutable("/usr/bin/openssl")))
    func theLocalClusterRunsOverTLS() async throws {
        let cluster = try await LocalCluster.start(binaries: Self.binaries, tls: true)
        do {
            #expect(cluster.apiURL.hasPrefix("https://"))
            let token = try await cluster.tenant("tls-e2e", plan: "enterprise")
            let manifest = try String(contentsOf: EtcdTLSTests.repository.appendingPathComponent("examples/local-gpu-app.yaml"), encoding: .utf8)
            #expect(try await cluster.call("POST", "/v1/applications", token: token, body: manifest).status == 201)
            try await eventually("placed and running over TLS", timeout: 120, every: 0.25) {
                let replica = (try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]])?.first ?? [:]
                return (replica["status"] as? [String: Any])?["phase"] as? String == "running"
            }
            // Both agents registered and heartbeat over HTTPS.
            for node in [cluster.nodeName, LocalCluster.sharedNodeName] {
                let conditions = (try await cluster.json("GET", "/v1/nodes/\(node)", token: cluster.adminToken)["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
                #expect(conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? Bool == true }, "\(node): \(conditions)")
            }
        } catch {
            Issue.record("\(error)\n\(cluster.logTails())")
        }
        await TestEnvironment.offPool { cluster.shutdown() }
        try? FileManager.default.removeItem(at: cluster.directory)
    }
}
