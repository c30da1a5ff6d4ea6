import EtcdClient
import Foundation
@testable import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// The inference gateway against a live api-server, real etcd and the stand-in model server
/// (run on this machine, not in a container: the agent's part is covered end to end in
/// LocalClusterTests).
@Suite struct GatewayAPITests {
    static let served = "microsoft/Phi-3.5-mini-instruct"

    /// One tenant's Mode 3 pod, its replica bound to a model server whose endpoint is a
    /// stand-in listening here.
    struct Scene {
        let h: Harness
        let tenant: String
        let token: String
        let replica: Replica
        let path: String
        let directory: URL

        func chat(_ body: String = #"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#, path: String? = nil) async throws -> Reply {
            try await h.call("POST", (path ?? self.path) + "/chat/completions", body: body, headers: ["Content-Type": "application/json"])
        }

        /// Makes a ready model server at `endpoint` and binds the pod's replica to it.
        func serve(_ server: String, endpoint: String) async throws {
            var object = ModelServer(
                metadata: ObjectMeta(name: server, tenant: ObjectMeta.clusterTenant),
                spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10, serving: .init(image: "x", args: ["--model", GatewayAPITests.served])),
                binding: Binding(node: "n-gw", gpuIndices: [0]),
                status: .init(ready: true, endpoint: endpoint, attachedReplicas: ["\(tenant)/\(replica.metadata.name)"]))
            object = try await h.deps.store.create(object)
            var bound = try await h.deps.store.get(Replica.self, tenant: tenant, name: replica.metadata.name)
            bound.binding = Binding(node: "n-gw", gpuIndices: [], modelServer: server)
            _ = try await h.deps.store.update(bound)
        }
    }

    func scene() async throws -> Scene {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.scale)
        let manifest = app("chat", pods: "  - name: client\n    image: x:1\n    gpu: {enabled: true, model: phi-3.5-mini}\n")
        let applied = try await h.call("POST", "/v1/applications", token: token, body: manifest)
        #expect(applied.status == 201, "\(applied.text)")
        let replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: "chat.client")
        let key = try #require(replica.spec.inferenceKey)
        return Scene(
            h: h, tenant: tenant, token: token, replica: replica,
            path: InferenceEndpoint.path(tenant: tenant, slug: "phi-3.5-mini", key: key),
            directory: try TestEnvironment.temporaryDirectory(prefix: "gateway"))
    }

    @Test func aPodReachesItsModelThroughItsURLWithNoToken() async throws {
        let s = try await scene()
        // Admitted, not placed: the URL is right but nothing serves it yet.
        let early = try await s.chat()
        #expect(early.status == 503, "\(early.text)")
        #expect(early.headers["retry-after"] == "2")
        #expect(early.errorMessage.contains("not ready"))

        let port = TestEnvironment.freePort()
        let standIn = try StandInModelServer.start(in: s.directory, port: port, arguments: ["--model", Self.served])
        defer { standIn.kill9() }
        try await s.serve("ms-gw-\(s.tenant)", endpoint: "http://127.0.0.1:\(port)/")
        // The body asks for "auto"; the server only answers to its own name, so a 200 shows the
        // gateway pinned the model.
        var answer = try await s.chat()
        try await eventually("the gateway routes to the stand-in") {
            answer = try await s.chat()
            return answer.status == 200
        }
        let choices = try #require(answer.json["choices"] as? [[String: Any]])
        let content = (choices.first?["message"] as? [String: Any])?["content"] as? String
        #expect(content?.contains("stand-in reply (not a model) from \(Self.served)") == true, "\(answer.text)")
        #expect(answer.headers["content-type"]?.hasPrefix("application/json") == true)
        // The slug itself works too, and so does anything else: there is no cross-routing.
        #expect(try await s.chat(#"{"model": "phi-3.5-mini", "messages": []}"#).status == 200)
        #expect(try await s.chat(#"{"model": "llama-3.3-70b", "messages": []}"#).status == 200)
        let models = try await s.h.call("GET", s.path + "/models")
        #expect(models.status == 200)
        #expect(models.text.contains(Self.served))

        // A re-apply keeps the key, and another api-server (its own InferenceKeys over the same
        // etcd) agrees on it.
        #expect(try await s.h.call("POST", "/v1/applications", token: s.token, body: app("chat", pods: "  - name: client\n    image: x:1\n    gpu: {enabled: true, model: phi-3.5-mini}\n")).status == 200)
        let again = try await s.h.deps.store.get(Replica.self, tenant: s.tenant, name: "chat.client")
        #expect(again.spec.inferenceKey == s.replica.spec.inferenceKey)
        #expect(try await InferenceKeys(store: s.h.deps.store).key(tenant: s.tenant, slug: "phi-3.5-mini") == s.replica.spec.inferenceKey)
    }

    @Test func theURLIsTheCredential() async throws {
        let s = try await scene()
        let other = try await scene()
        let key = try #require(s.replica.spec.inferenceKey)
        func status(_ path: String) async throws -> Reply { try await s.chat(path: path) }

        let mangled = try await status(InferenceEndpoint.path(tenant: s.tenant, slug: "phi-3.5-mini", key: String(key.dropLast()) + (key.hasSuffix("A") ? "B" : "A")))
        #expect(mangled.status == 401)
        #expect(mangled.errorMessage.contains("NXL_INFERENCE_URL"))
        // One tenant's key opens nothing of another's, nor another slug.
        #expect(try await status(InferenceEndpoint.path(tenant: other.tenant, slug: "phi-3.5-mini", key: key)).status == 401)
        #expect(try await status(InferenceEndpoint.path(tenant: s.tenant, slug: "llama-3.1-8b", key: key)).status == 401)
        // A replica from before keys says how to get one.
        let keyless = try await status(InferenceEndpoint.path(tenant: s.tenant, slug: "phi-3.5-mini", key: nil))
        #expect(keyless.status == 401)
        #expect(keyless.errorMessage.contains("apply the application again"))
        // A valid key for a slug the tenant runs no pod of: 404, not somebody else's server.
        let otherSlug = try await s.h.deps.inferenceKeys.key(tenant: s.tenant, slug: "llama-3.1-8b")
        let none = try await status(InferenceEndpoint.path(tenant: s.tenant, slug: "llama-3.1-8b", key: otherSlug))
        #expect(none.status == 404)
        #expect(none.errorMessage.contains("no pod using model llama-3.1-8b"))
        // Only the inference routes skip tokens.
        #expect(try await s.h.call("GET", "/v1/applications").status == 401)
    }

    @Test func streamedCompletionsArriveChunkByChunk() async throws {
        let s = try await scene()
        let port = TestEnvironment.freePort()
        let release = s.directory.appendingPathComponent("release-stream")
        let standIn = try StandInModelServer.start(
            in: s.directory, port: port, arguments: ["--model", Self.served, "--stand-in-hold-stream", release.path])
        defer { standIn.kill9() }
        try await s.serve("ms-stream-\(s.tenant)", endpoint: "http://127.0.0.1:\(port)")
        try await eventually("the gateway routes to the stand-in") {
            try await s.h.call("GET", s.path + "/models").status == 200
        }
        let out = s.directory.appendingPathComponent("stream.txt")
        let curl = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Content-Type: application/json", "-d", #"{"model":"auto","stream":true,"messages":[]}"#, s.h.base + s.path + "/chat/completions"],
            logFile: out)
        defer { curl.kill9() }
        func text() -> String { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
        // The server holds the rest of its answer until told: the first chunk must already be here.
        try await eventually("the first chunk arrives while the server holds the rest") { text().contains("part 1 of") }
        #expect(!text().contains("part 2 of"))
        FileManager.default.createFile(atPath: release.path, contents: nil)
        try await eventually("the rest follows") { text().contains("data: [DONE]") }
        #expect(text().contains("part 3 of"))
    }

    @Test func serversThatAreNotReadyOrDownAreClearErrors() async throws {
        let s = try await scene()
        let port = TestEnvironment.freePort()
        let name = "ms-down-\(s.tenant)"
        // Bound to a server that is ready on paper but has nothing listening: 502 naming it.
        try await s.serve(name, endpoint: "http://127.0.0.1:\(port)")
        var reply = try await s.chat()
        try await eventually("the gateway sees the server") {
            reply = try await s.chat()
            return reply.status != 503
        }
        #expect(reply.status == 502, "\(reply.text)")
        #expect(reply.errorCode == "upstream")
        #expect(reply.errorMessage.contains(name))
        // Not ready: 503 with Retry-After.
        var server = try await s.h.deps.store.get(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: name)
        server.status.ready = false
        _ = try await s.h.deps.store.update(server)
        try await eventually("not ready is 503") {
            reply = try await s.chat()
            return reply.status == 503
        }
        #expect(reply.headers["retry-after"] == "2")
    }
}

