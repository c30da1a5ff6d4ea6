import CurlHTTP
import Foundation
import GPUPlaneTestSupport
import Testing

/// The release tarball and the GPU-host installer: a fresh network namespace with its own podman
/// and the fake NVML becomes a Ready node of a TLS-only cluster (etcd with TLS and client
/// certificates, the api-server on HTTPS only) by running `install-node.sh` from the unpacked
/// tarball alone; a second run changes nothing; `--uninstall` stops the agent and removes its files.
@Suite(.serialized, .timeLimit(.minutes(10))) struct InstallNodeTests {
    static var binaries: URL { LocalClusterTests.binaries }
    static var repository: URL { EtcdTLSTests.repository }

    @Test(.enabled(if: NetnsCluster.isAvailable && TestEnvironment.hasExecutable("/usr/bin/openssl") && TestEnvironment.hasExecutable("/usr/bin/curl")))
    func aFreshNamespaceBecomesAReadyNodeOfATLSClusterByTheInstallerAlone() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "install-node")
        defer { try? FileManager.default.removeItem(at: directory) }
        let lan = try NetnsLAN.create()
        defer { lan.shutdown() }
        let host = try await lan.addHost()

        // The control plane, TLS only: certificates naming the LAN's gateway address.
        let certs = directory.appendingPathComponent("certs").path
        let made = try await Self.run(Self.repository.appendingPathComponent("scripts/dev-certs").path, [certs, "--ip", lan.gatewayAddress])
        try #require(made.status == 0, "\(made.output)")
        let etcd = try await EtcdFixture.start(
            tls: EtcdTLSFiles(caFile: certs + "/ca.pem", certFile: certs + "/server.pem", keyFile: certs + "/server-key.pem"))
        defer { etcd.shutdown() }
        let emptyConfig = directory.appendingPathComponent("empty.conf")
        try "".write(to: emptyConfig, atomically: true, encoding: .utf8)
        let admin = "gp_install_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
        let adminFile = directory.appendingPathComponent("admin-token")
        try admin.write(to: adminFile, atomically: true, encoding: .utf8)
        let port = TestEnvironment.freePort()
        let apiURL = "https://\(lan.gatewayAddress):\(port)"
        let api = try ChildProcess(
            executable: Self.binaries.appendingPathComponent("gpuplane-api-server").path,
            arguments: [
                "--listen", lan.gatewayAddress, "--port", "\(port)", "--admin-token-file", adminFile.path, "--heartbeat-ttl", "5",
                "--log-destination", "stderr", "--log-level", "notice",
                "--tls-cert-file", certs + "/server.pem", "--tls-key-file", certs + "/server-key.pem",
                "--etcd.endpoints", etcd.endpoints.joined(separator: ","), "--etcd.ca-file", certs + "/ca.pem",
                "--etcd.cert-file", certs + "/client.pem", "--etcd.key-file", certs + "/client-key.pem",
            ],
            environment: ["GPUPLANE_CONFIG": emptyConfig.path], logFile: directory.appendingPathComponent("api-server.log"))
        defer { api.stop(timeout: 10) }
        lan.adopt(pid: api.pid, commandLineHolds: directory.path)
        let http = CurlHTTP.Client(name: "install-node-test", maxConnections: 2)
        defer { http.shutdown() }
        func call(_ method: CurlHTTP.Method, _ path: String, body: String? = nil) async throws -> (status: Int, json: [String: Any]) {
            let response = try await http.perform(
                CurlHTTP.Request(
                    method: method, url: apiURL + path, headers: [CurlHTTP.Header("Authorization", "Bearer \(admin)")],
                    body: body.map { Data($0.utf8) }, timeout: .seconds(10), tls: CurlHTTP.TLS(caFile: certs + "/ca.pem")))
            return (response.status, (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any]) ?? [:])
        }

        // What the test leaves behind on failure: the agent the installer started (in its own
        // session, so no stop of the installer reaches it).
        let prefix = directory.appendingPathComponent("root")
        let pidFile = prefix.appendingPathComponent("var/lib/gpuplane/node-agent.pid")
        func agentPid() -> Int32? {
            (try? String(contentsOf: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        func agentRuns(_ pid: Int32) -> Bool {
            guard let commandLine = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return false }
            return String(decoding: commandLine, as: UTF8.self).contains(prefix.path)
                && !((try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? "").contains("State:\tZ")
        }
        var started: Int32?
        defer {
            if let pid = started ?? agentPid(), agentRuns(pid) { kill(pid, SIGKILL) }
        }

        do {
            try await eventually("the api-server answers over HTTPS", timeout: 60) { (try? await call(.get, "/readyz").status) == 200 }
            let node = "installed-1"
            let issued = try await call(.post, "/v1/tokens", body: #"{"role": "node", "node": "\#(node)"}"#)
            let token = try #require(issued.json["token"] as? String, "no node token: \(issued)")

            // The fake NVML: two GPUs, the podman fixture's CDI devices.
            let nvml = try FakeNVMLFiles.write(gpus: Array(host.podman.fakeGPUs.prefix(2)), in: directory, name: "host")

            // The tarball, packed from the test suite's own debug build, unpacked.
            let dist = directory.appendingPathComponent("dist")
            let released = try await Self.run(
                Self.repository.appendingPathComponent("scripts/release").path,
                ["--configuration", "debug", "--from-build", Self.binaries.path, "--output", dist.path], timeout: 300)
            try #require(released.status == 0, "\(released.output)")
            let tarball = try #require(
                try FileManager.default.contentsOfDirectory(atPath: dist.path).first { $0.hasPrefix("gpuplane-") && $0.hasSuffix(".tar.gz") },
                "no tarball: \(released.output)")
            #expect(released.output.contains("gpuplane-node-agent") && released.output.contains("MiB"), "sizes: \(released.output)")
            let unpacked = directory.appendingPathComponent("unpacked")
            try FileManager.default.createDirectory(at: unpacked, withIntermediateDirectories: true)
            let untar = try await Self.run("/usr/bin/tar", ["-C", unpacked.path, "-xzf", dist.appendingPathComponent(tarball).path])
            try #require(untar.status == 0, "\(untar.output)")
            let release = unpacked.appendingPathComponent(String(tarball.dropLast(".tar.gz".count)))
            let sums = try await Self.run("/bin/sh", ["-c", "cd '\(release.path)' && sha256sum -c SHA256SUMS"])
            #expect(sums.status == 0, "\(sums.output)")
            for file in ["bin/gpuplane-api-server", "bin/gpuplane-scheduler", "bin/gpuplane-node-agent", "bin/gpuplane",
                         "systemd/gpuplane-node-agent.service", "examples/node-agent.conf.example", "install-node.sh"] {
                #expect(FileManager.default.fileExists(atPath: release.appendingPathComponent(file).path), "the tarball lacks \(file)")
            }

            // The installer alone, inside the namespace.
            let installer = release.appendingPathComponent("install-node.sh").path
            let flags = [
                "--api-server", apiURL, "--ca-file", certs + "/ca.pem", "--node-name", node, "--gpu-mode", "dedicated",
                "--engine-socket", host.podman.socketPath, "--cdi-gpu-kind", host.podman.cdiKind,
                "--nvml-library", Self.binaries.appendingPathComponent("libFakeNVML.so").path, "--prefix", prefix.path,
                "--address", host.address, "--set", "stop-grace-period=2s", "--wait-timeout", "240",
            ]
            let fakeNVML = nvml.environment
            func install(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
                try await TestEnvironment.offPool {
                    try Command.run(
                        "/usr/bin/nsenter", ["--net=/var/run/netns/\(host.name)", "/bin/bash", installer] + arguments,
                        environment: fakeNVML, input: input, timeout: .seconds(420))
                }
            }
            // A second api-server URL that answers nothing: refused before anything is
            // written, naming that URL (each of several is checked).
            let dead = "https://127.0.0.1:\(TestEnvironment.freePort())"
            let refused = try await install(flags.map { $0 == apiURL ? "\(apiURL),\(dead)" : $0 } + ["--token-stdin"], input: token + "\n")
            #expect(refused.status != 0 && refused.output.contains("cannot reach --api-server \(dead)"), "\(refused.output)")
            #expect(!FileManager.default.fileExists(atPath: prefix.appendingPathComponent("etc/gpuplane/node-agent.conf").path))
            let first = try await install(flags + ["--token-stdin"], input: token + "\n")
            started = agentPid()
            if let started { lan.adopt(pid: started, commandLineHolds: prefix.path) }
            try #require(first.status == 0, "first run:\n\(first.output)")
            for step in ["==> installing the node-agent binary", "==> checking NVML", "NVML loads and sees 2 GPU(s)", "==> checking the container engine",
                         "==> checking CDI specs", "==> checking the api-server", "==> starting the node-agent directly", "will NOT restart",
                         "Ready=true", "==> node \(node) is Ready"] {
                #expect(first.output.contains(step), "the first run should say '\(step)':\n\(first.output)")
            }
            #expect(!first.output.contains(token), "the installer printed the token")
            let pid = try #require(started, "no pid file after the first run:\n\(first.output)")
            #expect(agentRuns(pid))
            // The agent runs in the host's namespace, and the API says the node is Ready with its GPUs.
            let namespace = try await Self.run("/bin/sh", ["-c", "readlink /proc/\(pid)/ns/net; stat -L -c 'net:[%i]' /var/run/netns/\(host.name)"])
            let identities = namespace.output.split(separator: "\n")
            #expect(identities.count == 2 && identities[0] == identities[1], "the agent is not in the host's namespace: \(namespace.output)")
            let object = try await call(.get, "/v1/nodes/\(node)")
            let conditions = (object.json["status"] as? [String: Any])?["conditions"] as? [[String: Any]] ?? []
            #expect(conditions.contains { $0["type"] as? String == "Ready" && $0["status"] as? Bool == true }, "\(object.json)")
            #expect(((object.json["spec"] as? [String: Any])?["gpus"] as? [Any])?.count == 2, "\(object.json)")
            // The configuration it wrote, and the token only the owner reads.
            let etc = prefix.appendingPathComponent("etc/gpuplane")
            let config = try String(contentsOf: etc.appendingPathComponent("node-agent.conf"), encoding: .utf8)
            for line in ["api-server = \(apiURL)", "api-server-ca-file = \(etc.path)/ca.pem", "node-name = \(node)", "engine-socket = \(host.podman.socketPath)",
                         "node-token-file = \(etc.path)/node.token", "stop-grace-period = 2s"] {
                #expect(config.contains(line + "\n"), "node-agent.conf lacks '\(line)':\n\(config)")
            }
            #expect(!config.contains(token))
            let tokenMode = try FileManager.default.attributesOfItem(atPath: etc.appendingPathComponent("node.token").path)[.posixPermissions] as? Int
            #expect(tokenMode == 0o600)

            // Idempotent: the same flags (the token now from a file) change and restart nothing.
            let tokenFile = directory.appendingPathComponent("node.token")
            try token.write(to: tokenFile, atomically: true, encoding: .utf8)
            let second = try await install(flags + ["--token-file", tokenFile.path])
            #expect(second.status == 0, "second run:\n\(second.output)")
            #expect(!second.output.contains("installed: "), "the second run changed files:\n\(second.output)")
            #expect(second.output.contains("already running (pid \(pid))"), "\(second.output)")
            #expect(agentPid() == pid && agentRuns(pid))

            // Mistakes name the flag to fix.
            let wrongNode = try await install(flags.map { $0 == node ? "someone-else" : $0 } + ["--token-file", tokenFile.path, "--wait-timeout", "0"])
            #expect(wrongNode.status != 0 && wrongNode.output.contains("--node-name"), "\(wrongNode.output)")
            let noEngine = try await install(
                flags.map { $0 == host.podman.socketPath ? "/run/nothing-here.sock" : $0 } + ["--token-file", tokenFile.path])
            #expect(noEngine.status != 0 && noEngine.output.contains("--engine-socket"), "\(noEngine.output)")
            if !TestEnvironment.hasExecutable("/usr/bin/nvidia-ctk") {
                let noSpec = try await install(flags.map { $0 == host.podman.cdiKind ? "example.com/none" : $0 } + ["--token-file", tokenFile.path])
                #expect(noSpec.status != 0 && noSpec.output.contains("nvidia-container-toolkit"), "\(noSpec.output)")
            }
            #expect(agentPid() == pid && agentRuns(pid), "a refused run must not touch the running agent")
            let unchanged = try String(contentsOf: etc.appendingPathComponent("node-agent.conf"), encoding: .utf8)
            #expect(unchanged == config, "a refused run must not rewrite the configuration")

            // --uninstall: the agent stops, its files go.
            let removed = try await install(["--uninstall", "--prefix", prefix.path])
            #expect(removed.status == 0, "\(removed.output)")
            try await eventually("the agent is gone", timeout: 60) { !agentRuns(pid) }
            for path in ["usr/local/bin/gpuplane-node-agent", "etc/systemd/system/gpuplane-node-agent.service", "etc/gpuplane/node-agent.conf",
                         "etc/gpuplane/node.token", "var/lib/gpuplane/node-agent.pid"] {
                #expect(!FileManager.default.fileExists(atPath: prefix.appendingPathComponent(path).path), "--uninstall left \(path)")
            }
        } catch {
            let agentLog = (try? String(contentsOf: prefix.appendingPathComponent("var/log/gpuplane/node-agent.log"), encoding: .utf8)) ?? ""
            Issue.record("\(error)\n--- api-server ---\n\(api.logTail())\n--- node-agent ---\n\(agentLog.suffix(3000))")
        }
    }

    /// The scripts pass shellcheck (when it is installed: scripts/install-deps installs it).
    @Test(.enabled(if: TestEnvironment.hasExecutable("/usr/bin/shellcheck")))
    func theScriptsAreShellcheckClean() async throws {
        let result = try await Self.run(
            "/usr/bin/shellcheck",
            [Self.repository.appendingPathComponent("deploy/install-node.sh").path, Self.repository.appendingPathComponent("scripts/release").path])
        #expect(result.status == 0, "\(result.output)")
    }

    /// Runs a program to its end, its output and errors together.
    static func run(_ executable: String, _ arguments: [String], timeout: Int = 60) async throws -> (status: Int32, output: String) {
        try await TestEnvironment.offPool { try Command.run(executable, arguments, timeout: .seconds(timeout)) }
    }
}
