import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

@Suite(.timeLimit(.minutes(5))) struct ApplicationAPITests {
    @Test func applyGetListDeleteRoundTrip() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.scale)
        let created = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(created.status == 201, "\(created.text)")
        let version = try #require(created.resourceVersion)
        let got = try await h.call("GET", "/v1/applications/my-chat-backend", token: token)
        #expect(got.status == 200)
        #expect(got.resourceVersion == version)
        let meta = got.json["metadata"] as? [String: Any]
        #expect(meta?["tenant"] as? String == tenant)
        // The replica was written in the same transaction.
        let replicas = try await h.call("GET", "/v1/replicas", token: token)
        #expect(replicas.items.count == 1)
        let spec = replicas.items.first?["spec"] as? [String: Any]
        #expect(spec?["modelSlug"] as? String == "llama-3.3-70b")
        #expect(spec?["gpus"] as? Int == 1)
        let list = try await h.call("GET", "/v1/applications", token: token)
        #expect(list.items.count == 1)
        let deleted = try await h.call("DELETE", "/v1/applications/my-chat-backend", token: token)
        #expect(deleted.status == 204)
        #expect(try await h.call("GET", "/v1/applications/my-chat-backend", token: token).status == 404)
        #expect(try await h.call("GET", "/v1/replicas", token: token).items.isEmpty)
        #expect(try await h.call("DELETE", "/v1/applications/my-chat-backend", token: token).status == 404)
    }

    @Test func reapplyIsIdempotentAndUpdatesChangeVersions() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let first = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        let again = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(again.status == 200)
        #expect(again.resourceVersion == first.resourceVersion)
        let changed = chatBackend.replacingOccurrences(of: "priority: inference", with: "priority: interactive")
        let updated = try await h.call("POST", "/v1/applications", token: token, body: changed)
        #expect(updated.status == 200)
        #expect(updated.resourceVersion != first.resourceVersion)
        let replica = try #require(try await h.call("GET", "/v1/replicas", token: token).items.first)
        #expect((replica["spec"] as? [String: Any])?["priority"] as? String == "interactive")
        // JSON manifests are accepted too.
        let json = #"{"application": {"name": "j", "pods": [{"name": "a", "image": "x:1"}]}}"#
        #expect(try await h.call("POST", "/v1/applications", token: token, body: json, headers: ["Content-Type": "application/json"]).status == 201)
    }

    /// A tenant that mostly re-applies switches to reading first (``ApplyHistory``); the
    /// answers stay those of create-first: 200 and the same version when unchanged, a new
    /// version when changed, 201 for a name deleted meanwhile, one winner among concurrent
    /// first applies of a new name and 200 for the rest.
    @Test func manyReappliesReadFirstWithTheSameAnswers() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let first = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(first.status == 201)
        for _ in 0..<8 {
            let again = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
            #expect(again.status == 200 && again.resourceVersion == first.resourceVersion)
        }
        let changed = chatBackend.replacingOccurrences(of: "priority: inference", with: "priority: interactive")
        let updated = try await h.call("POST", "/v1/applications", token: token, body: changed)
        #expect(updated.status == 200 && updated.resourceVersion != first.resourceVersion)
        #expect(try await h.call("DELETE", "/v1/applications/my-chat-backend", token: token).status == 204)
        let recreated = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(recreated.status == 201)
        let replicas = try await h.call("GET", "/v1/replicas", token: token).items
        #expect(replicas.count == 1)
        // Concurrent first applies of a new name, while the tenant still reads first.
        let fresh = chatBackend.replacingOccurrences(of: "name: my-chat-backend", with: "name: fresh")
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<6 { group.addTask { try await h.call("POST", "/v1/applications", token: token, body: fresh).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.sorted() == [200, 200, 200, 200, 200, 201], "\(statuses)")
    }

    @Test func staleVersionsAreConflicts() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let first = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        let stale = try #require(first.resourceVersion)
        let changed = chatBackend.replacingOccurrences(of: "v1", with: "v2")
        #expect(try await h.call("POST", "/v1/applications", token: token, body: changed, headers: ["If-Match": stale]).status == 200)
        let conflict = try await h.call("POST", "/v1/applications", token: token, body: chatBackend, headers: ["If-Match": stale])
        #expect(conflict.status == 409)
        #expect(conflict.errorCode == "conflict")
        let delete = try await h.call("DELETE", "/v1/applications/my-chat-backend?resourceVersion=\(stale)", token: token)
        #expect(delete.status == 409)
        #expect(try await h.call("GET", "/v1/applications/my-chat-backend", token: token).status == 200)
    }

    @Test(arguments: [
        (Plan.free, "llama-3.1-8b", "Pro"), (Plan.pro, "llama-3.3-70b", "Scale"), (Plan.pro, "qwen-2.5-14b", "Scale"),
        (Plan.scale, "custom", "Enterprise"),
    ])
    func entitlementRefusalsNameThePlan(plan: Plan, model: String, needed: String) async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(plan)
        let memory = model == "custom" ? ", memoryGB: 96" : ""
        let before = try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant))
        let reply = try await h.call("POST", "/v1/applications", token: token, body: app("x", pods: "  - {name: a, image: x, gpu: {enabled: true, model: \(model)\(memory)}}\n"))
        #expect(reply.status == 403)
        #expect(reply.errorCode == "forbidden")
        #expect(reply.errorMessage.contains("needs the \(needed) plan"))
        #expect(reply.error["field"] as? String == "application.pods[0].gpu.model")
        #expect(reply.error["line"] as? Int == 4)
        #expect(try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant)) == before)
    }

    @Test func perUserGPULimitCountsWhatIsAlreadyHeld() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.enterprise)
        let three = app("big", pods: "  - {name: a, image: x, gpu: {enabled: true, model: custom, memoryGB: 80, count: 3}}\n")
        #expect(try await h.call("POST", "/v1/applications", token: token, body: three).status == 201)
        let two = app("more", pods: "  - {name: a, image: x, gpu: {enabled: true, model: llama-3.3-70b}}\n  - {name: b, image: x, gpu: {enabled: true, model: llama-3.3-70b}}\n")
        let refused = try await h.call("POST", "/v1/applications", token: token, body: two)
        #expect(refused.status == 403)
        #expect(refused.errorMessage.contains("3 of your limit of 4"))
        // Re-applying the first one at the same size does not count itself twice.
        #expect(try await h.call("POST", "/v1/applications", token: token, body: three.replacingOccurrences(of: "image: x", with: "image: y")).status == 200)
    }

    /// Applies of one single-GPU application per name, all sent at once; their statuses.
    static func oneGPUAppliesAtOnce(_ h: Harness, token: String, names: [String]) async throws -> [Int] {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for name in names {
                group.addTask {
                    let one = app(name, pods: "  - {name: a, image: x, gpu: {enabled: true, model: custom, memoryGB: 80}}\n")
                    return try await h.call("POST", "/v1/applications", token: token, body: one).status
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
    }

    /// Eight concurrent applies of one GPU each against a limit of 4: each fits alone, so only
    /// the guard on the tenant's admission marker keeps the fifth from committing.
    @Test func concurrentAppliesNeverPassTheGPULimit() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.enterprise, gpuLimit: 4)
        let statuses = try await Self.oneGPUAppliesAtOnce(h, token: token, names: (0..<8).map { "race\($0)" })
        #expect(statuses.filter { $0 == 201 }.count == 4, "\(statuses)")
        #expect(statuses.filter { $0 == 403 }.count == 4, "\(statuses)")
        let held = ReplicaPlanner.wholeGPUs(try await h.deps.store.list(Replica.self, tenant: tenant).items)
        #expect(held == 4)
    }

    /// Twelve concurrent GPU applies of one tenant on one api-server take turns: each is
    /// decided on a read made after the one before committed, so none loses the marker's
    /// compare-and-swap and reads again (without turns, all twelve read at once and eleven
    /// race, n²/2 round trips for a burst of n).
    @Test func aTenantsConcurrentAppliesTakeTurns() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.enterprise, gpuLimit: 64)
        let racesBefore = h.deps.admissionRaceCount
        let statuses = try await Self.oneGPUAppliesAtOnce(h, token: token, names: (0..<12).map { "turn\($0)" })
        #expect(statuses == Array(repeating: 201, count: 12), "\(statuses)")
        #expect(h.deps.admissionRaceCount == racesBefore, "a GPU admission raced another of this api-server")
        #expect(ReplicaPlanner.wholeGPUs(try await h.deps.store.list(Replica.self, tenant: tenant).items) == 12)
    }

    @Test func badInputGetsAClearErrorAndWritesNothing() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.scale)
        let before = try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant))
        let syntax = try await h.call("POST", "/v1/applications", token: token, body: "application:\n  name: x\n  pods: [unclosed\n")
        #expect(syntax.status == 400)
        #expect(syntax.error["line"] != nil)
        let rule = try await h.call("POST", "/v1/applications", token: token, body: app("x", pods: "  - {name: a, image: x, gpu: {model: llama-3.1-8b}}\n"))
        #expect(rule.status == 422)
        #expect(rule.error["field"] as? String == "application.pods[0].gpu.enabled")
        #expect(rule.errorMessage.contains("gpu.enabled: true is required"))
        let big = try await h.call("POST", "/v1/applications", token: token, data: Data(repeating: 0x61, count: 3 << 20))
        #expect(big.status == 413)
        #expect(big.errorCode == "too_large")
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + (1...9).map { "a\($0): &a\($0) [" + Array(repeating: $0 == 1 ? "*a" : "*a\($0 - 1)", count: 10).joined(separator: ",") + "]" }.joined(separator: "\n")
        #expect(try await h.call("POST", "/v1/applications", token: token, body: bomb).status == 400)
        #expect(try await h.call("POST", "/v1/applications", token: token, data: Data([0xff, 0xfe, 0x41])).status == 400)
        let deployment = "deployment:\n  model_name: m\n  gpu: H100\n  max_batch_size: 1\n  hf: {repo: a/b}\n"
        #expect(try await h.call("POST", "/v1/applications", token: token, body: deployment).status == 422)
        #expect(try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant)) == before)
    }

    @Test func validateIsADryRunWithCLILines() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        let before = try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant))
        let reply = try await h.call("POST", "/v1/validate?file=app.yaml", token: token, body: chatBackend)
        #expect(reply.status == 200)
        #expect(reply.json["valid"] as? Bool == false)
        let lines = reply.json["lines"] as? [String] ?? []
        #expect(lines.first?.hasPrefix("app.yaml:10:14: error: application.pods[0].gpu.model: ") == true, "\(lines)")
        #expect(try await h.snapshot(prefix: GPUPlaneCore.Application.storagePrefix(tenant: tenant)) == before)
    }

    @Test func authenticationAndTenantIsolation() async throws {
        let h = try await SharedServer.shared.get()
        let (_, alice) = try await h.tenant(.scale)
        let (_, bob) = try await h.tenant(.scale)
        #expect(try await h.call("POST", "/v1/applications", token: alice, body: chatBackend).status == 201)
        let anonymous = try await h.call("GET", "/v1/applications")
        #expect(anonymous.status == 401)
        #expect(anonymous.headers["www-authenticate"] == "Bearer")
        #expect(try await h.call("GET", "/v1/applications", token: "gp_nonsense").status == 401)
        // Bob sees nothing of Alice's: 404, never 403.
        #expect(try await h.call("GET", "/v1/applications/my-chat-backend", token: bob).status == 404)
        #expect(try await h.call("DELETE", "/v1/applications/my-chat-backend", token: bob).status == 404)
        #expect(try await h.call("GET", "/v1/applications", token: bob).items.isEmpty)
        #expect(try await h.call("GET", "/v1/replicas", token: bob).items.isEmpty)
        // Users can't act for another tenant or reach admin routes.
        #expect(try await h.call("GET", "/v1/tenants", token: bob).status == 403)
        #expect(try await h.call("GET", "/v1/applications/my-chat-backend", token: alice).status == 200)
        // Public routes need no token.
        #expect(try await h.call("GET", "/healthz").status == 200)
        #expect(try await h.call("GET", "/readyz").status == 200)
        #expect(try await h.call("GET", "/metrics").status == 200)
    }

    @Test func mutatingRequestsLeaveAnAuditLineInJournald() async throws {
        let h = try await SharedServer.shared.get()
        try await JournaldFixture.shared.ensureRunning()
        let (tenant, token) = try await h.tenant(.scale)
        #expect(try await h.call("POST", "/v1/applications", token: token, body: chatBackend).status == 201)
        var found: JournalEntry?
        try await eventually("audit line in journald") {
            let entries = try await JournaldFixture.shared.entries(identifier: h.auditIdentifier)
            found = entries.first { $0["GPUPLANE_AUDIT_TENANT"] == tenant && $0["GPUPLANE_AUDIT_PATH"] == "/v1/applications" }
            return found != nil
        }
        let entry = try #require(found)
        #expect(entry["GPUPLANE_AUDIT_METHOD"] == "POST")
        #expect(entry["GPUPLANE_AUDIT_STATUS"] == "201")
        #expect(entry["GPUPLANE_AUDIT_ROLE"] == "user")
        // The secret never appears; only the token's public id.
        #expect(entry["GPUPLANE_AUDIT_TOKEN"]?.hasPrefix("tok-") == true)
        #expect(!entry.fields.values.flatMap { $0 }.contains { $0.contains(token) })
    }

    @Test func everyRouteIsInTheOpenAPIDocument() async throws {
        let h = try await SharedServer.shared.get()
        let (_, table) = buildRouter(h.deps)
        let served = try await h.call("GET", "/openapi.json")
        #expect(served.status == 200)
        let paths = try #require(served.json["paths"] as? [String: [String: Any]])
        for route in table.routes {
            #expect(paths[route.path]?[route.method.lowercased()] != nil, "\(route.method) \(route.path) is missing from openapi.json")
        }
        #expect(table.routes.count >= 30)
    }
}
