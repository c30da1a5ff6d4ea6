import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

@Suite(.timeLimit(.minutes(5))) struct DeploymentAPITests {
    /// The DeepInfra-style flow: create → list → update min/max at run time → delete.
    @Test func createListUpdateDelete() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        let body = #"{"model_name": "test-model", "gpu": "A100-80GB", "num_gpus": 2, "max_batch_size": 64, "hf": {"repo": "meta-llama/Llama-2-7b-chat-hf"}, "settings": {"min_instances": 0, "max_instances": 1}}"#
        let created = try await h.call("POST", "/v1/deployments", token: token, body: body)
        #expect(created.status == 201, "\(created.text)")
        let id = try #require(created.json["deploy_id"] as? String)
        #expect(created.json["full_name"] as? String == "\(tenant)/test-model")
        #expect((created.json["status"] as? [String: Any])?["state"] as? String == "stopped")
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: body).status == 409)

        let list = try await h.call("GET", "/v1/deployments", token: token)
        #expect(list.items.map { $0["deploy_id"] as? String } == [id])

        let scaled = try await h.call("PUT", "/v1/deployments/\(id)", token: token, body: #"{"settings": {"min_instances": 2, "max_instances": 2}}"#)
        #expect(scaled.status == 200, "\(scaled.text)")
        let status = try #require(scaled.json["status"] as? [String: Any])
        #expect(status["instances_wanted"] as? Int == 2)
        #expect(status["instances_running"] as? Int == 0)
        #expect((status["message"] as? String)?.hasPrefix("0/2 running, waiting for capacity") == true)
        let replicas = try await h.call("GET", "/v1/replicas", token: token).items
        #expect(replicas.count == 2)
        #expect(replicas.allSatisfy { ($0["spec"] as? [String: Any])?["gpus"] as? Int == 2 })
        #expect(Set(replicas.compactMap { ($0["spec"] as? [String: Any])?["machineTypes"] as? [String] }.flatMap { $0 }) == ["GPU-A100-80GB"])

        // Raising max keeps the instances that run; lowering it removes the highest instances.
        let wider = try await h.call("PUT", "/v1/deployments/test-model", token: token, body: #"{"settings": {"min_instances": 1, "max_instances": 3}}"#)
        #expect((wider.json["status"] as? [String: Any])?["instances_wanted"] as? Int == 2)
        let down = try await h.call("PUT", "/v1/deployments/test-model", token: token, body: #"{"settings": {"min_instances": 1, "max_instances": 1}}"#)
        #expect((down.json["status"] as? [String: Any])?["instances_wanted"] as? Int == 1)
        #expect(try await h.call("GET", "/v1/replicas", token: token).items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String } == ["deploy.test-model.0"])

        #expect(try await h.call("DELETE", "/v1/deployments/\(id)", token: token).status == 204)
        #expect(try await h.call("GET", "/v1/deployments/\(id)", token: token).status == 404)
        #expect(try await h.call("GET", "/v1/replicas", token: token).items.isEmpty)
    }

    @Test func partialRunningIsReported() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        let body = #"{"model_name": "m", "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 3, "max_instances": 3}}"#
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: body).status == 201)
        // Two instances run (as the scheduler and node-agent would report); the third waits.
        for index in 0..<2 {
            var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: "deploy.m.\(index)")
            replica.status = ReplicaStatus(phase: .running)
            _ = try await h.deps.store.update(replica)
        }
        var third = try await h.deps.store.get(Replica.self, tenant: tenant, name: "deploy.m.2")
        third.status = ReplicaStatus(phase: .pending, message: "0/4 nodes: 4 insufficient GPUs")
        _ = try await h.deps.store.update(third)
        let status = try #require(try await h.call("GET", "/v1/deployments/m", token: token).json["status"] as? [String: Any])
        #expect(status["state"] as? String == "partial")
        #expect(status["instances_running"] as? Int == 2)
        #expect(status["message"] as? String == "2/3 running, waiting for capacity: 0/4 nodes: 4 insufficient GPUs")
    }

    @Test func gpuLimitAndBadBodies() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        func body(_ gpus: Int, _ minimum: Int, _ maximum: Int) -> String {
            #"{"model_name": "m\#(gpus)\#(minimum)", "gpu": "H100-80GB", "num_gpus": \#(gpus), "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": \#(minimum), "max_instances": \#(maximum)}}"#
        }
        let tooMany = try await h.call("POST", "/v1/deployments", token: token, body: body(2, 3, 3))
        #expect(tooMany.status == 403)
        #expect(tooMany.errorMessage.contains("limit of 4"))
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: body(1, 3, 4)).status == 201)
        let second = try await h.call("POST", "/v1/deployments", token: token, body: body(2, 1, 1))
        #expect(second.status == 403)
        #expect(second.errorMessage.contains("3 of your limit of 4"))
        let scaleUp = try await h.call("PUT", "/v1/deployments/m13", token: token, body: #"{"settings": {"min_instances": 5, "max_instances": 5}}"#)
        #expect(scaleUp.status == 403)
        let inverted = try await h.call("PUT", "/v1/deployments/m13", token: token, body: #"{"settings": {"min_instances": 3, "max_instances": 2}}"#)
        #expect(inverted.status == 422)
        #expect(inverted.error["field"] as? String == "settings.min_instances")
        let typo = try await h.call("PUT", "/v1/deployments/m13", token: token, body: #"{"settings": {"min_instance": 1, "max_instances": 2}}"#)
        #expect(typo.status == 400)
        #expect(typo.errorMessage.contains("did you mean 'min_instances'"))
        let badGPU = try await h.call("POST", "/v1/deployments", token: token, body: #"{"model_name": "x", "gpu": "H100-80G", "max_batch_size": 8, "hf": {"repo": "a/b"}}"#)
        #expect(badGPU.status == 422)
        #expect(badGPU.error["field"] as? String == "gpu")
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: "{not json").status == 400)
        let stale = try await h.call("PUT", "/v1/deployments/m13", token: token, body: #"{"settings": {"min_instances": 1, "max_instances": 2}}"#, headers: ["If-Match": "1"])
        #expect(stale.status == 409)
    }

    @Test func spendingLimitStopsNewGPUWork() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro, spendingLimitUSD: 1)
        let record = UsageRecord(
            metadata: ObjectMeta(name: "r.1", tenant: tenant),
            spec: .init(replica: "r", owner: "deployments/x", intervalStart: Date(), seconds: 300, mode: .dedicated, priority: .inference, gpus: 1, includedSeconds: 0, billableSeconds: 300, costMicroDollars: 1_000_000))
        _ = try await h.deps.store.create(record)
        let refused = try await h.call("POST", "/v1/deployments", token: token, body: #"{"model_name": "m", "gpu": "H100", "max_batch_size": 8, "hf": {"repo": "a/b"}, "settings": {"min_instances": 1, "max_instances": 1}}"#)
        #expect(refused.status == 403)
        #expect(refused.errorMessage.contains("spending limit"))
        let usage = try await h.call("GET", "/v1/usage", token: token)
        #expect(usage.json["costUSD"] as? Double == 1)
        #expect(usage.json["credits"] as? Double == 1000)
    }
}