/// Deployments behind `/v1/openai/…`: the tenant's token, `model: owner/name`, at most
/// `max_batch_size` in flight on each instance and the rest queued.
@Suite struct DeploymentGatewayTests {
    @Test func requestsQueueForFreeSlotsAndNeverExceedTheBatchSize() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        let model = try await Self.twoInstanceDeployment(h, token: token, tenant: tenant, name: "chat-x", batch: 2)
        func chat(_ model: String, token: String? = nil) async throws -> Reply {
            try await h.call(
                "POST", "/v1/openai/chat/completions", token: token,
                body: #"{"model": "\#(model)", "messages": [{"role": "user", "content": "hi"}]}"#, headers: ["Content-Type": "application/json"])
        }
        // Created, not running: the call is held until an instance is ready...
        let early = Task { try await chat(model, token: token) }
        try await eventually("the call is held") { h.deps.gateway.admission.held(model) == 1 }
        // ...and the gateway tells the autoscaler while it waits: a cold report for this deployment.
        let reports = DeploymentLoad.prefix + "\(tenant)/chat-x/"
        #expect(try await Self.sawReport(h, prefix: reports, from: 1) { $0.cold && $0.queued == 1 }, "no cold report for this deployment under \(reports)")
        let beforeBurst = try await h.client.status().header.revision

        // Two instances, each a stand-in that takes a second per answer.
        let directory = try TestEnvironment.temporaryDirectory(prefix: "deploy-gateway")
        var ports: [Int] = []
        var standIns: [ChildProcess] = []
        defer { for s in standIns { s.kill9() } }
        for index in 0..<2 {
            let port = TestEnvironment.freePort()
            ports.append(port)
            standIns.append(try StandInModelServer.start(
                in: directory, port: port, arguments: ["--model", "org/chat-x", "--served-model-name", model, "--stand-in-delay", "1"]))
            // Reported ready once /v1/models answers, as the node-agent does.
            try await eventually("the stand-in on \(port) answers") {
                await Harness.text(at: "http://127.0.0.1:\(port)/v1/models")?.contains(model) == true
            }
            var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: ReplicaPlanner.replicaName(deployment: "chat-x", index: index))
            #expect(replica.spec.servingPort == 8000)
            replica.binding = Binding(node: "n-\(index)", gpuIndices: [0])
            replica.status = ReplicaStatus(phase: .running, ready: true, endpoint: "http://127.0.0.1:\(port)")
            _ = try await h.deps.store.update(replica)
        }
        // The held call is answered by one of them.
        let held = try await early.value
        #expect(held.status == 200, "\(held.text)")
        #expect(held.headers["connection"] == "close")
        #expect(h.deps.gateway.admission.held(model) == 0)
        try await eventually("an instance answers") { try await chat(model, token: token).status == 200 }

