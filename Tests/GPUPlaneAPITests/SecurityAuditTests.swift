import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

/// Host admission and the audit trail through the live api-server (issue 17, Security):
/// manifests asking for host access are refused at the field, with line and column, and write
/// nothing; every mutating route of the OpenAPI document leaves an audit line, refused calls
/// included; no audit line, log line (at trace level), event or error answer holds a secret
/// value or a token.
@Suite(.timeLimit(.minutes(5))) struct SecurityAuditTests {
    // MARK: Host admission

    /// One way a user might ask for host access, as pod fields at line 6, column 5.
    struct HostAsk: Sendable {
        var yaml: String
        var key: String
    }

    static let podAsks: [HostAsk] = [
        HostAsk(yaml: "privileged: true", key: "privileged"),
        HostAsk(yaml: "securityContext: {privileged: true}", key: "securityContext"),
        HostAsk(yaml: "securityContext:\n      allowPrivilegeEscalation: true\n      runAsUser: 0", key: "securityContext"),
        HostAsk(yaml: "hostNetwork: true", key: "hostNetwork"),
        HostAsk(yaml: "host_network: true", key: "host_network"),
        HostAsk(yaml: "network_mode: host", key: "network_mode"),
        HostAsk(yaml: "hostPID: true", key: "hostPID"),
        HostAsk(yaml: "pid: host", key: "pid"),
        HostAsk(yaml: "hostIPC: true", key: "hostIPC"),
        HostAsk(yaml: "volumes: [{name: root, hostPath: {path: /}}]", key: "volumes"),
        HostAsk(yaml: "volumes:\n      - hostPath: /var/run/docker.sock", key: "volumes"),
        HostAsk(yaml: "volumeMounts: [{name: root, mountPath: /host}]", key: "volumeMounts"),
        HostAsk(yaml: "hostPath: /etc", key: "hostPath"),
        HostAsk(yaml: "mounts: [\"/:/host\"]", key: "mounts"),
        HostAsk(yaml: "capabilities: {add: [SYS_ADMIN]}", key: "capabilities"),
        HostAsk(yaml: "cap_add: [SYS_ADMIN, NET_ADMIN]", key: "cap_add"),
        HostAsk(yaml: "devices: [/dev/mem]", key: "devices"),
        HostAsk(yaml: "security_opt: [\"seccomp=unconfined\"]", key: "security_opt"),
    ]

    /// The keys of `tenant`'s objects in etcd with their revisions: what a refusal must leave alone.
    static func tenantKeys(_ h: Harness, _ tenant: String) async throws -> [String: Int64] {
        try await h.snapshot().filter { $0.key.contains("/\(tenant)/") || $0.key.hasSuffix("/\(tenant)") }
    }

    @Test func hostAccessIsRefusedAtTheFieldWithNothingWritten() async throws {
        let h = try await SharedServer.shared.get()
        let (tenant, token) = try await h.tenant(.enterprise)
        let before = try await Self.tenantKeys(h, tenant)

        for (index, ask) in Self.podAsks.enumerated() {
            let manifest = "application:\n  name: host-\(index)\n  pods:\n  - name: api\n    image: busybox\n    \(ask.yaml)\n"
            for route in ["/v1/applications", "/v1/validate"] {
                let reply = try await h.call("POST", route, token: token, body: manifest)
                let finding = try #require(
                    (reply.json["diagnostics"] as? [[String: Any]] ?? reply.json["details"] as? [[String: Any]] ?? [])
                        .first { $0["code"] as? String == "hostAccessForbidden" },
                    "\(ask.yaml) through \(route): \(reply.text)")
                #expect(finding["path"] as? String == "application.pods[0].\(ask.key)", "\(finding)")
                #expect(finding["line"] as? Int == 6 && finding["column"] as? Int == 5, "\(ask.yaml): \(finding)")
                #expect((finding["message"] as? String)?.contains("'\(ask.key)'") == true, "\(finding)")
                if route == "/v1/applications" {
                    #expect(reply.status == 422, "\(ask.yaml): \(reply.text)")
                    #expect(reply.errorCode == "invalid")
                    #expect(reply.error["field"] as? String == "application.pods[0].\(ask.key)", "\(reply.text)")
                    #expect(reply.error["line"] as? Int == 6 && reply.error["column"] as? Int == 5, "\(reply.text)")
                } else {
                    #expect(reply.status == 200 && reply.json["valid"] as? Bool == false, "\(reply.text)")
                }
            }
        }

        // At the application's level, in JSON, and in a deployment body.
        let appLevel = "application:\n  name: host-app\n  hostNetwork: true\n  pods:\n  - name: api\n    image: busybox\n"
        let refusedApp = try await h.call("POST", "/v1/applications", token: token, body: appLevel)
        #expect(refusedApp.status == 422 && refusedApp.error["field"] as? String == "application.hostNetwork", "\(refusedApp.text)")
        #expect(refusedApp.error["line"] as? Int == 3 && refusedApp.error["column"] as? Int == 3, "\(refusedApp.text)")
        let json = #"{"application": {"name": "host-json", "pods": [{"name": "api", "image": "busybox", "privileged": true}]}}"#
        let refusedJSON = try await h.call("POST", "/v1/applications", token: token, body: json)
        #expect(refusedJSON.status == 422 && refusedJSON.error["field"] as? String == "application.pods[0].privileged", "\(refusedJSON.text)")
        #expect(refusedJSON.error["line"] as? Int == 1 && refusedJSON.error["column"] != nil, "\(refusedJSON.text)")
        let deployment = #"{"model_name": "host-model", "gpu": "A100-80GB", "max_batch_size": 8, "hf": {"repo": "meta-llama/Llama-2-7b-chat-hf"}, "privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}}"#
        let refusedDeployment = try await h.call("POST", "/v1/deployments", token: token, body: deployment)
        #expect(refusedDeployment.status == 422, "\(refusedDeployment.text)")
        let deploymentCodes = (refusedDeployment.json["details"] as? [[String: Any]] ?? []).filter { $0["code"] as? String == "hostAccessForbidden" }
        #expect(Set(deploymentCodes.compactMap { $0["path"] as? String }) == ["privileged", "capabilities"], "\(refusedDeployment.text)")

        // Nothing of the tenant's was written or touched.
        #expect(try await Self.tenantKeys(h, tenant) == before)
        #expect(try await h.call("GET", "/v1/applications", token: token).items.isEmpty)
        #expect(try await h.call("GET", "/v1/deployments", token: token).items.isEmpty)
        // The same pod without the host field is admitted: the refusal is the field's.
        let clean = "application:\n  name: host-0\n  pods:\n  - name: api\n    image: busybox\n"
        #expect(try await h.call("POST", "/v1/applications", token: token, body: clean).status == 201)
    }

    // MARK: Audit

    /// Mutating routes that are data, not changes to the cluster, and carry no audit line by
    /// design (``AuthMiddleware``): application traffic, inference calls. Everything else does.
    static let dataPlanePrefixes = ["/apps/", "/v1/inference/", "/v1/openai/"]

    /// Every POST, PUT, PATCH and DELETE the served OpenAPI document names, with a concrete
    /// path for `tenant` whose last segments are unique to `tag`.
    static func mutatingRoutes(_ h: Harness, tenant: String, tag: String) async throws -> [(method: String, template: String, path: String)] {
        let document = try #require(try JSONSerialization.jsonObject(with: try await h.call("GET", "/openapi.json").body) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: Any])
        var routes: [(String, String, String)] = []
        for (template, item) in paths.sorted(by: { $0.key < $1.key }) {
            for method in ["post", "put", "patch", "delete"] where (item as? [String: Any])?[method] != nil {
                var path = template
                for parameter in ["tenant"] { path = path.replacingOccurrences(of: "{\(parameter)}", with: tenant) }
                // Every other parameter gets a name of this test's (a DNS label, so it reaches the route).
                while let open = path.firstIndex(of: "{"), let close = path[open...].firstIndex(of: "}") {
                    path.replaceSubrange(open...close, with: "audit-\(tag)")
                }
                routes.append((method.uppercased(), template, path))
            }
        }
        return routes
    }

    @Test(.enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func everyMutatingRouteLeavesAnAuditLineRefusedOrNot() async throws {
        let h = try await SharedServer.shared.get()
        try await JournaldFixture.shared.ensureRunning()
        let (tenant, token) = try await h.tenant(.scale)
        let tag = UUID().uuidString.prefix(8).lowercased()
        let routes = try await Self.mutatingRoutes(h, tenant: tenant, tag: tag)
        #expect(routes.count >= 25, "the document names \(routes.count) mutating routes")
        #expect(routes.contains { $0.method == "POST" && $0.template == "/v1/applications" })
        #expect(routes.contains { $0.method == "PATCH" && $0.template == "/v1/tenants/{name}" })

        // Each route twice: with the tenant's token (a body that may be refused) and with none (401).
        var statuses: [String: (withToken: Int, without: Int)] = [:]
        for route in routes {
            let authorized = try await h.call(route.method, route.path, token: token, body: "{}")
            let anonymous = try await h.call(route.method, route.path + "?anonymous=1", body: "{}")
            statuses["\(route.method) \(route.template)"] = (authorized.status, anonymous.status)
        }
        let audited = routes.filter { route in !Self.dataPlanePrefixes.contains { route.path.hasPrefix($0) } }
        var entries: [JournalEntry] = []
        // A user's line is this tenant's: other tests of the shared server call the routes
        // whose path names no object (POST /v1/applications) with their own tenants meanwhile.
        func line(_ method: String, _ path: String, role: String) -> JournalEntry? {
            entries.first {
                $0["GPUPLANE_AUDIT_METHOD"] == method && $0["GPUPLANE_AUDIT_PATH"] == path && $0["GPUPLANE_AUDIT_ROLE"] == role
                    && (role != "user" || $0["GPUPLANE_AUDIT_TENANT"] == tenant)
            }
        }
        try await eventually("an audit line for each of \(audited.count) routes, with and without a token", timeout: 60) {
            entries = try await JournaldFixture.shared.entries(identifier: h.auditIdentifier)
            return audited.allSatisfy { line($0.method, $0.path, role: "user") != nil && line($0.method, $0.path, role: "anonymous") != nil }
        }
        for route in audited {
            let key = "\(route.method) \(route.template)"
            let user = try #require(line(route.method, route.path, role: "user"))
            #expect(user["GPUPLANE_AUDIT_TENANT"] == tenant, "\(key)")
            #expect(user["GPUPLANE_AUDIT_TOKEN"]?.hasPrefix("tok-") == true, "\(key)")
            #expect(user["GPUPLANE_AUDIT_STATUS"] == statuses[key].map { "\($0.withToken)" }, "\(key): \(user)")
            let anonymous = try #require(line(route.method, route.path, role: "anonymous"))
            #expect(anonymous["GPUPLANE_AUDIT_STATUS"] == "401" && statuses[key]?.without == 401, "\(key): \(anonymous)")
            #expect(anonymous["GPUPLANE_AUDIT_TOKEN"] == "-" && anonymous["GPUPLANE_AUDIT_TENANT"] == "-")
        }
        // The refused ones are there too: most of these calls were refused (403 for admin and
        // node routes, 404 for names that do not exist, 4xx for the empty bodies).
        let refused = audited.filter { (statuses["\($0.method) \($0.template)"]?.withToken ?? 0) >= 400 }
        #expect(refused.count >= audited.count / 2, "\(statuses)")
        // The data plane is exactly what carries none (application and inference traffic).
        let exempt = Set(routes.filter { route in Self.dataPlanePrefixes.contains { route.path.hasPrefix($0) } }.map(\.template))
        #expect(exempt == ["/apps/{tenant}/{app}/{path}", "/v1/inference/{tenant}/{slug}/{key}/v1/{path}", "/v1/openai/{path}"], "\(exempt)")
        for route in routes where exempt.contains(route.template) {
            #expect(!entries.contains { $0["GPUPLANE_AUDIT_PATH"] == route.path }, "\(route.method) \(route.path) is data, not audited")
        }
    }

    // MARK: Secrets and tokens never logged

    @Test(.enabled(if: JournaldFixture.isAvailable, "needs journald or root to start one"))
    func noLogLineAuditLineEventOrErrorHoldsASecretOrAToken() async throws {
        let shared = try await SharedServer.shared.get()
        try await JournaldFixture.shared.ensureRunning()
        // An api-server of this test's, logging everything (trace) to journald under its own tag.
        let identifier = "gpuplane-api-secrets-\(UUID().uuidString.prefix(8).lowercased())"
        let logger = Logger(label: "gpuplane.api") {
            JournaldLogHandler(label: $0, identifier: identifier, level: .trace, fallback: LogLineSink { _ in })
        }
        var deps = APIDependencies(
            store: try ResourceStore.connect(endpoints: shared.etcd.endpoints), catalog: try Catalog.standard(),
            adminTokens: [shared.admin], heartbeatTTL: 3, bookmarkInterval: 0.5, logger: logger)
        deps.secretKeys = try SecretKeyring.load(path: try TestEnvironment.secretKeyFile().path)
        let server = try await startAPIServer(deps)
        defer { server.task.cancel() }
        let h = Harness(base: server.base, admin: shared.admin, etcd: shared.etcd, client: shared.client, deps: deps, auditIdentifier: identifier)
        try await eventually("api-server answers /healthz") { try await h.call("GET", "/healthz").status == 200 }

        let marker = "s3cr3t-marker-" + UUID().uuidString
        let password = "pw-marker-" + UUID().uuidString
        let replaced = "s3cr3t-marker-" + UUID().uuidString
        let guessed = "gp_guess" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        let (tenant, token) = try await h.tenant(.scale)
        var answers: [Reply] = []
        /// A call whose answer must hold none of the values (those that issue a token or hand a
        /// node its replica's values are made with `h.call`).
        func call(_ method: String, _ path: String, token: String?, body: String? = nil) async throws -> Reply {
            let reply = try await h.call(method, path, token: token, body: body)
            answers.append(reply)
            return reply
        }
        #expect(try await call("POST", "/v1/secrets", token: token, body: #"{"name": "db-url", "data": {"url": "\#(marker)"}}"#).status == 201)
        #expect(
            try await call(
                "POST", "/v1/secrets", token: token,
                body: #"{"name": "regcred", "type": "registry", "registry": "127.0.0.1:5000", "username": "bot", "password": "\#(password)"}"#
            ).status == 201)
        // Refused writes that carry a value: a bad name, a bad key, a taken name, a stale version.
        #expect(try await call("POST", "/v1/secrets", token: token, body: #"{"name": "Bad Name!", "data": {"url": "\#(marker)"}}"#).status / 100 == 4)
        #expect(try await call("POST", "/v1/secrets", token: token, body: #"{"name": "other", "data": {"bad key!": "\#(marker)"}}"#).status / 100 == 4)
        #expect(try await call("POST", "/v1/secrets", token: token, body: #"{"name": "db-url", "data": {"url": "\#(marker)"}}"#).status == 409)
        #expect(try await call("PUT", "/v1/secrets/db-url?resourceVersion=1", token: token, body: #"{"data": {"url": "\#(replaced)"}}"#).status == 409)
        #expect(try await call("POST", "/v1/secrets", token: token, body: #"{"name": "broken", "data": {"url": "\#(marker)""#).status / 100 == 4)
        #expect(try await call("PUT", "/v1/secrets/db-url", token: token, body: #"{"data": {"url": "\#(replaced)"}}"#).status == 200)
        // An application whose var names the secret, and the node it is bound to reading it.
        let manifest = "application:\n  name: web\n  pods:\n  - name: api\n    image: 127.0.0.1:5000/app:1\n    vars:\n      DATABASE_URL: {secret: db-url}\n"
        #expect(try await call("POST", "/v1/applications", token: token, body: manifest).status == 201)
        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let issued = try await h.call("POST", "/v1/tokens", token: h.admin, body: #"{"role": "node", "node": "\#(node)"}"#)
        let nodeToken = try #require(issued.json["token"] as? String)
        var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: "web.api")
        replica.binding = Binding(node: node, gpuIndices: [])
        _ = try await h.deps.store.update(replica)
        let runtime = try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: nodeToken)
        #expect(runtime.status == 200 && runtime.text.contains(replaced), "the bound node gets the value: \(runtime.status)")
        // Tokens: a second user token, revoked; a guessed one; one in the wrong place.
        let second = try await h.call("POST", "/v1/tokens", token: h.admin, body: #"{"tenant": "\#(tenant)", "role": "user"}"#)
        let secondToken = try #require(second.json["token"] as? String)
        let secondID = try #require(second.json["id"] as? String)
        #expect(try await call("GET", "/v1/applications", token: secondToken).status == 200)
        #expect(try await call("DELETE", "/v1/tokens/\(secondID)", token: h.admin).status / 100 == 2)
        #expect(try await call("GET", "/v1/applications", token: secondToken).status == 401)
        #expect(try await call("POST", "/v1/applications", token: guessed, body: manifest).status == 401)
        #expect(try await call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: token).status == 403)
        // An inference URL's key.
        let key = try await InferenceKeys(store: h.deps.store).key(tenant: tenant, slug: "llama-3.1-8b")
        _ = try await h.call("POST", "/v1/inference/\(tenant)/llama-3.1-8b/\(key)/v1/chat/completions", token: nil, body: #"{"model": "llama-3.1-8b"}"#)
        #expect(try await call("DELETE", "/v1/secrets/regcred", token: token).status / 100 == 2)
        // Events, as the tenant and the admin see them.
        _ = try await call("GET", "/v1/events", token: token)
        _ = try await call("GET", "/v1/events?tenant=\(tenant)", token: h.admin)

        let forbidden = [marker, password, replaced, guessed, token, secondToken, nodeToken, h.admin, key]
        for answer in answers {
            for value in forbidden {
                #expect(!answer.text.contains(value), "an answer holds a secret or token: \(answer.text.prefix(300))")
            }
        }
        var entries: [JournalEntry] = []
        try await eventually("this server's audit lines, the last one included", timeout: 60) {
            entries = try await JournaldFixture.read(arguments: ["-t", identifier])
            return entries.contains { $0["GPUPLANE_AUDIT_PATH"] == "/v1/secrets/regcred" && $0["GPUPLANE_AUDIT_METHOD"] == "DELETE" }
        }
        #expect(entries.contains { $0["GPUPLANE_AUDIT_PATH"] == "/v1/secrets" && $0["GPUPLANE_AUDIT_STATUS"] == "422" }, "refused writes are audited")
        #expect(entries.contains { $0["GPUPLANE_AUDIT_ROLE"] == "anonymous" && $0["GPUPLANE_AUDIT_STATUS"] == "401" })
        #expect(entries.contains { $0["GPUPLANE_AUDIT_METHOD"] == nil }, "log lines besides audit lines were captured")
        for entry in entries {
            let values = entry.fields.values.flatMap { $0 }
            for value in forbidden {
                #expect(!values.contains { $0.contains(value) }, "a journal line holds a secret or token: \(entry)")
            }
        }
        print("checked \(entries.count) journal lines and \(answers.count) answers for \(forbidden.count) secrets and tokens")
    }
}