@Suite(.timeLimit(.minutes(5))) struct NodeAndWatchAPITests {
    func register(_ h: Harness, _ node: String, token: String) async throws -> Reply {
        let gpus = (0..<2).map { #"{"index": \#($0), "uuid": "GPU-\#(node)-\#($0)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}"# }
        return try await h.call("POST", "/v1/nodes", token: token, body: #"{"name": "\#(node)", "labels": {"gpu-mode": "dedicated"}, "gpus": [\#(gpus.joined(separator: ","))]}"#)
    }

    @Test func nodeTokensAreScopedToTheirNode() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let other = "n-" + UUID().uuidString.prefix(6).lowercased()
        let token = try await h.nodeToken(node)
        let registered = try await register(h, node, token: token)
        #expect(registered.status == 201, "\(registered.text)")
        let labels = (registered.json["metadata"] as? [String: Any])?["labels"] as? [String: String]
        #expect(labels?["gpuplane.io/machine-type"] == "GPU-H100")
        #expect(try await register(h, other, token: token).status == 403)
        #expect(try await h.call("POST", "/v1/nodes/\(other)/heartbeat", token: token).status == 403)
        #expect(try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: token).status == 200)
        #expect(try await h.call("GET", "/v1/nodes", token: token).items.count == 1)
        #expect(try await h.call("POST", "/v1/nodes/\(node)/cordon", token: token).status == 403)
        // Its heartbeat keeps the key live: beat and look right after, again if a loaded machine
        // let it go silent in between.
        try await eventually("the heartbeat key live after a heartbeat", timeout: 30) {
            guard try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: token).status == 200 else { return false }
            guard let kv = try await h.client.get(NodeHeartbeat.key(node)) else { return false }
            return NodeHeartbeats.KeyState(value: kv.value) == .live(server: h.deps.heartbeats.serverID)
        }

        // A replica bound to this node is visible to it; one bound elsewhere is not, and its
        // status can't be reported from here.
        let (tenant, user) = try await h.tenant(.enterprise)
        #expect(try await h.call("POST", "/v1/applications", token: user, body: app("a", pods: "  - {name: p, image: x, gpu: {enabled: true, model: custom, memoryGB: 80}}\n  - {name: q, image: x}\n")).status == 201)
        var mine = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p")
        mine.binding = Binding(node: node, gpuIndices: [1])
        _ = try await h.deps.store.update(mine)
        var theirs = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.q")
        theirs.binding = Binding(node: other, gpuIndices: [])
        _ = try await h.deps.store.update(theirs)
        let seen = try await h.call("GET", "/v1/replicas", token: token).items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String }
        #expect(seen == ["a.p"])
        let reported = try await h.call("PUT", "/v1/replicas/\(tenant)/a.p/status", token: token, body: #"{"phase": "running", "restarts": 0}"#)
        #expect(reported.status == 200)
        // The same report again (its answer lost, or the agent restarted) writes nothing: the
        // replica keeps its version.
        let again = try await h.call("PUT", "/v1/replicas/\(tenant)/a.p/status", token: token, body: #"{"phase": "running", "restarts": 0}"#)
        #expect(again.status == 200)
        let version = { (answer: Reply) in (answer.json["metadata"] as? [String: Any])?["resourceVersion"] as? String }
        #expect(version(again) != nil && version(again) == version(reported))
        #expect(try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p").metadata.resourceVersion == version(reported))
        #expect(try await h.call("PUT", "/v1/replicas/\(tenant)/a.q/status", token: token, body: #"{"phase": "running", "restarts": 0}"#).status == 404)
        // A node token is no user: it can't apply applications.
        #expect(try await h.call("POST", "/v1/applications", token: token, body: chatBackend).status == 403)
        // Admins cordon and drain.
        let drained = try await h.call("POST", "/v1/nodes/\(node)/drain", token: h.admin)
        #expect(drained.status == 200)
        #expect((drained.json["spec"] as? [String: Any])?["unschedulable"] as? Bool == true)
        #expect(try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p").binding == nil)
    }

    @Test func modelServersAreNodeScopedAndReportsKeepAttachments() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let other = "n-" + UUID().uuidString.prefix(6).lowercased()
        let token = try await h.nodeToken(node)
        func server(_ name: String, on node: String) -> ModelServer {
            ModelServer(
                metadata: ObjectMeta(name: name),
                spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10, serving: .init(image: "m:1", args: ["--model", "x"])),
                binding: Binding(node: node, gpuIndices: [0]), status: .init(attachedReplicas: ["t/a.p"]))
        }
        _ = try await h.deps.store.create(server("ms-\(node)", on: node))
        _ = try await h.deps.store.create(server("ms-\(other)", on: other))

        let seen = try await h.call("GET", "/v1/modelservers", token: token)
        #expect(seen.status == 200)
        #expect(seen.items.compactMap { ($0["metadata"] as? [String: Any])?["name"] as? String } == ["ms-\(node)"])
        #expect(try await h.call("GET", "/v1/modelservers/ms-\(node)", token: token).status == 200)
        #expect(try await h.call("GET", "/v1/modelservers/ms-\(other)", token: token).status == 404)
        let all = try await h.call("GET", "/v1/modelservers?node=\(other)", token: h.admin)
        #expect(all.items.count == 1)
        let (_, user) = try await h.tenant(.enterprise)
        #expect(try await h.call("GET", "/v1/modelservers", token: user).status == 403)

        let report = #"{"ready": true, "endpoint": "http://10.0.0.7:20000", "container": {"phase": "running", "restarts": 0}}"#
        let stored = try await h.call("PUT", "/v1/modelservers/ms-\(node)/status", token: token, body: report)
        #expect(stored.status == 200, "\(stored.text)")
        let status = try #require(stored.json["status"] as? [String: Any])
        #expect(status["ready"] as? Bool == true)
        #expect(status["endpoint"] as? String == "http://10.0.0.7:20000")
        #expect(status["attachedReplicas"] as? [String] == ["t/a.p"])
        #expect(try await h.call("PUT", "/v1/modelservers/ms-\(other)/status", token: token, body: report).status == 404)
        let bad = try await h.call(
            "PUT", "/v1/modelservers/ms-\(node)/status", token: token,
            body: #"{"ready": true, "endpoint": "not a url", "container": {"phase": "running", "restarts": 0}}"#)
        #expect(bad.status == 422)
        #expect(bad.error["field"] as? String == "endpoint")
        let unknown = try await h.call("PUT", "/v1/modelservers/ms-\(node)/status", token: token, body: #"{"ready": true, "attachedReplicas": []}"#)
        #expect(unknown.status == 400 || unknown.status == 422)
        #expect(try await h.deps.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: "ms-\(node)").status.attachedReplicas == ["t/a.p"])
    }

    /// Registration writes the heartbeat key live under the api-server's lease; without
    /// heartbeats the api-server marks it silent (after `silent-after`, 2 s with a 3 s TTL);
    /// a heartbeat writes it live again. Beats in between write nothing. Followed through a
    /// watch rather than by reading the key, so a loaded machine cannot miss a state.
    @Test func aNodeThatStopsBeatingIsMarkedSilent() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let token = try await h.nodeToken(node)
        let key = NodeHeartbeat.key(node)
        let from = try await h.client.range(.key(key)).header.revision + 1
        let seen = EventLog()
        let watch = Task {
            for try await response in h.client.watch(.key(key), startRevision: from) {
                for event in response.events { await seen.append(event) }
            }
        }
        defer { watch.cancel() }
        #expect(try await register(h, node, token: token).status == 201)
        let live = NodeHeartbeats.KeyState.live(server: h.deps.heartbeats.serverID)
        let silent = NodeHeartbeats.KeyState.silent(server: h.deps.heartbeats.serverID)
        try await eventually("the key written live", timeout: 30) { await seen.states.first == live }
        // No more heartbeats: the sweep marks the node silent; the key stays, on the lease.
        try await eventually("the key marked silent", timeout: 30) { await seen.states.contains(silent) }
        let kv = try #require(try await h.client.get(key))
        #expect(kv.lease != 0)
        // A heartbeat writes it live again.
        #expect(try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: token).status == 200)
        try await eventually("the watch sees live, silent, live", timeout: 30) { await seen.states.count >= 3 }
        // The first three: on a loaded machine the node may have gone silent again since.
        #expect(await Array(seen.states.prefix(3)) == [live, silent, live])
        #expect(await seen.types.allSatisfy { $0 == .put }, "the key is never deleted")
    }

    private actor EventLog {
        var types: [Etcd.WatchEvent.EventType] = []
        var states: [NodeHeartbeats.KeyState] = []
        func append(_ event: Etcd.WatchEvent) {
            types.append(event.type)
            if event.type == .put { states.append(NodeHeartbeats.KeyState(value: event.kv.value)) }
        }
    }

    /// A watch resumed from a resourceVersion misses nothing and repeats nothing.
    @Test func watchResumesFromAResourceVersion() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        func pod(_ image: String) -> String { app("w", pods: "  - {name: a, image: \(image)}\n") }
        let first = try await h.call("POST", "/v1/applications", token: token, body: pod("x:1"))
        let start = try #require(first.resourceVersion)
        // Changes made while nobody watches...
        let second = try await h.call("POST", "/v1/applications", token: token, body: pod("x:2"))
        #expect(second.status == 200)
        let dir = try TestEnvironment.temporaryDirectory(prefix: "watch")
        let out = dir.appendingPathComponent("stream.ndjson")
        let curl = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Authorization: Bearer \(token)", "\(h.base)/v1/applications?watch=true&resourceVersion=\(start)"],
            logFile: out)
        defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        // ...and after the watch started.
        #expect(try await h.call("DELETE", "/v1/applications/w", token: token).status == 204)
        var events: [[String: Any]] = []
        try await eventually("watch delivers MODIFIED then DELETED and a BOOKMARK") {
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            events = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            return events.contains { $0["type"] as? String == "DELETED" } && events.contains { $0["type"] as? String == "BOOKMARK" }
        }
        let changes = events.filter { $0["type"] as? String != "BOOKMARK" }
        #expect(changes.map { $0["type"] as? String } == ["MODIFIED", "DELETED"])
        let images = changes.compactMap { (($0["object"] as? [String: Any])?["spec"] as? [String: Any])?["pods"] as? [[String: Any]] }.map { $0.first?["image"] as? String }
        #expect(images == ["x:2", "x:2"])
        let versions = changes.compactMap { $0["resourceVersion"] as? String }.compactMap { Int64($0) }
        #expect(versions == versions.sorted() && Set(versions).count == versions.count)
        #expect(versions.first.map { $0 > Int64(start) ?? 0 } == true)
        // Resuming from the MODIFIED event's version gives exactly the DELETED one.
        let modified = try #require(changes.first?["resourceVersion"] as? String)
        let resumedOut = dir.appendingPathComponent("resumed.ndjson")
        let resumed = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Authorization: Bearer \(token)", "\(h.base)/v1/applications?watch=true&resourceVersion=\(modified)"],
            logFile: resumedOut)
        defer { resumed.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        // A BOOKMARK may come before the replayed events (the ticker does not wait for etcd);
        // one at or past the delete's version says the stream has sent everything up to it.
        let deleted = try #require((changes.last?["resourceVersion"] as? String).flatMap { Int64($0) })
        var again: [String] = []
        var firstLine: [String: Any] = [:]
        try await eventually("the resumed watch delivers a BOOKMARK at or past the delete") {
            let text = (try? String(contentsOf: resumedOut, encoding: .utf8)) ?? ""
            let lines = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            again = lines.compactMap { $0["type"] as? String }
            firstLine = lines.first ?? [:]
            return lines.contains { $0["type"] as? String == "BOOKMARK" && ($0["resourceVersion"] as? String).flatMap { Int64($0) } ?? 0 >= deleted }
        }
        #expect(again.filter { $0 != "BOOKMARK" } == ["DELETED"])
        // A resumed stream says at once that it is alive: a BOOKMARK at the version it resumes
        // after, written before the server reads etcd.
        #expect(firstLine["type"] as? String == "BOOKMARK" && firstLine["resourceVersion"] as? String == modified)
    }

    /// Two objects written by one transaction share a revision; a stream cut between them must
    /// not lose the second: the first line says revision - 1.
    @Test func watchResumedInsideOneTransactionLosesNothing() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, _) = try await h.tenant(.scale)
        func replica(_ name: String) -> Replica {
            Replica(
                metadata: ObjectMeta(name: name, tenant: tenant),
                spec: ReplicaSpec(
                    owner: OwnerReference(kind: .application, name: "g", uid: "u"), role: name, mode: nil, modelSlug: nil, gpus: 0,
                    vramGB: 0, machineTypes: [], priority: .inference, image: "x:1"))
        }
        let before = try await h.deps.store.list(Replica.self, tenant: tenant).revision
        let (_, result) = try await h.deps.store.transaction { txn in
            try txn.create(replica("g.a"))
            try txn.create(replica("g.b"))
        }
        let dir = try TestEnvironment.temporaryDirectory(prefix: "watch-group")
        func watch(from version: String, _ file: String) throws -> (ChildProcess, URL) {
            let out = dir.appendingPathComponent(file)
            let curl = try ChildProcess(
                executable: "/usr/bin/curl",
                arguments: ["-sN", "-H", "Authorization: Bearer \(h.admin)", "\(h.base)/v1/replicas?watch=true&tenant=\(tenant)&resourceVersion=\(version)"],
                logFile: out)
            return (curl, out)
        }
        func lines(_ out: URL) -> [[String: Any]] {
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .filter { $0["type"] as? String == "ADDED" }
        }
        let (first, out) = try watch(from: String(before), "all.ndjson")
        defer { first.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("both ADDED lines") { lines(out).count == 2 }
        let versions = lines(out).compactMap { $0["resourceVersion"] as? String }
        #expect(versions == [String(result.revision - 1), String(result.revision)])
        // A client cut after the first line resumes from its version and still gets g.b.
        let (second, resumedOut) = try watch(from: versions[0], "resumed.ndjson")
        defer { second.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("the resumed watch delivers g.b") {
            lines(resumedOut).contains { ($0["object"] as? [String: Any]).flatMap { ($0["metadata"] as? [String: Any])?["name"] as? String } == "g.b" }
        }

        // Objects of that revision the caller may not see are never waited for: a node-scoped
        // watch that gets only one of two replicas bound in one transaction gets the full revision.
        var bound = replica("h.a")
        bound.binding = Binding(node: "n-\(tenant)", gpuIndices: [])
        var elsewhere = replica("h.b")
        elsewhere.binding = Binding(node: "m-\(tenant)", gpuIndices: [])
        let (_, both) = try await h.deps.store.transaction { txn in
            try txn.create(bound)
            try txn.create(elsewhere)
        }
        let scopedOut = dir.appendingPathComponent("scoped.ndjson")
        let scoped = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Authorization: Bearer \(h.admin)", "\(h.base)/v1/replicas?watch=true&node=n-\(tenant)&resourceVersion=\(result.revision)"],
            logFile: scopedOut)
        defer { scoped.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("the node-scoped watch delivers h.a") { lines(scopedOut).count == 1 }
        #expect(lines(scopedOut).first?["resourceVersion"] as? String == String(both.revision))
    }

    @Test func unknownEventKindIsABadRequest() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let reply = try await h.call("GET", "/v1/events?kind=bogus", token: token)
        #expect(reply.status == 400)
        #expect(reply.error["field"] as? String == "kind")
    }

    /// On a server of its own: compacting the shared server's etcd cut the history other tests
    /// replay their watches from (SecretAPITests read a 410 where it awaited its changes).
    @Test func watchFromACompactedVersionSaysGone() async throws {
        let (h, server) = try await Harness.start()
        defer {
            server.task.cancel()
            h.etcd.shutdown()
        }
        let (_, token) = try await h.tenant(.scale)
        let first = try await h.call("POST", "/v1/applications", token: token, body: app("c", pods: "  - {name: a, image: x:1}\n"))
        let old = try #require(first.resourceVersion)
        _ = try await h.call("POST", "/v1/applications", token: token, body: app("c", pods: "  - {name: a, image: x:2}\n"))
        let head = try await h.client.range(.key("/nonexistent")).header.revision
        _ = try await h.client.compact(revision: head)
        let dir = try TestEnvironment.temporaryDirectory(prefix: "watch")
        let out = dir.appendingPathComponent("stream.ndjson")
        let curl = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Authorization: Bearer \(token)", "\(h.base)/v1/applications?watch=true&resourceVersion=\(Int64(old)! - 1)"],
            logFile: out)
        defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("an ERROR 410 line") {
            ((try? String(contentsOf: out, encoding: .utf8)) ?? "").contains(#""code":410"#)
        }
    }

    @Test func tenantsAndTokensAreAdminOnly() async throws {
        let h = try await SharedServer.shared.get()
        let (name, token) = try await h.tenant(.free)
        #expect(try await h.call("GET", "/v1/tenants/\(name)", token: token).status == 200)
        // gpu_limit is optional: 4 by default, as the reference says.
        let plain = try await h.call("POST", "/v1/tenants", token: h.admin, body: #"{"name": "\#(name)-b", "plan": "pro"}"#)
        #expect(plain.status == 201)
        #expect(plain.json["gpu_limit"] as? Int == 4)
        #expect(try await h.call("PATCH", "/v1/tenants/\(name)", token: token, body: #"{"plan": "enterprise"}"#).status == 403)
        #expect(try await h.call("POST", "/v1/tokens", token: token, body: #"{"role": "admin"}"#).status == 403)
        let patched = try await h.call("PATCH", "/v1/tenants/\(name)", token: h.admin, body: #"{"plan": "pro", "gpu_limit": 8}"#)
        #expect(patched.json["plan"] as? String == "pro")
        #expect(patched.json["gpu_limit"] as? Int == 8)
        #expect(try await h.call("PATCH", "/v1/tenants/\(name)", token: h.admin, body: #"{"plan": "gold"}"#).status == 400)
        #expect(try await h.call("PATCH", "/v1/tenants/\(name)", token: h.admin, body: #"{"plna": "pro"}"#).status == 400)
        #expect(try await h.call("PATCH", "/v1/tenants/\(name)", token: h.admin, body: #"{"plan": "pro", "resourceVersion": "1"}"#).status == 409)
        let models = try await h.call("GET", "/v1/models", token: token)
        let llama70 = try #require((models.json["models"] as? [[String: Any]])?.first { $0["slug"] as? String == "llama-3.3-70b" })
        #expect(llama70["available"] as? Bool == false)
        #expect(llama70["plans"] as? [String] == ["scale", "enterprise"])
        // Revoked tokens stop working.
        let issued = try await h.call("POST", "/v1/tokens", token: h.admin, body: #"{"tenant": "\#(name)", "role": "user"}"#)
        let secret = try #require(issued.json["token"] as? String)
        let id = try #require(issued.json["id"] as? String)
        #expect(try await h.call("GET", "/v1/applications", token: secret).status == 200)
        #expect(try await h.call("DELETE", "/v1/tokens/\(id)", token: h.admin).status == 204)
        #expect(try await h.call("GET", "/v1/applications", token: secret).status == 401)
    }
}