        // Twelve at once on four slots: all answered, never more than two on one instance.
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<12 { group.addTask { try await chat(model, token: token).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 200, count: 12))
        // Four in flight and the rest waiting at the peak: reported as such.
        #expect(try await Self.sawReport(h, prefix: reports, from: beforeBurst) { $0.peak >= 4 }, "no load report of the burst")
        var answered = 0
        for port in ports {
            let stats = try JSONSerialization.jsonObject(with: Data((await Harness.text(at: "http://127.0.0.1:\(port)/stand-in/stats") ?? "").utf8)) as? [String: Int]
            #expect((stats?["maxInFlight"] ?? 99) <= 2, "instance on \(port): \(stats ?? [:])")
            answered += stats?["requests"] ?? 0
        }
        #expect(answered == 14)

        // The caller's own deployments only; the model is required.
        let (_, stranger) = try await h.tenant(.pro)
        let foreign = try await chat(model, token: stranger)
        #expect(foreign.status == 404)
        #expect(foreign.error["field"] as? String == "model")
        let missing = try await h.call("POST", "/v1/openai/chat/completions", token: token, body: #"{"messages": []}"#)
        #expect(missing.status == 400)
        #expect(missing.error["field"] as? String == "model")
        #expect(try await chat(model).status == 401)
        let models = try await h.call("GET", "/v1/openai/models", token: token)
        let listed = try #require(models.json["data"] as? [[String: Any]])
        #expect(listed.map { $0["id"] as? String } == [model])
        #expect(listed.first?["ready"] as? Bool == true)
    }
}

