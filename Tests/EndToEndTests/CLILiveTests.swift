import Foundation
import GPUPlaneTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The operator's and user's terminal against a live local cluster (real daemons, etcd,
/// podman with fake GPUs): `gpuplane logs` (with `-f` and `--tail`) through the api-server
/// from the node-agent's listener, and the refusals around it.
@Suite(.serialized, .timeLimit(.minutes(10))) struct CLILiveTests {
    static let manifest = """
        application:
          name: chatty
          pods:
            - name: talker
              image: localhost/gpuplane-test-busybox:latest
              machineType: S
              command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo out $i; echo err $i >&2; sleep 0.2; done"]
        """

    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable))
    func logsTopWatchAndTheRest() async throws {
        let cluster = try await LocalCluster.start(binaries: LocalClusterTests.binaries)
        defer { cluster.shutdown() }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "cli-live")
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = try await cluster.tenant("talk", plan: "enterprise")
        let other = try await cluster.tenant("nosy", plan: "pro")
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let cli = LocalClusterTests.binaries.appendingPathComponent("gpuplane").path
        let environment = ["GPUPLANE_SERVER": cluster.apiURL, "GPUPLANE_TOKEN_FILE": tokenFile.path, "HOME": directory.path]
        func gpuplane(
            _ arguments: [String], environment: [String: String] = environment, input: String? = nil, timeout: Duration = .seconds(60)
        ) async throws -> (status: Int32, output: String) {
            try await TestEnvironment.offPool {
                try Command.run(cli, arguments, environment: environment, inheritEnvironment: false, input: input, timeout: timeout)
            }
        }
        let file = directory.appendingPathComponent("chatty.yaml")
        try Self.manifest.write(to: file, atomically: true, encoding: .utf8)
        #expect(try await gpuplane(["apply", "-f", file.path]).status == 0)
        try await eventually("the talker runs", timeout: 120, every: 0.25) {
            let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
            return items.contains { ($0["status"] as? [String: Any])?["phase"] as? String == "running" }
        }
        let replica = "chatty.talker"
        // get -w: the existing replica as ADDED, then every change, until the command is stopped.
        let watchLog = directory.appendingPathComponent("watch.out")
        let watcher = try ChildProcess(executable: cli, arguments: ["get", "replicas", "-w"], environment: environment, logFile: watchLog)
        defer { watcher.stop(timeout: 5) }
        try await eventually("get -w lists the replica", timeout: 60) {
            let text = (try? String(contentsOf: watchLog, encoding: .utf8)) ?? ""
            return text.hasPrefix("EVENT") && text.contains("ADDED") && text.contains(replica)
        }

        // logs: both streams, in order; --tail keeps the last lines only.
        var logs = (status: Int32(0), output: "")
        do {
            try await eventually("the container wrote ten lines", timeout: 60) {
                logs = try await gpuplane(["logs", replica])
                return logs.status == 0 && logs.output.contains("out 5\n") && logs.output.contains("err 5\n")
            }
        } catch {
            Issue.record("gpuplane logs said (\(logs.status)): \(logs.output.prefix(2000))\n\(cluster.logTails())")
            throw error
        }
        #expect(logs.output.hasPrefix("out 1\n") || logs.output.hasPrefix("err 1\n"), "\(logs.output.prefix(200))")
        let tail = try await gpuplane(["logs", replica, "--tail", "3"])
        #expect(tail.status == 0)
        #expect(tail.output.split(separator: "\n").count == 3, "\(tail.output)")
        #expect(!tail.output.contains("out 1\n"), "\(tail.output)")

        // logs -f: lines the container writes after the command started arrive.
        let followLog = directory.appendingPathComponent("follow.out")
        let follow = try ChildProcess(
            executable: cli, arguments: ["logs", "-f", "--tail", "0", replica], environment: environment, logFile: followLog)
        defer { follow.stop(timeout: 5) }
        let before = try await gpuplane(["logs", replica, "--tail", "1"]).output
        let last = Int(before.split(separator: " ").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? "") ?? 0
        try await eventually("logs -f prints new lines", timeout: 60) {
            let text = (try? String(contentsOf: followLog, encoding: .utf8)) ?? ""
            return text.contains("out \(last + 3)\n") && text.contains("err \(last + 3)\n")
        }
        #expect(follow.isRunning, "logs -f keeps following")
        let followed = (try? String(contentsOf: followLog, encoding: .utf8)) ?? ""
        #expect(!followed.contains("out 1\n"), "--tail 0 starts with new lines: \(followed.prefix(200))")

        // Another tenant's user cannot read them; a node token is refused; bad parameters are 400.
        let (nosyStatus, _) = try await cluster.call("GET", "/v1/replicas/talk/\(replica)/logs", token: other)
        #expect(nosyStatus == 404)
        let admin = try await cluster.call("GET", "/v1/replicas/talk/\(replica)/logs?tail=2", token: cluster.adminToken)
        #expect(admin.status == 200 && String(decoding: admin.body, as: UTF8.self).split(separator: "\n").count == 2)
        #expect(try await cluster.call("GET", "/v1/replicas/talk/\(replica)/logs?tail=-1", token: token).status == 400)
        #expect(try await cluster.call("GET", "/v1/replicas/talk/\(replica)/logs?follow=maybe", token: token).status == 400)
        #expect(try await cluster.call("GET", "/v1/replicas/talk/nothing/logs", token: token).status == 404)
        let missing = try await gpuplane(["logs", "nothing"])
        #expect(missing.status == 1 && missing.output.contains("not found"), "\(missing.output)")

        // The agent's listener answers only the api-server's signed requests.
        let node = try await cluster.json("GET", "/v1/nodes/\(cluster.nodeName)", token: cluster.adminToken)
        let agentURL = try #require((node["spec"] as? [String: Any])?["agentURL"] as? String)
        let unsigned = try await cluster.call(absolute: agentURL + "/v1/logs/talk/\(replica)")
        #expect(unsigned.status == 401)
        let refusal = try JSONSerialization.jsonObject(with: unsigned.body) as? [String: [String: String]]
        #expect(refusal?["error"]?["code"] == "unauthorized" && refusal?["error"]?["message"]?.contains("signed") == true, "\(String(decoding: unsigned.body, as: UTF8.self))")
        let forged = try await cluster.call(
            absolute: agentURL + "/v1/logs/talk/\(replica)",
            headers: ["Authorization": "GPUPlane-Agent v1:\(Int(Date().timeIntervalSince1970) + 30):\(String(repeating: "ab", count: 32))"])
        #expect(forged.status == 401)
        // ... and serves its metrics: per-GPU gauges from NVML.
        let metrics = try await cluster.get(agentURL + "/metrics")
        #expect(metrics.contains("gpuplane_agent_gpu_temperature_celsius{"), "\(metrics.prefix(500))")
        #expect(metrics.contains("gpuplane_agent_gpu_healthy{"), "\(metrics.prefix(500))")

        // The scheduler serves its own: it leads, it bound the talker, its passes are timed.
        let scheduler = try await cluster.get(cluster.schedulerURL + "/metrics")
        #expect(scheduler.contains("gpuplane_scheduler_leader 1"), "\(scheduler.prefix(800))")
        #expect(scheduler.contains("gpuplane_scheduler_bindings_total"), "\(scheduler.prefix(800))")
        #expect(scheduler.contains("gpuplane_scheduler_pass_duration_seconds"), "\(scheduler.prefix(800))")
        #expect(try await cluster.get(cluster.schedulerURL + "/healthz") == "ok\n")

        // top nodes (an admin's): every GPU of both nodes, with what its agent last reported.
        let adminEnvironment = ["GPUPLANE_SERVER": cluster.apiURL, "GPUPLANE_TOKEN": cluster.adminToken, "HOME": directory.path]
        let top = try await gpuplane(["top", "nodes"], environment: adminEnvironment)
        #expect(top.status == 0 && top.output.hasPrefix("NODE"), "\(top.output)")
        #expect(top.output.contains("local-gpu-0") && top.output.contains("healthy") && top.output.contains("35°C"), "\(top.output)")
        let topJSON = try await gpuplane(["top", "nodes", "-o", "json"], environment: adminEnvironment)
        let gpuRows = (try JSONSerialization.jsonObject(with: Data(topJSON.output.utf8)) as? [String: Any])?["items"] as? [[String: Any]] ?? []
        #expect(gpuRows.count == 10, "8 GPUs on local-gpu-0 and 2 on the shared node: \(topJSON.output.prefix(300))")

        // top deployments: a deployment's instances, and the requests the gateway saw.
        let deployment = #"{"model_name": "top-llm", "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 4, "hf": {"repo": "org/top-llm"}, "settings": {"min_instances": 1, "max_instances": 1}}"#
        #expect(try await cluster.call("POST", "/v1/deployments", token: token, body: deployment).status == 201)
        let call = #"{"model": "talk/top-llm", "messages": [{"role": "user", "content": "hi"}]}"#
        var load: [String: Any] = [:]
        try await eventually("top deployments shows the deployment running and its requests", timeout: 180, every: 0.5) {
            _ = try await cluster.call("POST", "/v1/openai/chat/completions", token: token, body: call)
            let answer = try await gpuplane(["top", "deployments", "-o", "json"])
            let items = (try? JSONSerialization.jsonObject(with: Data(answer.output.utf8)) as? [String: Any])?["items"] as? [[String: Any]] ?? []
            load = items.first { $0["full_name"] as? String == "talk/top-llm" } ?? [:]
            return load["instancesRunning"] as? Int == 1 && (load["requestsPerSecond"] as? Double ?? 0) > 0
        }
        let topDeployments = try await gpuplane(["top", "deployments"])
        #expect(topDeployments.output.hasPrefix("NAME") && topDeployments.output.contains("talk/top-llm"), "\(topDeployments.output)")
        #expect(try await cluster.call("GET", "/v1/load/deployments", token: other).body.count > 0)
        let nosyLoad = try await cluster.json("GET", "/v1/load/deployments", token: other)["items"] as? [[String: Any]] ?? []
        #expect(nosyLoad.isEmpty, "another tenant sees none of talk's load: \(nosyLoad)")

        // login saves a context (the token checked first); later commands need no flags.
        let plain = ["HOME": directory.path]
        let refused = try await gpuplane(["login", "--server", cluster.apiURL, "--context", "local"], environment: plain, input: "gp_not_a_token\n")
        #expect(refused.status == 1 && refused.output.contains("refused the token"), "\(refused.output)")
        let login = try await gpuplane(["login", "--server", cluster.apiURL, "--context", "local"], environment: plain, input: token + "\n")
        #expect(login.status == 0 && login.output.contains("context local"), "\(login.output)")
        let saved = try String(contentsOf: directory.appendingPathComponent(".config/gpuplane/config"), encoding: .utf8)
        #expect(!saved.contains(token), "the config names the token file, never the token")
        let viaContext = try await gpuplane(["get", "apps"], environment: plain)
        #expect(viaContext.status == 0 && viaContext.output.contains("chatty"), "\(viaContext.output)")
        let contexts = try await gpuplane(["config", "contexts"], environment: plain)
        #expect(contexts.output.contains("*") && contexts.output.contains("local") && contexts.output.contains(cluster.apiURL), "\(contexts.output)")
        let unknown = try await gpuplane(["get", "apps", "--context", "nope"], environment: plain)
        #expect(unknown.status != 0 && unknown.output.contains("no context 'nope'"), "\(unknown.output)")
        // A context's token never goes to another server.
        let elsewhere = try await gpuplane(["get", "apps", "--server", "http://127.0.0.1:9"], environment: plain)
        #expect(elsewhere.status != 0, "\(elsewhere.output)")

        // Shell completions.
        for shell in ["bash", "zsh", "fish"] {
            let script = try await gpuplane(["completion", shell], environment: plain)
            #expect(script.status == 0 && script.output.contains("gpuplane") && script.output.contains("logs"), "\(shell)")
        }

        // Deleting the application: get -w shows the replica DELETED, and logs -f ends with
        // the container.
        #expect(try await gpuplane(["delete", "app", "chatty"]).status == 0)
        try await eventually("get -w shows the replica deleted", timeout: 60) {
            ((try? String(contentsOf: watchLog, encoding: .utf8)) ?? "").contains("DELETED")
        }
        try await eventually("logs -f ends when the container stops", timeout: 60) { !follow.isRunning }
    }

    /// The node-agent, or the api-server, stopped (SIGTERM) while a user follows a replica's
    /// logs through it: the follow ends, whole (`logs -f` exits 0), and the daemon exits. A
    /// graceful shutdown waits for the answers in flight, and a followed log never ends by
    /// itself: the agent stayed up until SIGKILL, and the api-server cut the follow after its
    /// shutdown's grace (20 s).
    @Test(.enabled(if: PodmanFixture.isAvailable && EtcdFixture.isAvailable), arguments: ["agent", "gpuplane-api-server"])
    func aDaemonStoppedWhileLogsAreFollowedEndsTheFollowAndExits(_ stopped: String) async throws {
        let cluster = try await LocalCluster.start(binaries: LocalClusterTests.binaries)
        defer { cluster.shutdown() }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "cli-follow-stop")
        defer { try? FileManager.default.removeItem(at: directory) }
        let token = try await cluster.tenant("talk", plan: "enterprise")
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let cli = LocalClusterTests.binaries.appendingPathComponent("gpuplane").path
        let environment = ["GPUPLANE_SERVER": cluster.apiURL, "GPUPLANE_TOKEN_FILE": tokenFile.path, "HOME": directory.path]
        let file = directory.appendingPathComponent("chatty.yaml")
        try Self.manifest.write(to: file, atomically: true, encoding: .utf8)
        let applied = try await TestEnvironment.offPool {
            try Command.run(cli, ["apply", "-f", file.path], environment: environment, inheritEnvironment: false, timeout: .seconds(60))
        }
        #expect(applied.status == 0, "\(applied.output)")
        var node = ""
        try await eventually("the talker runs", timeout: 120, every: 0.25) {
            let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
            guard let running = items.first(where: { ($0["status"] as? [String: Any])?["phase"] as? String == "running" }) else { return false }
            node = (running["binding"] as? [String: Any])?["node"] as? String ?? ""
            return true
        }
        let name = stopped == "agent" ? "gpuplane-node-agent-\(node)" : stopped
        let daemon = try #require(cluster.daemon(name), "no daemon '\(name)'")
        let followLog = directory.appendingPathComponent("follow.out")
        let follow = try ChildProcess(
            executable: cli, arguments: ["logs", "-f", "--tail", "0", "chatty.talker"], environment: environment, logFile: followLog)
        defer { follow.stop(timeout: 5) }
        try await eventually("logs -f prints lines", timeout: 60) {
            ((try? String(contentsOf: followLog, encoding: .utf8)) ?? "").contains("out ")
        }
        daemon.signal(SIGTERM)
        try await eventually("logs -f ended", timeout: 10) { !follow.isRunning }
        #expect(follow.exitStatus == 0, "\(follow.logTail())")
        try await eventually("\(name) exited", timeout: 60) { !daemon.isRunning }
        #expect(daemon.exitStatus == 0, "\(cluster.logTails())")
    }
}
