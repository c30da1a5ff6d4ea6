import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// `/v1/secrets` and the replica runtime route against the shared etcd and api-server: values
/// are write-only, sealed at rest, served only to the node a replica is bound to, and never
/// found in an API answer, an audit line or a stored byte.
@Suite struct SecretAPITests {
    /// A value no other test writes, to look for everywhere.
    static func uniqueValue() -> String { "s3cr3t-" + UUID().uuidString + "-postgres://app:pw@db.pod" }

    @Test func createGetListReplaceDeleteWithCompareAndSwap() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let value = Self.uniqueValue()
        let created = try await h.call(
            "POST", "/v1/secrets", token: token, body: #"{"name": "db-url", "data": {"value": "\#(value)", "user": "app"}}"#)
        #expect(created.status == 201, "\(created.text)")
        #expect(!created.text.contains(value))
        let spec = created.json["spec"] as? [String: Any]
        #expect(spec?["type"] as? String == "generic")
        #expect(spec?["keys"] as? [String] == ["user", "value"])
        #expect(created.json["sealed"] == nil)
        let version = try #require(created.resourceVersion)

        // The name is taken.
        let again = try await h.call("POST", "/v1/secrets", token: token, body: #"{"name": "db-url", "data": {"value": "x"}}"#)
        #expect(again.status == 409, "\(again.text)")

        let got = try await h.call("GET", "/v1/secrets/db-url", token: token)
        #expect(got.status == 200)
        #expect(!got.text.contains(value) && got.json["sealed"] == nil)
        let listed = try await h.call("GET", "/v1/secrets", token: token)
        #expect(listed.items.count == 1 && !listed.text.contains(value))

        // Replace: a stale version is refused, the current one taken.
        let newValue = Self.uniqueValue()
        let stale = try await h.call(
            "PUT", "/v1/secrets/db-url?resourceVersion=\(Int(version)! - 1)", token: token, body: #"{"data": {"value": "\#(newValue)"}}"#)
        #expect(stale.status == 409, "\(stale.text)")
        let replaced = try await h.call(
            "PUT", "/v1/secrets/db-url", token: token, body: #"{"data": {"value": "\#(newValue)"}}"#, headers: ["If-Match": "\"\(version)\""])
        #expect(replaced.status == 200, "\(replaced.text)")
        #expect((replaced.json["spec"] as? [String: Any])?["keys"] as? [String] == ["value"])
        #expect(!replaced.text.contains(newValue))
        let staleAgain = try await h.call(
            "PUT", "/v1/secrets/db-url", token: token, body: #"{"resourceVersion": "\#(version)", "data": {"value": "y"}}"#)
        #expect(staleAgain.status == 409, "\(staleAgain.text)")
        #expect(try await h.call("PUT", "/v1/secrets/absent", token: token, body: #"{"data": {"value": "y"}}"#).status == 404)

        // A registry login.
        let registry = try await h.call(
            "POST", "/v1/secrets", token: token,
            body: #"{"name": "hub", "type": "registry", "registry": "https://Registry.Example.com:5000/", "username": "bot", "password": "\#(value)"}"#)
        #expect(registry.status == 201, "\(registry.text)")
        #expect((registry.json["spec"] as? [String: Any])?["registry"] as? String == "registry.example.com:5000")
        #expect(!registry.text.contains(value))

        // Delete; then it is gone.
        #expect(try await h.call("DELETE", "/v1/secrets/db-url", token: token).status == 204)
        #expect(try await h.call("GET", "/v1/secrets/db-url", token: token).status == 404)
        #expect(try await h.call("DELETE", "/v1/secrets/db-url", token: token).status == 404)
    }

    @Test func badBodiesAreRefusedNamingTheField() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let cases: [(String, String)] = [
            (#"{"data": {"value": "x"}}"#, "name"),
            (#"{"name": "Bad_Name", "data": {"value": "x"}}"#, "name"),
            (#"{"name": "a"}"#, "data"),
            (#"{"name": "a", "data": {"no/slash": "x"}}"#, "data"),
            (#"{"name": "a", "type": "registry", "username": "u", "password": "p"}"#, "registry"),
            (#"{"name": "a", "type": "registry", "registry": "r.example.com", "password": "p"}"#, "username"),
            (#"{"name": "a", "type": "registry", "registry": "r.example.com", "username": "u"}"#, "password"),
            (#"{"name": "a", "data": {"v": "x"}, "password": "p"}"#, "password"),
            (#"{"name": "a", "data": {"v": "x"}, "colour": "red"}"#, "colour"),
        ]
        for (body, field) in cases {
            let reply = try await h.call("POST", "/v1/secrets", token: token, body: body)
            #expect((400..<500).contains(reply.status), "\(body): \(reply.text)")
            #expect(reply.error["field"] as? String == field, "\(body): \(reply.text)")
        }
        // Too large.
        let big = String(repeating: "x", count: Secret.maxDataBytes + 1)
        #expect(try await h.call("POST", "/v1/secrets", token: token, body: #"{"name": "big", "data": {"v": "\#(big)"}}"#).status == 422)
    }

    @Test func tenantsNeverSeeEachOthersSecrets() async throws {
        let h = try await SharedServer.shared.get()
        let (alice, aliceToken) = try await h.tenant(.scale)
        let (bob, bobToken) = try await h.tenant(.scale)
        #expect(try await h.call("POST", "/v1/secrets", token: aliceToken, body: #"{"name": "key", "data": {"v": "a"}}"#).status == 201)
        #expect(try await h.call("GET", "/v1/secrets/key", token: bobToken).status == 404)
        #expect(try await h.call("GET", "/v1/secrets", token: bobToken).items.isEmpty)
        #expect(try await h.call("PUT", "/v1/secrets/key", token: bobToken, body: #"{"data": {"v": "b"}}"#).status == 404)
        #expect(try await h.call("DELETE", "/v1/secrets/key", token: bobToken).status == 404)
        // Bob may use the same name for his own.
        #expect(try await h.call("POST", "/v1/secrets", token: bobToken, body: #"{"name": "key", "data": {"v": "b"}}"#).status == 201)
        // Admins see both with the tenant filter, names and keys only.
        let aliceList = try await h.call("GET", "/v1/secrets?tenant=\(alice)", token: h.admin)
        #expect(aliceList.items.count == 1)
        #expect((aliceList.items.first?["metadata"] as? [String: Any])?["tenant"] as? String == alice)
        #expect(try await h.call("GET", "/v1/secrets/key?tenant=\(bob)", token: h.admin).status == 200)
        // A node token lists none.
        #expect(try await h.call("GET", "/v1/secrets", token: try await h.nodeToken("n-" + alice)).status == 403)
    }

    /// The whole path of a value: an application's var references it; every API answer, the
    /// audit lines and every byte under /gpuplane/ in etcd lack it; the node the replica is
    /// bound to gets it from the runtime route, nobody else does.
    @Test func aValueReachesOnlyTheBoundNode() async throws {
        let h = try await SharedServer.shared.get()
        try await JournaldFixture.shared.ensureRunning()
        let (tenant, token) = try await h.tenant(.scale)
        let value = Self.uniqueValue()
        let password = Self.uniqueValue()
        let first = try await h.call("POST", "/v1/secrets", token: token, body: #"{"name": "db-url", "data": {"url": "\#(value)"}}"#)
        #expect(first.status == 201)
        let start = Int64(try #require(first.resourceVersion))! - 1
        #expect(
            try await h.call(
                "POST", "/v1/secrets", token: token,
                body: #"{"name": "regcred", "type": "registry", "registry": "127.0.0.1:5000", "username": "bot", "password": "\#(password)"}"#
            ).status == 201)
        let manifest = app("web", pods: """
              - name: api
                image: 127.0.0.1:5000/app:1
                vars:
                  PLAIN: visible
                  DATABASE_URL: {secret: db-url}
                  URL_AGAIN: {secret: db-url, key: url}
              - name: other
                image: busybox
                vars:
                  MISSING: {secret: nope}

            """)
        let applied = try await h.call("POST", "/v1/applications", token: token, body: manifest)
        #expect(applied.status == 201, "\(applied.text)")
        #expect(!applied.text.contains(value))

        // The replica carries references only.
        var replica = try await h.deps.store.get(Replica.self, tenant: tenant, name: "web.api")
        #expect(replica.spec.secretEnv == ["DATABASE_URL": SecretReference(secret: "db-url"), "URL_AGAIN": SecretReference(secret: "db-url", key: "url")])
        #expect(replica.spec.env == ["PLAIN": "visible"])

        // Bind it to a node, as the scheduler would.
        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let other = "m-" + UUID().uuidString.prefix(8).lowercased()
        let nodeToken = try await h.nodeToken(node)
        let otherToken = try await h.nodeToken(other)
        replica.binding = Binding(node: node, gpuIndices: [])
        replica = try await h.deps.store.update(replica)
        var missing = try await h.deps.store.get(Replica.self, tenant: tenant, name: "web.other")
        missing.binding = Binding(node: node, gpuIndices: [])
        _ = try await h.deps.store.update(missing)

        let runtime = try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: nodeToken)
        #expect(runtime.status == 200, "\(runtime.text)")
        let decoded = try GPUPlaneJSON.decode(ReplicaRuntime.self, from: runtime.body)
        #expect(decoded.env == ["DATABASE_URL": value, "URL_AGAIN": value])
        #expect(decoded.registryCredentials == [RegistryCredential(secret: "regcred", registry: "127.0.0.1:5000", username: "bot", password: password)])
        #expect(decoded.credential(forImage: "127.0.0.1:5000/app:1")?.secret == "regcred")
        #expect(decoded.credential(forImage: "busybox") == nil)
        #expect(!"\(decoded)".contains(value) && !"\(decoded)".contains(password))
        // Nobody else gets it: another node, the tenant's user, an admin.
        #expect(try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: otherToken).status == 404)
        #expect(try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: token).status == 403)
        #expect(try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: h.admin).status == 403)
        // A var naming a secret the tenant lacks: 409 naming the var and the secret.
        let lacking = try await h.call("GET", "/v1/replicas/\(tenant)/web.other/runtime", token: nodeToken)
        #expect(lacking.status == 409, "\(lacking.text)")
        #expect(lacking.errorCode == "secret_missing")
        #expect(lacking.errorMessage.contains("MISSING") && lacking.errorMessage.contains("nope"))

        // Replacing the secret stamps its new version on the replica that uses it.
        let newValue = Self.uniqueValue()
        let replaced = try await h.call("PUT", "/v1/secrets/db-url", token: token, body: #"{"data": {"url": "\#(newValue)"}}"#)
        #expect(replaced.status == 200, "\(replaced.text)")
        let newVersion = (replaced.json["spec"] as? [String: Any])?["version"] as? String
        let stamped = try await h.deps.store.get(Replica.self, tenant: tenant, name: "web.api")
        #expect(stamped.secretVersions?["db-url"] == newVersion && newVersion != nil)
        #expect(stamped.binding?.node == node, "the stamp leaves the binding alone")
        let fresh = try GPUPlaneJSON.decode(
            ReplicaRuntime.self, from: try await h.call("GET", "/v1/replicas/\(tenant)/web.api/runtime", token: nodeToken).body)
        #expect(fresh.env["DATABASE_URL"] == newValue)

        // Every API answer lacks both values.
        let answers = [
            try await h.call("GET", "/v1/secrets", token: token),
            try await h.call("GET", "/v1/secrets/db-url", token: token),
            try await h.call("GET", "/v1/secrets/regcred", token: token),
            try await h.call("GET", "/v1/secrets?tenant=\(tenant)", token: h.admin),
            try await h.call("GET", "/v1/applications", token: token),
            try await h.call("GET", "/v1/applications/web", token: token),
            try await h.call("GET", "/v1/replicas", token: token),
            try await h.call("GET", "/v1/replicas", token: nodeToken),
            try await h.call("GET", "/v1/replicas?tenant=\(tenant)", token: h.admin),
            try await h.call("GET", "/v1/events", token: token),
        ]
        for answer in answers {
            for secret in [value, newValue, password] { #expect(!answer.text.contains(secret), "\(answer.text.prefix(500))") }
        }
        #expect(answers[4].text.contains("db-url"), "the application shows the reference")
        // And so do watches replaying every change since before the secrets were made.
        for path in ["/v1/replicas?watch=true&resourceVersion=\(start)", "/v1/applications?watch=true&resourceVersion=\(start)",
                     "/v1/replicas?watch=true&tenant=\(tenant)&resourceVersion=\(start)"] {
            let caller = path.contains("tenant=") ? h.admin : token
            let streamed = try await Self.watch(h, path, token: caller)
            #expect(streamed.contains("db-url"), "\(path): \(streamed.prefix(500))")
            for secret in [value, newValue, password] { #expect(!streamed.contains(secret), "\(path)") }
        }

        // No stored byte holds them, anywhere under gpuplane's prefix.
        let stored = try await h.client.range(.prefix("/gpuplane/")).kvs
        #expect(stored.contains { $0.keyString == "/gpuplane/secrets/\(tenant)/db-url" })
        for kv in stored {
            for secret in [value, newValue, password] {
                #expect(kv.value.range(of: Data(secret.utf8)) == nil, "\(kv.keyString) holds a secret value")
            }
        }
        // The stored secret is sealed: it opens with the keyring, as the secret it is.
        let sealed = try #require(try await h.deps.store.get(Secret.self, tenant: tenant, name: "db-url").sealed)
        let keyring = try #require(h.deps.secretKeys)
        #expect(try keyring.open(sealed, tenant: tenant, name: "db-url") == ["url": newValue])
        #expect(throws: SecretKeyringError.self) { try keyring.open(sealed, tenant: tenant, name: "regcred") }

        // The audit lines name the paths, never a value.
        var entries: [JournalEntry] = []
        try await eventually("audit lines of the secret writes") {
            entries = try await JournaldFixture.shared.entries(identifier: h.auditIdentifier).filter { $0["GPUPLANE_AUDIT_TENANT"] == tenant }
            return entries.contains { $0["GPUPLANE_AUDIT_PATH"] == "/v1/secrets/db-url" }
        }
        for entry in entries {
            for secret in [value, newValue, password] {
                #expect(!entry.fields.values.flatMap { $0 }.contains { $0.contains(secret) })
            }
        }
    }

    /// What a watch of `path` streams in its first 15 seconds.
    static func watch(_ h: Harness, _ path: String, token: String) async throws -> String {
        try await TestEnvironment.offPool {
            // Replays from before the secrets: 15 s leaves room for a loaded machine.
            try Command.run("/usr/bin/curl", ["-sN", "--max-time", "15", "-H", "Authorization: Bearer \(token)", h.base + path]).output
        }
    }

    @Test func secretReferencesInManifestsAreCheckedWithLineAndColumn() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let manifest = """
            application:
              name: bad
              pods:
              - name: api
                image: busybox
                vars:
                  A: {secret: Not_A_Name}
                  B: {secret: ok, key: "no/slash"}
                  C: {key: k}
                  D: {secret: ok, colour: red}
                  NXL_X: {secret: ok}
                  E: [1, 2]
            """
        let reply = try await h.call("POST", "/v1/validate", token: token, body: manifest)
        #expect(reply.status == 200)
        let lines = reply.json["lines"] as? [String] ?? []
        let text = lines.joined(separator: "\n")
        #expect(reply.json["valid"] as? Bool == false)
        for (line, needle) in [(7, "Not_A_Name"), (8, "no/slash"), (9, "'secret' is required"), (10, "colour"), (11, "NXL_"), (12, "{secret: name}")] {
            #expect(lines.contains { $0.contains(":\(line):") && $0.contains(needle) }, "line \(line) \(needle):\n\(text)")
        }
        // Applying it is refused the same way.
        let applied = try await h.call("POST", "/v1/applications", token: token, body: manifest)
        #expect(applied.status == 422 || applied.status == 400, "\(applied.text)")
        #expect(applied.error["line"] as? Int != nil)
    }
}

/// The keyring alone: sealing, opening, rotation, and the key file's rules.
@Suite struct SecretKeyringTests {
    static func key() -> Data { Data((0..<32).map { _ in UInt8.random(in: 0...255) }) }

    @Test func sealsWithTheFirstKeyAndOpensWithAny() throws {
        let old = Self.key()
        let ring1 = try SecretKeyring(keys: [("k1", old)])
        let sealed = try ring1.seal(["v": "hello"], tenant: "t", name: "n")
        #expect(sealed.keyID == "k1" && sealed.algorithm == SealedData.aes256GCM)
        #expect(Data(base64Encoded: sealed.box)?.range(of: Data("hello".utf8)) == nil)
        // Rotated: k2 seals, k1 still opens.
        let ring2 = try SecretKeyring(keys: [("k2", Self.key()), ("k1", old)])
        #expect(try ring2.open(sealed, tenant: "t", name: "n") == ["v": "hello"])
        #expect(try ring2.seal(["v": "x"], tenant: "t", name: "n").keyID == "k2")
        // Two seals of one value differ (fresh nonces).
        #expect(try ring1.seal(["v": "hello"], tenant: "t", name: "n").box != sealed.box)
        // Another secret's name, another tenant, a missing key, another key of that id, altered bytes: no.
        for (ring, tenant, name) in [(ring1, "t", "m"), (ring1, "u", "n"), (try SecretKeyring(keys: [("k2", Self.key())]), "t", "n"),
                                     (try SecretKeyring(keys: [("k1", Self.key())]), "t", "n")] {
            #expect(throws: SecretKeyringError.self) { try ring.open(sealed, tenant: tenant, name: name) }
        }
        var altered = sealed
        var bytes = try #require(Data(base64Encoded: sealed.box))
        bytes[bytes.count - 1] ^= 1
        altered.box = bytes.base64EncodedString()
        #expect(throws: SecretKeyringError.self) { try ring1.open(altered, tenant: "t", name: "n") }
    }

    @Test func keyFilesMustBePrivateAndWellFormed() throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "keyring")
        defer { try? FileManager.default.removeItem(at: directory) }
        let good = try SecretKeyFile.create(in: directory, id: "k1")
        #expect(try SecretKeyring.load(path: good.path).sealingKeyID == "k1")
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: good.path)
        #expect { try SecretKeyring.load(path: good.path) } throws: { ($0 as? SecretKeyringError)?.code == .insecureFile }
        let file = directory.appendingPathComponent("bad.key")
        for text in ["# only a comment\n", "k1 notbase64!!\n", "k1 \(Data(count: 16).base64EncodedString())\n",
                     "k1 \(Self.key().base64EncodedString())\nk1 \(Self.key().base64EncodedString())\n"] {
            FileManager.default.createFile(atPath: file.path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
            #expect { try SecretKeyring.load(path: file.path) } throws: { ($0 as? SecretKeyringError)?.code == .invalidKey }
        }
        #expect { try SecretKeyring.load(path: directory.appendingPathComponent("absent").path) } throws: {
            ($0 as? SecretKeyringError)?.code == .unreadable
        }
    }
}