extension DeploymentGatewayTests {
    /// Creates a deployment of two one-GPU instances through the API; returns its full name.
    static func twoInstanceDeployment(_ h: Harness, token: String, tenant: String, name: String, batch: Int) async throws -> String {
        let body = #"{"model_name": "\#(name)", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": \#(batch), "hf": {"repo": "org/\#(name)"}, "settings": {"min_instances": 2, "max_instances": 2}}"#
        let created = try await h.call("POST", "/v1/deployments", token: token, body: body)
        #expect(created.status == 201, "\(created.text)")
        return "\(tenant)/\(name)"
    }

    /// An instance that cannot be connected to is skipped for another; the call is answered.
    @Test func anInstanceThatDoesNotAnswerIsSkipped() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        let model = try await Self.twoInstanceDeployment(h, token: token, tenant: tenant, name: "skip-x", batch: 1)
        let directory = try TestEnvironment.temporaryDirectory(prefix: "skip-gateway")
        let live = TestEnvironment.freePort()
        let standIn = try StandInModelServer.start(in: directory, port: live, arguments: ["--served-model-name", model])
        defer { standIn.kill9() }
        // Instance 0 (tried first: the fewest in flight, then by name) has nothing listening.
        for (index, port) in [(0, TestEnvironment.freePort()), (1, live)] {
            var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: ReplicaPlanner.replicaName(deployment: "skip-x", index: index))
            replica.binding = Binding(node: "n-\(index)", gpuIndices: [0])
            replica.status = ReplicaStatus(phase: .running, ready: true, endpoint: "http://127.0.0.1:\(port)")
            _ = try await h.deps.store.update(replica)
        }
        let call = #"{"model": "\#(model)", "messages": []}"#
        try await eventually("both instances known to the gateway") {
            let listed = try await h.call("GET", "/v1/openai/models", token: token)
            return (listed.json["data"] as? [[String: Any]])?.first?["ready"] as? Bool == true
                && h.deps.gateway.deployments.get(tenant: tenant, name: "skip-x").map { h.deps.gateway.readyInstances(of: $0).count } == 2
        }
        for _ in 0..<3 {
            let answer = try await h.call("POST", "/v1/openai/chat/completions", token: token, body: call)
            #expect(answer.status == 200, "\(answer.text)")
        }
    }

    /// Whether a load report matching `condition` was written under `prefix` since `revision`
    /// (etcd's history is replayed, so a report since overwritten still counts).
    static func sawReport(
        _ h: Harness, prefix: String, from revision: Int64, _ condition: @escaping @Sendable (DeploymentLoad) -> Bool
    ) async throws -> Bool {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                for try await batch in h.client.watch(.prefix(prefix), startRevision: revision) {
                    for event in batch.events where event.type == .put {
                        if let load = try? GPUPlaneJSON.decode(DeploymentLoad.self, from: event.kv.value), condition(load) { return true }
                    }
                }
                return false
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                return false
            }
            let seen = try await group.next() ?? false
            group.cancelAll()
            return seen
        }
    }
}

/// The queue itself: first come first served, bounded in time, and a caller that goes away
/// leaves it.
@Suite struct BatchAdmissionTests {
    @Test func slotsGoToWaitersInArrivalOrder() async throws {
        let admission = BatchAdmission(timeout: .seconds(600))
        let held = try await admission.acquire(deployment: "t/d", instances: ["a"], limit: 1)
        #expect(held.instance == "a")
        let order = Locked<[Int]>([])
        var waiters: [Task<Void, any Error>] = []
        for n in 1...3 {
            waiters.append(Task {
                let slot = try await admission.acquire(deployment: "t/d", instances: ["a"], limit: 1)
                order.withLock { $0.append(n) }
                slot.release()
            })
            try await eventually("waiter \(n) queued") { admission.waiting == n }
        }
        held.release()
        for waiter in waiters { try await waiter.value }
        #expect(order.withLock { $0 } == [1, 2, 3])
        #expect(admission.waiting == 0)
        // Released twice counts once: a fresh caller still gets the one slot at once.
        held.release()
        let again = try await admission.acquire(deployment: "t/d", instances: ["a"], limit: 1)
        again.release()
    }

