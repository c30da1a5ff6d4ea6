import Foundation
import GPUPlaneTestSupport
import Testing

/// The seed's example across hosts: an application whose `api` pod reaches its `db` pod as
/// `db.pod:5432` (its `DATABASE_URL`) from another node, each node a network namespace with its
/// own podman and the real node-agent; another tenant's pod can neither resolve `db.pod` nor
/// connect to the db pod's address.
@Suite(.serialized, .timeLimit(.minutes(10))) struct PodNetworkTests {
    /// T1's application: the seed's `api` pod (its `DATABASE_URL` names `db.pod:5432`; a GPU pod,
    /// Mode 1 on a fake GPU, serving `/api` with busybox httpd) and a `db` CPU pod that echoes on
    /// 5432 (busybox `nc`).
    static let application = """
        application:
          name: my-chat-backend
          pods:
            - name: db
              image: localhost/gpuplane-test-busybox:latest
              command: ["nc", "-ll", "-p", "5432", "-e", "/bin/cat"]
              servicePorts: [5432]
            - name: api
              path: /api
              image: localhost/gpuplane-test-busybox:latest
              command: ["sh", "-c", "mkdir -p /tmp/www/api && echo hello from api > /tmp/www/api/index.html && httpd -p 8000 -h /tmp/www; host=${DATABASE_URL#*@}; host=${host%%/*}; while true; do if echo ping-$$ | timeout 3 nc ${host%:*} ${host#*:} | grep -q ping-$$; then echo CONNECTED $host; else echo FAILED $host; fi; sleep 1; done"]
              servicePorts: [8000]
              gpu: {enabled: true, model: custom, memoryGB: 80, priority: training}
              vars:
                DATABASE_URL: postgresql://app:pass@db.pod:5432/chat
        """

    /// T2's CPU pod, which tries to reach T1's pods.
    static let intruder = """
        application:
          name: prober
          pods:
            - name: probe
              image: localhost/gpuplane-test-busybox:latest
              command: ["sleep", "100000"]
        """

    @Test(.enabled(if: NetnsCluster.isAvailable))
    func apiReachesDbAcrossHostsAndNoOtherTenantDoes() async throws {
        // Host 1 is a CPU host (no GPU), host 2 has one GPU and CPU beyond its GPU-H100 slot's 12:
        // with host 2 cordoned, the db (a CPU pod) lands on host 1 and the api (a GPU pod) waits
        // until host 2 is uncordoned; drained, host 1's pods move to host 2's spare CPU.
        let started = ContinuousClock.now
        let cluster = try await NetnsCluster.start(binaries: LocalClusterTests.binaries, gpus: [0, 1], agentArguments: [[], ["--allocatable-cpu", "16", "--allocatable-memory", "128Gi"]]) { print("netns cluster: \($0)") }
        print("netns cluster up in \(ContinuousClock.now - started)")
        func step(_ what: String) { print("[\(ContinuousClock.now - started)] \(what)") }
        do {
            let admin = cluster.adminToken
            let t1 = try await cluster.tenant("t1", plan: "enterprise")
            let t2 = try await cluster.tenant("t2", plan: "enterprise")
            #expect(try await cluster.call("POST", "/v1/nodes/net-2/cordon", token: admin).status == 200)
            let applied = try await cluster.call("POST", "/v1/applications", token: t1, body: Self.application)
            #expect(applied.status == 201, "\(String(decoding: applied.body, as: UTF8.self))")
            try await eventually("T1's db runs on net-1", timeout: 120, every: 0.25) {
                try await Self.replicas(cluster, t1).contains { $0.pod == "db" && $0.node == "net-1" && $0.phase == "running" }
            }
            step("T1's db (CPU pod) runs on net-1")
            #expect(try await cluster.call("POST", "/v1/nodes/net-2/uncordon", token: admin).status == 200)
            let podsRunning = ContinuousClock.now
            var t1Pods: [Placed] = []
            try await eventually("both of T1's pods run, with pod addresses", timeout: 120, every: 0.25) {
                t1Pods = try await Self.replicas(cluster, t1)
                return t1Pods.count == 2 && t1Pods.allSatisfy { $0.phase == "running" && $0.podIP != nil }
            }
            step("both T1 pods run with addresses")
            let db = try #require(t1Pods.first { $0.pod == "db" })
            let api = try #require(t1Pods.first { $0.pod == "api" })
            #expect(db.node != api.node, "db and api on different hosts")
            let dbIP = try #require(db.podIP)
            #expect(dbIP.hasPrefix(db.node == "net-1" ? "10.251.1." : "10.251.2."), "the db's address is in its node's pod subnet")

            // The api pod connects to db.pod:5432 across hosts.
            let apiHost = try #require(cluster.host(ofNode: api.node ?? ""))
            let apiContainer = "gpuplane_t1_\(api.replica)"
            var logs = ""
            try await eventually("the api pod reached db.pod:5432", timeout: 60, every: 0.25) {
                logs = (try? await apiHost.podman.podman(["logs", apiContainer])) ?? ""
                return logs.contains("CONNECTED db.pod:5432")
            }
            print("api reached db.pod \(ContinuousClock.now - podsRunning) after the second pod was released")
            step("api connected to db.pod")
            let hosts = try await apiHost.podman.podman(["exec", apiContainer, "cat", "/etc/hosts"])
            #expect(hosts.contains("\(dbIP)\tdb.pod"), "\(hosts)")

            // Tenant 2's CPU pod, on either host: no name, no connection to either of T1's pods
            // (one on its host, one on the other).
            #expect(try await cluster.call("POST", "/v1/applications", token: t2, body: Self.intruder).status == 201)
            var probe: Placed?
            try await eventually("T2's pod runs", timeout: 120, every: 0.25) {
                probe = try await Self.replicas(cluster, t2).first { $0.phase == "running" && $0.podIP != nil }
                return probe != nil
            }
            step("T2's pod runs on \(probe?.node ?? "?"); T1's db on \(db.node ?? "?"), api on \(api.node ?? "?")")
            let intruder = try #require(probe)
            let intruderHost = try #require(cluster.host(ofNode: intruder.node ?? ""))
            let intruderContainer = "gpuplane_t2_\(intruder.replica)"
            let theirHosts = try await intruderHost.podman.podman(["exec", intruderContainer, "cat", "/etc/hosts"])
            #expect(!theirHosts.contains("db.pod") && !theirHosts.contains("api.pod"), "\(theirHosts)")
            let byName = try await intruderHost.podman.podman([
                "exec", intruderContainer, "sh", "-c", "echo x | timeout 3 nc db.pod 5432 && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(byName).contains("UNREACHED") && !Self.lines(byName).contains("REACHED"), "\(byName)")
            let byAddress = try await intruderHost.podman.podman([
                "exec", intruderContainer, "sh", "-c", "echo hello | timeout 3 nc \(dbIP) 5432 | grep -q hello && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(byAddress).contains("UNREACHED") && !Self.lines(byAddress).contains("REACHED"), "T2's pod on \(intruder.node) connected to T1's db at \(dbIP): \(byAddress)")
            // And to T1's api pod (listening on 8000), on the other host of the two: both the
            // same-node and the cross-node path refuse T2.
            let apiIP = try #require(api.podIP)
            let toApi = try await intruderHost.podman.podman([
                "exec", intruderContainer, "sh", "-c", "printf 'GET /api/ HTTP/1.0\\r\\n\\r\\n' | timeout 3 nc \(apiIP) 8000 | grep -q HTTP && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(toApi).contains("UNREACHED") && !Self.lines(toApi).contains("REACHED"), "T2's pod on \(intruder.node ?? "") connected to T1's api at \(apiIP): \(toApi)")
            // T1's db reaches api.pod the other way.
            let dbHost = try #require(cluster.host(ofNode: db.node ?? ""))
            let fromDb = try await dbHost.podman.podman([
                "exec", "gpuplane_t1_\(db.replica)", "sh", "-c", "printf 'GET /api/ HTTP/1.0\\r\\n\\r\\n' | timeout 3 nc api.pod 8000 | grep -q 'hello from api' && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(fromDb).contains("REACHED"), "\(fromDb)")
            // The same connection from T1's api pod works: the refusal is the tenant's, not the path's.
            let fromApi = try await apiHost.podman.podman([
                "exec", apiContainer, "sh", "-c", "echo hello | timeout 3 nc \(dbIP) 5432 | grep -q hello && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(fromApi).contains("REACHED"), "\(fromApi)")
            // The api-server tells T2's node nothing of T1's pods unless it runs one of them.
            // From outside: the application's URL at /api reaches the api pod (the api-server's
            // path ingress, to the pod's published port on its host's address).
            var page = (status: 0, body: "")
            try await eventually("the application's URL at /api answers", timeout: 60, every: 0.25) {
                page = try await cluster.get("\(cluster.apiURL)/apps/t1/my-chat-backend/api/")
                return page.status == 200
            }
            #expect(page.body.contains("hello from api"), "\(page)")
            step("the application's URL at /api answered \(page.status): \(page.body.prefix(40))")
            // The api pod's published port (what that URL connects to) admits the api-server and
            // nobody else: not T2's pod, not the other host, though both reach the node's address.
            let published = try #require(try await Self.replicas(cluster, t1).first { $0.pod == "api" }?.endpoint)
            let hostPort = published.replacingOccurrences(of: "http://", with: "").split(separator: ":").map(String.init)
            try #require(hostPort.count == 2, "\(published)")
            let fromIntruder = try await intruderHost.podman.podman([
                "exec", intruderContainer, "sh", "-c",
                "printf 'GET /api/ HTTP/1.0\\r\\n\\r\\n' | timeout 3 nc \(hostPort[0]) \(hostPort[1]) | grep -q HTTP && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(fromIntruder).contains("UNREACHED") && !Self.lines(fromIntruder).contains("REACHED"), "T2's pod reached T1's published port \(published): \(fromIntruder)")
            let otherHost = try #require(cluster.host(ofNode: api.node == "net-1" ? "net-2" : "net-1"))
            let fromOtherHost = try cluster.lan.run(in: otherHost, [
                "sh", "-c", "curl -s -o /dev/null --max-time 3 \(published)/api/ && echo REACHED || echo UNREACHED",
            ])
            #expect(Self.lines(fromOtherHost).contains("UNREACHED") && !Self.lines(fromOtherHost).contains("REACHED"), "the other host reached \(published): \(fromOtherHost)")
            let guardChain = try cluster.lan.run(in: apiHost, ["iptables", "-t", "mangle", "-S", "GPUPLANE-PUB-20000-20999"])
            #expect(guardChain.contains("--ctstate NEW -j DROP"), "\(guardChain)")
            // Still the api-server's: the URL answers after the probes.
            #expect(try await cluster.get("\(cluster.apiURL)/apps/t1/my-chat-backend/api/").status == 200)
            step("the published port \(published) refused T2's pod and the other host, answered the api-server")
            step("T2 probes done")
            let rules = try cluster.lan.run(in: cluster.host(ofNode: db.node ?? "") ?? intruderHost, ["iptables", "-S", "GPUPLANE-PODS"])
            print("GPUPLANE-PODS on \(db.node ?? ""):\n\(rules)")
            #expect(rules.contains("-d \(dbIP)/32"), "\(rules)")

            // The db moves (its host drained): it comes back on host 2 with a new address, and the
            // api's db.pod follows it.
            #expect(try await cluster.call("POST", "/v1/nodes/\(db.node ?? "")/drain", token: admin).status == 200)
            var moved: Placed?
            try await eventually("the db runs again elsewhere with a new address", timeout: 120, every: 0.25) {
                moved = try await Self.replicas(cluster, t1).first {
                    $0.pod == "db" && $0.phase == "running" && $0.node != db.node && $0.podIP != nil && $0.podIP != dbIP
                }
                return moved != nil
            }
            let newIP = try #require(moved?.podIP)
            step("the db moved to \(moved?.node ?? "?") at \(newIP)")
            try await eventually("the api's /etc/hosts names the db's new address", timeout: 30, every: 0.25) {
                let text = (try? await apiHost.podman.podman(["exec", apiContainer, "cat", "/etc/hosts"])) ?? ""
                return text.contains("\(newIP)\tdb.pod") && !text.contains("\(dbIP)\tdb.pod")
            }
            try await eventually("the api reaches the moved db.pod", timeout: 30, every: 0.5) {
                let out = (try? await apiHost.podman.podman([
                    "exec", apiContainer, "sh", "-c", "echo hello | timeout 3 nc db.pod 5432 | grep -q hello && echo REACHED || echo UNREACHED",
                ])) ?? ""
                return Self.lines(out).contains("REACHED")
            }
            step("the api reached the moved db.pod")
        } catch {
            // The daemons' logs first and the cluster's state last: a CI report keeps the end of
            // the output, and the state says most (a CI run once waited 360 s for the drained db
            // with only the last agent's log tail to read).
            print(cluster.logTails())
            for (kind, path) in [("nodes", "/v1/nodes"), ("replicas", "/v1/replicas")] {
                guard let reply = try? await cluster.call("GET", path, token: cluster.adminToken) else { continue }
                let items = ((try? JSONSerialization.jsonObject(with: reply.body)) as? [String: Any])?["items"] as? [[String: Any]] ?? []
                for item in items {
                    let meta = item["metadata"] as? [String: Any] ?? [:]
                    let spec = item["spec"] as? [String: Any] ?? [:]
                    let status = item["status"] as? [String: Any] ?? [:]
                    let binding = (item["binding"] as? [String: Any])?["node"] ?? "-"
                    let conditions = (status["conditions"] as? [[String: Any]] ?? []).map { "\($0["type"] ?? "?")=\($0["status"] ?? "?")" }
                    print("\(kind): \(meta["tenant"] ?? "")/\(meta["name"] ?? "?") unschedulable=\(spec["unschedulable"] ?? false) bound=\(binding) phase=\(status["phase"] ?? "-") \(conditions.joined(separator: ",")) \(status["message"] ?? "")")
                }
            }
            cluster.shutdown()
            throw error
        }
        step("test body done")
        cluster.shutdown()
        step("cluster shut down")
    }

    static func lines(_ text: String) -> [String] { text.split(separator: "\n").map(String.init) }

    struct Placed {
        var replica: String
        var pod: String
        var node: String?
        var phase: String?
        var podIP: String?
        var endpoint: String? = nil
    }

    static func replicas(_ cluster: NetnsCluster, _ token: String) async throws -> [Placed] {
        let items = try await cluster.json("GET", "/v1/replicas", token: token)["items"] as? [[String: Any]] ?? []
        return items.map { item in
            let metadata = item["metadata"] as? [String: Any] ?? [:]
            let spec = item["spec"] as? [String: Any] ?? [:]
            let status = item["status"] as? [String: Any] ?? [:]
            return Placed(
                replica: metadata["name"] as? String ?? "", pod: spec["role"] as? String ?? "",
                node: (item["binding"] as? [String: Any])?["node"] as? String, phase: status["phase"] as? String,
                podIP: status["podIP"] as? String, endpoint: status["endpoint"] as? String)
        }
    }
}
