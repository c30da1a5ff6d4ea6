import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// The API's contract with any client, hostile or careless (issue 12): what a malformed
/// request gets is a 4xx that names what to fix, never a 500, a silent default or a 404 for a
/// route that exists.
@Suite(.timeLimit(.minutes(5))) struct APIContractTests {
    static let deploymentBody =
        #"{"model_name": "m", "gpu": "A100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": 0, "max_instances": 1}}"#

    /// Every resourceVersion a client sends (a body field, `If-Match`, `?resourceVersion=`) is
    /// a whole number from 1 up, or a 400 naming `resourceVersion`: once, "abc" in a tenant
    /// PATCH was a 500 `store error: invalid`, and `DELETE ?resourceVersion=abc` deleted
    /// unconditionally.
    @Test func malformedResourceVersionsAre400NamingTheField() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.scale)
        func expectRefused(_ reply: Reply, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(reply.status == 400, "\(what): \(reply.status) \(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.errorCode == "bad_request", "\(what): \(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.error["field"] as? String == "resourceVersion", "\(what): \(reply.text)", sourceLocation: sourceLocation)
        }
        let bad = ["abc", "-1", "0", "1.5", "9223372036854775808", " 7", "0x10"]
        // A header's surrounding blanks are not part of its value (HTTP trims them).
        let badHeaders = bad.filter { $0.trimmingCharacters(in: .whitespaces) == $0 } + ["\"abc\"", "W/\"7\""]
        for version in bad {
            let body = #"{"gpu_limit": 2, "resourceVersion": "\#(version)"}"#
            expectRefused(try await h.call("PATCH", "/v1/tenants/\(tenant)", token: h.admin, body: body), "PATCH tenant \(version)")
        }
        // What the tenant was is untouched; a right version works, a stale one is 409.
        let current = try await h.call("GET", "/v1/tenants/\(tenant)", token: h.admin)
        #expect(current.json["gpu_limit"] as? Int == 4, "\(current.text)")
        let version = try #require(current.json["resourceVersion"] as? String)
        let patched = try await h.call("PATCH", "/v1/tenants/\(tenant)", token: h.admin, body: #"{"gpu_limit": 3, "resourceVersion": "\#(version)"}"#)
        #expect(patched.status == 200, "\(patched.text)")
        let stale = try await h.call("PATCH", "/v1/tenants/\(tenant)", token: h.admin, body: #"{"gpu_limit": 2, "resourceVersion": "\#(version)"}"#)
        #expect(stale.status == 409, "\(stale.text)")
        expectRefused(
            try await h.call("PATCH", "/v1/tenants/\(tenant)", token: h.admin, body: #"{"gpu_limit": 2}"#, headers: ["If-Match": "abc"]),
            "PATCH tenant If-Match")

        // Applications: If-Match and ?resourceVersion= on apply and delete.
        let created = try await h.call("POST", "/v1/applications", token: token, body: chatBackend)
        #expect(created.status == 201, "\(created.text)")
        for version in bad {
            let escaped = version.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? version
            if badHeaders.contains(version) {
                expectRefused(
                    try await h.call("POST", "/v1/applications", token: token, body: chatBackend, headers: ["If-Match": version]),
                    "apply If-Match \(version)")
            }
            expectRefused(
                try await h.call("POST", "/v1/applications?resourceVersion=\(escaped)", token: token, body: chatBackend),
                "apply ?resourceVersion=\(version)")
            expectRefused(
                try await h.call("DELETE", "/v1/applications/my-chat-backend?resourceVersion=\(escaped)", token: token),
                "delete ?resourceVersion=\(version)")
        }
        // None of those deleted it.
        #expect(try await h.call("GET", "/v1/applications/my-chat-backend", token: token).status == 200)
        for version in badHeaders.suffix(2) {
            expectRefused(
                try await h.call("DELETE", "/v1/applications/my-chat-backend", token: token, headers: ["If-Match": version]),
                "delete If-Match \(version)")
        }
        let appVersion = try #require(created.resourceVersion)
        // A quoted entity tag is the same version; both forms at once must agree.
        let quoted = try await h.call("POST", "/v1/applications", token: token, body: chatBackend, headers: ["If-Match": "\"\(appVersion)\""])
        #expect(quoted.status == 200, "\(quoted.text)")
        expectRefused(
            try await h.call(
                "DELETE", "/v1/applications/my-chat-backend?resourceVersion=\(appVersion)", token: token, headers: ["If-Match": "1"]),
            "If-Match and ?resourceVersion= disagree")
        #expect(try await h.call("DELETE", "/v1/applications/my-chat-backend?resourceVersion=\(appVersion)", token: token).status == 204)

        // Deployments: If-Match on update, ?resourceVersion= on update and delete.
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: Self.deploymentBody).status == 201)
        let settings = #"{"settings": {"min_instances": 0, "max_instances": 2}}"#
        for version in bad {
            let escaped = version.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? version
            if badHeaders.contains(version) {
                expectRefused(
                    try await h.call("PUT", "/v1/deployments/m", token: token, body: settings, headers: ["If-Match": version]),
                    "deployment If-Match \(version)")
            }
            expectRefused(
                try await h.call("PUT", "/v1/deployments/m?resourceVersion=\(escaped)", token: token, body: settings),
                "deployment ?resourceVersion=\(version)")
            expectRefused(
                try await h.call("DELETE", "/v1/deployments/m?resourceVersion=\(escaped)", token: token), "delete deployment \(version)")
        }
        #expect(try await h.call("GET", "/v1/deployments/m", token: token).status == 200)
    }

    /// Behind the routes' own checks, the store's refusal of a request it cannot serve as given
    /// is the client's error, not a 500 `store error: invalid`.
    @Test func aStoreRefusalOfTheRequestIsABadRequest() {
        let error = APIError.from(StoreError(code: .invalid, message: "update without a resourceVersion"), what: "tenant t")
        #expect(error.status.code == 400)
        #expect(error.code == .badRequest)
        #expect(!error.message.contains("update without"), "store internals stay out of answers: \(error.message)")
    }

    /// Routes let store failures through; the answer names the object from the error's key.
    @Test func aStoreFailureNamesItsObject() async throws {
        let missing = APIError.from(StoreError.notFound(.application, key: GPUPlaneCore.Application.storageKey(tenant: "t", name: "web")))
        #expect(missing.status.code == 404 && missing.message == "application web not found", "\(missing.message)")
        let replica = APIError.from(StoreError.conflict("9", kind: .replica, key: Replica.storageKey(tenant: "t", name: "web.api")))
        #expect(replica.status.code == 409 && replica.message.hasPrefix("replica t/web.api was changed"), "\(replica.message)")
        var fence = StoreError(code: .preconditionFailed, message: "condition failed: leadership")
        fence.key = KeySpace.gpuAdmission(tenant: "t")
        fence.failedCondition = "another apply took GPUs"
        let guarded = APIError.from(fence)
        #expect(guarded.status.code == 409 && guarded.message.contains("(another apply took GPUs)"), "\(guarded.message)")
        #expect(!guarded.message.contains("/gpuplane/"), "keys stay out of answers: \(guarded.message)")

        // Through the server: a 404 from the store, in the JSON error body.
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let reply = try await h.call("GET", "/v1/applications/no-such-app", token: token)
        #expect(reply.status == 404 && reply.errorCode == "not_found", "\(reply.text)")
        #expect(reply.errorMessage == "application no-such-app not found", "\(reply.text)")
        let node = try await h.call("GET", "/v1/nodes/no-such-node", token: h.admin)
        #expect(node.status == 404 && node.errorMessage == "node no-such-node not found", "\(node.text)")
    }

    /// A path that exists, asked with a method it does not take, is 405 with `Allow` and the
    /// usual JSON error, not a 404 that says the route does not exist; for every route.
    @Test func otherMethodsOnEveryRouteAre405WithAllow() async throws {
        let h = try await SharedServer.shared.get()
        let (_, table) = buildRouter(h.deps)
        var methodsByPath: [String: Set<String>] = [:]
        for route in table.routes { methodsByPath[route.path, default: []].insert(route.method) }
        // Application URLs (`/apps/…`) are proxied to the application, HEAD and OPTIONS (a
        // CORS preflight) included: there those two are real routes, answered by the pod.
        #expect(
            table.routes.allSatisfy {
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains($0.method) || ($0.path.hasPrefix("/apps/") && ["HEAD", "OPTIONS"].contains($0.method))
            }, "only real routes are listed")
        var checked = 0
        for (path, methods) in methodsByPath.sorted(by: { $0.key < $1.key }) {
            // Parameters filled in (`{path}` is a wildcard: any rest of the path).
            let concrete = path.split(separator: "/").map { $0.hasPrefix("{") ? "x" : String($0) }.joined(separator: "/")
            let allow = Set(methods)
            let options = try await h.call("OPTIONS", "/" + concrete, token: h.admin)
            if methods.contains("OPTIONS") {
                // Forwarded: application x of tenant x does not exist.
                #expect(options.status == 404 && options.errorCode == "not_found", "OPTIONS \(path): \(options.status) \(options.text)")
            } else {
                #expect(options.status == 204, "OPTIONS \(path): \(options.status) \(options.text)")
                #expect(Set((options.headers["allow"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) == allow)
            }
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "TRACE", "QUERY"] where !methods.contains(method) {
                let reply = try await h.call(method, "/" + concrete, token: h.admin)
                checked += 1
                #expect(reply.status == 405, "\(method) \(path): \(reply.status) \(reply.text)")
                let listed = Set((reply.headers["allow"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                #expect(listed == allow, "\(method) \(path): Allow \(reply.headers["allow"] ?? "none"), expected \(allow.sorted())")
                if method != "HEAD" {
                    #expect(reply.errorCode == "method_not_allowed", "\(method) \(path): \(reply.text)")
                    #expect(reply.headers["content-type"] == "application/json")
                }
            }
        }
        #expect(checked > 100)
        // A path that does not exist is still 404, and the real routes still answer.
        #expect(try await h.call("PUT", "/v1/nothing-here", token: h.admin).status == 404)
        #expect(try await h.call("GET", "/v1/tenants", token: h.admin).status == 200)
        #expect(try await h.call("GET", "/v1/openai/models", token: h.admin).status == 200)
        // Without a token a non-public route is 401 first, whatever the method.
        #expect(try await h.call("PUT", "/v1/tenants").status == 401)
        #expect(try await h.call("DELETE", "/healthz").status == 405)
    }

    /// `?watch=` is true or false (or 1 or 0); anything else was taken silently as false.
    @Test func watchMustBeABoolean() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        for value in ["null", "yes", "TRUE", "", "2"] {
            for path in ["/v1/applications", "/v1/deployments", "/v1/replicas", "/v1/events"] {
                let reply = try await h.call("GET", "\(path)?watch=\(value)", token: token)
                #expect(reply.status == 400, "\(path)?watch=\(value): \(reply.status) \(reply.text)")
                #expect(reply.error["field"] as? String == "watch", "\(reply.text)")
            }
        }
        for value in ["false", "0"] {
            let reply = try await h.call("GET", "/v1/applications?watch=\(value)", token: token)
            #expect(reply.status == 200 && reply.json["items"] != nil, "\(reply.text)")
        }
    }

    /// A dry run of nothing is a mistake, not a valid manifest.
    @Test func validateRefusesAnEmptyBody() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        for body in [nil, "", " \n\t\n"] as [String?] {
            let reply = try await h.call("POST", "/v1/validate", token: token, body: body)
            #expect(reply.status == 400, "\(String(describing: body)): \(reply.status) \(reply.text)")
            #expect(reply.errorCode == "bad_request")
            #expect(reply.errorMessage.contains("empty"), "\(reply.text)")
        }
        let valid = try await h.call("POST", "/v1/validate", token: token, body: chatBackend.replacingOccurrences(of: "llama-3.3-70b", with: "phi-3.5-mini"))
        #expect(valid.status == 200, "\(valid.text)")
    }

    /// A key twice in one JSON object, at any depth, is a 400 naming it, not one of the two
    /// taken silently.
    @Test func duplicateJSONKeysAreRefusedAtAnyDepth() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.pro)
        func expectDuplicate(_ reply: Reply, field: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(reply.status == 400, "\(field): \(reply.status) \(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.error["field"] as? String == field, "\(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.errorMessage.contains("twice"), "\(reply.text)", sourceLocation: sourceLocation)
        }
        let name = "d-" + UUID().uuidString.prefix(8).lowercased()
        expectDuplicate(
            try await h.call("POST", "/v1/tenants", token: h.admin, body: #"{"name": "\#(name)", "plan": "pro", "name": "other"}"#), field: "name")
        #expect(try await h.call("GET", "/v1/tenants/\(name)", token: h.admin).status == 404)
        // The same key spelled with an escape is the same key.
        expectDuplicate(
            try await h.call("PATCH", "/v1/tenants/\(tenant)", token: h.admin, body: #"{"gpu_limit": 1, "gpu\u005flimit": 9}"#), field: "gpu_limit")
        expectDuplicate(
            try await h.call("POST", "/v1/tokens", token: h.admin, body: #"{"role": "user", "tenant": "\#(tenant)", "role": "admin"}"#), field: "role")
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: Self.deploymentBody).status == 201)
        expectDuplicate(
            try await h.call(
                "PUT", "/v1/deployments/m", token: token, body: #"{"settings": {"min_instances": 0, "max_instances": 1, "min_instances": 1}}"#),
            field: "settings.min_instances")
        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let nodeToken = try await h.nodeToken(node)
        let registration = #"{"name": "\#(node)", "gpus": [{"index": 0, "uuid": "GPU-a", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}, {"index": 1, "uuid": "GPU-b", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559, "uuid": "GPU-c"}]}"#
        expectDuplicate(try await h.call("POST", "/v1/nodes", token: nodeToken, body: registration), field: "gpus[1].uuid")
        // Bodies read as manifests (applications, deployments) refuse them too.
        let app = #"{"application": {"name": "j", "pods": [{"name": "a", "image": "x:1", "image": "y:2"}]}}"#
        let applied = try await h.call("POST", "/v1/applications", token: token, body: app)
        #expect(applied.status == 400 && applied.errorMessage.contains("twice"), "\(applied.text)")
        let deployment = Self.deploymentBody.replacingOccurrences(of: #""gpu": "A100-80GB""#, with: #""gpu": "A100-80GB", "gpu": "H100-80GB""#)
            .replacingOccurrences(of: #""model_name": "m""#, with: #""model_name": "m2""#)
        let created = try await h.call("POST", "/v1/deployments", token: token, body: deployment)
        #expect(created.status == 400 && created.errorMessage.contains("twice"), "\(created.text)")
    }

    /// One GPU, one entry: a registration with two GPUs of one index or UUID, and a status that
    /// reports one UUID twice, are 422 naming the second, and change nothing.
    @Test func aGPUNamedTwiceIsRefusedNamingTheSecond() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let token = try await h.nodeToken(node)
        func gpu(_ index: Int, _ uuid: String) -> String {
            #"{"index": \#(index), "uuid": "\#(uuid)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}"#
        }
        func register(_ gpus: [String]) async throws -> Reply {
            try await h.call("POST", "/v1/nodes", token: token, body: #"{"name": "\#(node)", "gpus": [\#(gpus.joined(separator: ", "))]}"#)
        }
        func expectRefused(_ reply: Reply, field: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(reply.status == 422, "\(field): \(reply.status) \(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.error["field"] as? String == field, "\(reply.text)", sourceLocation: sourceLocation)
            #expect(reply.errorMessage.contains("twice"), "\(reply.text)", sourceLocation: sourceLocation)
        }
        expectRefused(try await register([gpu(0, "GPU-a"), gpu(1, "GPU-b"), gpu(1, "GPU-c")]), field: "gpus[2].index")
        expectRefused(try await register([gpu(0, "GPU-a"), gpu(1, "GPU-a")]), field: "gpus[1].uuid")
        #expect(try await h.call("GET", "/v1/nodes/\(node)", token: h.admin).status == 404)

        #expect(try await register([gpu(0, "GPU-a"), gpu(1, "GPU-b")]).status == 201)
        let good = #"{"conditions": [], "gpuHealth": [{"uuid": "GPU-a", "healthy": true}, {"uuid": "GPU-b", "healthy": false, "reason": "Xid79"}], "containers": 1}"#
        #expect(try await h.call("PUT", "/v1/nodes/\(node)/status", token: token, body: good).status == 200)
        let before = try await h.call("GET", "/v1/nodes/\(node)", token: h.admin).text
        let twice = #"{"conditions": [], "gpuHealth": [{"uuid": "GPU-b", "healthy": false, "reason": "Xid79"}, {"uuid": "GPU-b", "healthy": true}], "containers": 1}"#
        expectRefused(try await h.call("PUT", "/v1/nodes/\(node)/status", token: token, body: twice), field: "gpuHealth[1].uuid")
        #expect(try await h.call("GET", "/v1/nodes/\(node)", token: h.admin).text == before)
    }

    /// An admin token belongs to no tenant: creating a deployment (or reading usage) without
    /// `?tenant=` says to add it, rather than a bare 403.
    @Test func anAdminWithoutTenantIsToldToAddIt() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, _) = try await h.tenant(.pro)
        let bare = try await h.call("POST", "/v1/deployments", token: h.admin, body: Self.deploymentBody)
        #expect(bare.status == 400, "\(bare.text)")
        #expect(bare.errorMessage.contains("?tenant=<name>"), "\(bare.text)")
        #expect(bare.error["field"] as? String == "tenant")
        let usage = try await h.call("GET", "/v1/usage", token: h.admin)
        #expect(usage.status == 400 && usage.errorMessage.contains("?tenant="), "\(usage.text)")
        let created = try await h.call("POST", "/v1/deployments?tenant=\(tenant)", token: h.admin, body: Self.deploymentBody)
        #expect(created.status == 201, "\(created.text)")
        #expect(created.json["full_name"] as? String == "\(tenant)/m")
    }

    /// The OpenAPI document says what the server always sends (a client generated from it may
    /// rely on it), and a request body holds only what the route takes.
    @Test func theOpenAPIDocumentMarksWhatIsAlwaysSent() async throws {
        let h = try await SharedServer.shared.get()
        let document = try await h.call("GET", "/openapi.json").json
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]])
        func resolved(_ schema: [String: Any]?) -> [String: Any]? {
            guard let ref = schema?["$ref"] as? String else { return schema }
            return schemas[String(ref.split(separator: "/").last ?? "")]
        }
        func required(_ schema: [String: Any]?) -> Set<String> { Set(resolved(schema)?["required"] as? [String] ?? []) }
        func property(_ schema: [String: Any]?, _ name: String) -> [String: Any]? {
            (resolved(schema)?["properties"] as? [String: Any])?[name] as? [String: Any]
        }
        #expect(required(schemas["Tenant"]).isSuperset(of: ["name", "plan", "gpu_limit", "resourceVersion"]))
        #expect(required(property(schemas["Replica"], "status")).isSuperset(of: ["phase", "restarts"]))
        #expect(required(schemas["Replica"]).isSuperset(of: ["metadata", "spec", "status"]))
        #expect(required(property(schemas["Node"], "status")).isSuperset(of: ["conditions", "gpuHealth", "containers"]))
        #expect(required(property(property(schemas["ModelServer"], "status"), "container")).contains("phase"))
        #expect(required(schemas["Metadata"]).isSuperset(of: ["name", "tenant", "uid", "resourceVersion", "labels"]))
        #expect(required(schemas["Deployment"]).isSuperset(of: ["deploy_id", "full_name", "status", "resourceVersion", "settings"]))
        // PATCH /v1/tenants/{name}: the name is the path's; the body has no `name`.
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let patch = try #require(paths["/v1/tenants/{name}"]?["patch"] as? [String: Any])
        let body = ((patch["requestBody"] as? [String: Any])?["content"] as? [String: Any])?["application/json"] as? [String: Any]
        let properties = try #require(resolved(body?["schema"] as? [String: Any])?["properties"] as? [String: Any])
        #expect(properties["name"] == nil)
        #expect(Set(properties.keys) == ["plan", "gpu_limit", "spending_limit_usd", "resourceVersion"])
        let named = try await h.call("PATCH", "/v1/tenants/x", token: h.admin, body: #"{"name": "x"}"#)
        #expect(named.status == 400 && named.error["field"] as? String == "name", "\(named.text)")
    }

    /// Every route of the OpenAPI document but the public ones (health, metrics, the document,
    /// the dashboard's files, inference URLs that carry their own key, application URLs)
    /// refuses a request without a token and one with an unknown token: 401, before anything
    /// else is looked at.
    @Test func everyRouteRefusesMissingAndUnknownTokens() async throws {
        let h = try await SharedServer.shared.get()
        let document = try await h.call("GET", "/openapi.json").json
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        let publicPrefixes = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/ui", "/v1/inference/", "/apps/"]
        var checked = 0
        for (template, operations) in paths.sorted(by: { $0.key < $1.key }) where !publicPrefixes.contains(where: { template.hasPrefix($0) }) {
            // Every path parameter filled with a name nobody has.
            let path = template.split(separator: "/", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("{") ? "no-such-thing" : String($0) }.joined(separator: "/")
            for method in operations.keys.map({ $0.uppercased() }) where ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
                let body = method == "GET" || method == "DELETE" ? nil : "{}"
                let missing = try await h.call(method, path, body: body)
                #expect(missing.status == 401, "\(method) \(path) without a token: \(missing.status) \(missing.text)")
                let unknown = try await h.call(method, path, token: "gp_" + String(repeating: "0", count: 64), body: body)
                #expect(unknown.status == 401, "\(method) \(path) with an unknown token: \(unknown.status) \(unknown.text)")
                checked += 1
            }
        }
        #expect(checked >= 40, "only \(checked) routes checked: the document lost its paths?")
    }
}