    @Test func aWaitThatRunsOutIs429AndACancelledWaiterLeaves() async throws {
        let admission = BatchAdmission(timeout: .milliseconds(300))
        let held = try await admission.acquire(deployment: "t/d", instances: ["a"], limit: 1)
        do {
            _ = try await admission.acquire(deployment: "t/d", instances: ["a"], limit: 1)
            Issue.record("a second caller got a slot past max_batch_size 1")
        } catch let error as APIError {
            #expect(error.status == .tooManyRequests)
            #expect(error.retryAfter == 1)
        }
        let patient = BatchAdmission(timeout: .seconds(600))
        let first = try await patient.acquire(deployment: "t/d", instances: ["a"], limit: 1)
        let waiter = Task { try await patient.acquire(deployment: "t/d", instances: ["a"], limit: 1) }
        try await eventually("queued") { patient.waiting == 1 }
        waiter.cancel()
        try await eventually("gone when cancelled") { patient.waiting == 0 }
        #expect(await (try? waiter.value) == nil)
        first.release()
        held.release()
    }
}

/// The gateway's one-scan reading and pinning of a body's top-level `model`.
@Suite struct ModelFieldTests {
    func pinned(_ body: String, _ name: String = "org/m") -> String? {
        ModelField.pinned(Array(body.utf8), to: name).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func replacesOnlyTheTopLevelModel() throws {
        #expect(pinned(#"{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}"#) == #"{"model": "org/m", "messages": [{"role": "user", "content": "hi"}]}"#)
        // A "model" inside a nested object or a string is not the field.
        let nested = #"{"messages": [{"model": "x", "content": "say \"model\": \"y\""}], "stream": true, "model": null}"#
        let out = try #require(pinned(nested))
        #expect(out == #"{"messages": [{"model": "x", "content": "say \"model\": \"y\""}], "stream": true, "model": "org/m"}"#)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(object["model"] as? String == "org/m")
        #expect(object["stream"] as? Bool == true)
        // Numbers, nested objects, odd spacing.
        #expect(pinned("{ \"n\" : 1.5e3 ,\n\t\"model\"\t:\t{\"a\": [1, {\"b\": \"}\"}]} , \"z\": false }") == "{ \"n\" : 1.5e3 ,\n\t\"model\"\t:\t\"org/m\" , \"z\": false }")
    }

    @Test func addsAMissingModelAndRefusesWhatIsNotAnObject() throws {
        #expect(pinned("{}") == #"{"model":"org/m"}"#)
        #expect(pinned(" { } ") == #" {"model":"org/m" } "#)
        let added = try #require(pinned(#"{"messages": []}"#))
        #expect(added == #"{"model":"org/m","messages": []}"#)
        #expect((try JSONSerialization.jsonObject(with: Data(added.utf8)) as? [String: Any])?["model"] as? String == "org/m")
        for bad in ["", "[]", "\"model\"", "{\"model\" \"x\"}", "{\"model\": \"x\"", "{\"a\": 1,", "{model: 1}"] {
            #expect(pinned(bad) == nil, "\(bad)")
        }
        // Names are written as JSON strings.
        #expect(pinned(#"{"model": 1}"#, "a\"b\\c") == #"{"model": "a\"b\\c"}"#)
    }

    @Test func readsTheModelName() {
        func model(_ body: String) -> String? {
            if case .found(let location) = ModelField.scan(Array(body.utf8)) { return location.string }
            return nil
        }
        #expect(model(#"{"messages": [{"model": "no"}], "model": "acme/llm"}"#) == "acme/llm")
        #expect(model(#"{"model": "acme\/llm\u0021"}"#) == "acme/llm!")
        #expect(model(#"{"model": 7}"#) == nil)
        #expect(model(#"{"messages": []}"#) == nil)
    }
}
