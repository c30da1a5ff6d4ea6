import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// `/v1/secrets`: a tenant's secrets, values write-only (create, list, get, replace, delete);
/// and `GET /v1/replicas/{tenant}/{name}/runtime`, the one answer that carries values: a bound
/// replica's secret vars and its tenant's registry logins, to the node it is bound to alone.
///
/// Values are sealed with the api-server's keyring (``SecretKeyring``) before they are stored;
/// without a `secret-key-file` every route here answers 503. No answer, log line, event or
/// audit line carries a value: answers carry ``Secret/redacted``, errors name keys and
/// secrets, and the audit line names the path.
struct SecretRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.post, "/v1/secrets") { try await create($0, $1) }
        routes.add(.get, "/v1/secrets") { try await list($0, $1) }
        routes.add(.get, "/v1/secrets/:name") { try await get($0, $1) }
        routes.add(.put, "/v1/secrets/:name") { try await replace($0, $1) }
        routes.add(.delete, "/v1/secrets/:name") { try await delete($0, $1) }
        routes.add(.get, "/v1/replicas/:tenant/:name/runtime") { try await runtime($0, $1) }
    }

    /// What `POST /v1/secrets` and `PUT /v1/secrets/{name}` take.
    struct Body: Decodable {
        var name: String?
        var type: Secret.SecretType?
        var data: [String: String]?
        var registry: String?
        var username: String?
        var password: String?
        var resourceVersion: String?

        static let fields = ["name", "type", "data", "registry", "username", "password", "resourceVersion"]
    }

    /// The keyring, or 503 when the api-server has none.
    private func keyring() throws -> SecretKeyring {
        guard let keyring = deps.secretKeys else {
            throw APIError(
                .serviceUnavailable, .unavailable,
                "this api-server has no secret-key-file, so it cannot store or open secrets; its operator sets one (docs/operations.md, \"Secret keys\")")
        }
        return keyring
    }

    /// The spec and values a body asks for, checked; the values are only ever sealed.
    func parse(_ body: Body, name: String) throws -> (Secret.Spec, [String: String]) {
        let type = body.type ?? (body.registry != nil ? .registry : .generic)
        var values: [String: String]
        var registry: String?
        switch type {
        case .generic:
            for field in ["registry", "username", "password"] {
                let given = field == "registry" ? body.registry : field == "username" ? body.username : body.password
                if given != nil {
                    throw APIError(
                        .unprocessableContent, .invalid,
                        "'\(field)' belongs to a secret of type registry; a generic secret holds its values in 'data'", field: field)
                }
            }
            guard let data = body.data, !data.isEmpty else {
                throw APIError(
                    .unprocessableContent, .invalid, "a generic secret needs 'data' with at least one value, e.g. {\"data\": {\"value\": \"...\"}}",
                    field: "data")
            }
            guard data.count <= Secret.maxKeys else {
                throw APIError(.unprocessableContent, .invalid, "a secret holds at most \(Secret.maxKeys) values, not \(data.count)", field: "data")
            }
            for key in data.keys.sorted() where !Secret.isKeyName(key) {
                throw APIError(
                    .unprocessableContent, .invalid, "'\(key)' is not a valid key: use 1-253 letters, digits, '.', '_' or '-'", field: "data")
            }
            values = data
        case .registry:
            if body.data != nil {
                throw APIError(
                    .unprocessableContent, .invalid, "a registry secret takes 'registry', 'username' and 'password', not 'data'", field: "data")
            }
            guard let host = body.registry, !host.isEmpty else {
                throw APIError(.unprocessableContent, .invalid, "a registry secret needs 'registry' (host[:port], e.g. registry.example.com)", field: "registry")
            }
            let normalized = RegistryCredential.normalized(host)
            guard Self.isRegistryHost(normalized) else {
                throw APIError(
                    .unprocessableContent, .invalid, "'registry' must be a host[:port] as in image references (registry.example.com, 127.0.0.1:5000)",
                    field: "registry")
            }
            guard let username = body.username, !username.isEmpty else {
                throw APIError(.unprocessableContent, .invalid, "a registry secret needs 'username'", field: "username")
            }
            guard let password = body.password, !password.isEmpty else {
                throw APIError(.unprocessableContent, .invalid, "a registry secret needs 'password' (or a token)", field: "password")
            }
            registry = normalized
            values = [Secret.usernameKey: username, Secret.passwordKey: password]
        }
        let size = values.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard size <= Secret.maxDataBytes else {
            throw APIError(
                .unprocessableContent, .invalid, "a secret holds at most \(Secret.maxDataBytes) bytes of keys and values, not \(size)",
                field: type == .generic ? "data" : "password")
        }
        let spec = Secret.Spec(type: type, keys: values.keys.sorted(), registry: registry, version: ObjectMeta.newUID())
        return (spec, values)
    }

    /// Whether `host` is `host[:port]`: DNS characters, an optional port 1–65535.
    static func isRegistryHost(_ host: String) -> Bool {
        let parts = host.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let name = parts.first, !name.isEmpty, name.count <= 253 else { return false }
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) else { return false }
        if parts.count == 2 {
            guard let port = Int(parts[1]), (1...65535).contains(port) else { return false }
        }
        return true
    }

    /// The body of a create or replace.
    private func readBody(_ request: Request) async throws -> Body {
        let data = try await HTTPJSON.body(request, limit: 256 << 10)
        try HTTPJSON.rejectUnknownKeys(data, known: Body.fields)
        return try HTTPJSON.decode(Body.self, from: data)
    }

    /// Maps to `POST /v1/secrets`: seals and stores a new secret (409 when the name is taken).
    /// Replicas of the tenant that reference it record its version in the same transaction.
    func create(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.planTenant(request)
        _ = try await Admission(deps: deps).tenant(tenant)  // 403 for a tenant that does not exist
        let keyring = try keyring()
        let body = try await readBody(request)
        guard let name = body.name else { throw APIError(.unprocessableContent, .invalid, "'name' is required", field: "name") }
        guard Syntax.isDNSLabel(name) else {
            throw APIError(.unprocessableContent, .invalid, "'\(name)' is not a DNS label (a-z, 0-9, '-', at most 63)", field: "name")
        }
        if body.resourceVersion != nil {
            throw APIError(.unprocessableContent, .invalid, "a new secret has no resourceVersion; replace one with PUT /v1/secrets/\(name)", field: "resourceVersion")
        }
        let (spec, values) = try parse(body, name: name)
        let secret = Secret(
            metadata: ObjectMeta(name: name, tenant: tenant), spec: spec, sealed: try keyring.seal(values, tenant: tenant, name: name))
        let stored = try await write(secret, creating: true)
        return try HTTPJSON.response(stored.redacted, status: .created)
    }

    /// Maps to `GET /v1/secrets`: the caller's secrets (admins: every tenant's, or `?tenant=`'s),
    /// names, types and keys only.
    func list(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        let tenant: String?
        switch caller.role {
        case .user: tenant = caller.tenant
        case .admin: tenant = request.query("tenant")
        case .node: throw APIError(.forbidden, .forbidden, "secrets are listed by their tenant's users and admins")
        }
        let list = try await deps.store.list(Secret.self, tenant: tenant)
        return try HTTPJSON.response(ListBody(items: list.items.map(\.redacted), resourceVersion: String(list.revision)))
    }

    /// Maps to `GET /v1/secrets/{name}`: its type, keys and (registry) registry, never a value.
    func get(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.planTenant(request)
        let secret = try await deps.store.get(Secret.self, tenant: tenant, name: try context.parameter("name"))
        return try HTTPJSON.response(secret.redacted)
    }

    /// Maps to `PUT /v1/secrets/{name}`: replaces the type and values (404 when absent). With
    /// `If-Match`, `?resourceVersion=` or `resourceVersion` in the body, only if the secret is
    /// still at that version (409 otherwise). Replicas that reference it record its new version
    /// in the same transaction, so their node-agents replace the containers with the new values.
    func replace(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.planTenant(request)
        let name = try context.parameter("name")
        let keyring = try keyring()
        var expected = try request.expectedVersion()
        let body = try await readBody(request)
        if let given = body.name, given != name {
            throw APIError(.unprocessableContent, .invalid, "'name' is \(given) but the URL names \(name); a secret cannot be renamed", field: "name")
        }
        if let version = body.resourceVersion {
            let parsed = try ResourceVersionParameter.parse(version, source: "resourceVersion")
            if let expected, expected != parsed {
                throw APIError(.badRequest, .badRequest, "the body's resourceVersion (\(parsed)) and the request's (\(expected)) disagree; send one", field: "resourceVersion")
            }
            expected = parsed
        }
        let (spec, values) = try parse(body, name: name)
        let sealed = try keyring.seal(values, tenant: tenant, name: name)
        for attempt in 0..<5 {
            let current = try await deps.store.get(Secret.self, tenant: tenant, name: name)
            if let expected, expected != current.metadata.resourceVersion {
                throw APIError(
                    .conflict, .conflict,
                    "secret \(name) is at resourceVersion \(current.metadata.resourceVersion), not \(expected); read it again and retry")
            }
            var secret = current
            secret.spec = spec
            secret.sealed = sealed
            do {
                let stored = try await write(secret, creating: false)
                return try HTTPJSON.response(stored.redacted)
            } catch let error as StoreError where error.code == .conflict && attempt < 4 {
                if expected != nil, error.kind == .secret {
                    throw APIError(.conflict, .conflict, "secret \(name) changed while being replaced; read it again and retry")
                }
                continue
            }
        }
        throw APIError(.conflict, .conflict, "secret \(name) kept changing; retry")
    }

    /// Maps to `DELETE /v1/secrets/{name}` (`If-Match` or `?resourceVersion=` makes it
    /// conditional). Running containers keep the values they got; a replica that references it
    /// and starts again waits (``ReplicaStatus/Reason/createContainerConfigError``) until it
    /// exists again.
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.planTenant(request)
        let expected = try request.expectedVersion()
        try await deps.store.delete(Secret.self, tenant: tenant, name: try context.parameter("name"), expectedVersion: expected)
        return HTTPJSON.noContent()
    }

    /// Writes `secret` (create, or compare-and-swap on its version) with the replicas of its
    /// tenant that reference it, each recording the secret's new version, in one transaction.
    /// - Throws: ``StoreError`` `alreadyExists` (create), `conflict` when the secret or one of
    ///   the replicas changed since read (retried for replicas here).
    private func write(_ secret: Secret, creating: Bool) async throws -> Secret {
        let tenant = secret.metadata.tenant
        let name = secret.metadata.name
        for attempt in 0..<5 {
            let replicas = try await deps.store.list(Replica.self, tenant: tenant).items.filter { replica in
                (replica.spec.secretEnv ?? [:]).values.contains { $0.secret == name }
            }
            do {
                let (handle, result) = try await deps.store.transaction { txn -> StoreTransaction.Handle<Secret> in
                    let handle = creating ? try txn.create(secret) : try txn.update(secret)
                    for var replica in replicas {
                        replica.secretVersions = (replica.secretVersions ?? [:]).merging([name: secret.spec.version]) { _, new in new }
                        try txn.update(replica)
                    }
                    return handle
                }
                return try result.object(handle)
            } catch let error as StoreError where error.code == .conflict && error.kind == .replica && attempt < 4 {
                continue  // a replica moved (bound, reported): read them again
            }
        }
        throw APIError(.conflict, .conflict, "the replicas that use secret \(name) kept changing; retry")
    }

    // MARK: - Runtime

    /// Maps to `GET /v1/replicas/{tenant}/{name}/runtime`: the ``ReplicaRuntime`` of a replica,
    /// for the node-agent of the node it is bound to (404 to any other node; 403 to users and
    /// admins: values are never served to people). Its secret vars resolved to their values, and
    /// every registry login of its tenant. 409 (`secret_missing`) when a secret or key it
    /// references does not exist, naming the var: the agent reports
    /// ``ReplicaStatus/Reason/createContainerConfigError`` and asks again.
    func runtime(_ request: Request, _ context: APIContext) async throws -> Response {
        let caller = try context.caller()
        guard caller.role == .node else {
            throw APIError(.forbidden, .forbidden, "secret values go only to the node-agent of the node a replica is bound to")
        }
        let tenant = try context.parameter("tenant")
        let name = try context.parameter("name")
        let replica: Replica
        do {
            replica = try await deps.store.get(Replica.self, tenant: tenant, name: name)
        } catch let error as StoreError where error.code == .notFound {
            throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) not found")
        }
        guard let node = caller.node, replica.binding?.node == node else {
            throw APIError(.notFound, .notFound, "replica \(tenant)/\(name) is not bound to \(caller.node ?? "this node")")
        }
        let secrets = try await deps.store.list(Secret.self, tenant: tenant).items
        let references = replica.spec.secretEnv ?? [:]
        let registries = secrets.filter { $0.spec.type == .registry }
        var runtime = ReplicaRuntime()
        if references.isEmpty && registries.isEmpty { return try HTTPJSON.response(runtime) }
        let keyring = try keyring()
        let byName = Dictionary(secrets.map { ($0.metadata.name, $0) }, uniquingKeysWith: { a, _ in a })
        var opened: [String: [String: String]] = [:]
        func values(of secret: Secret) throws -> [String: String] {
            if let done = opened[secret.metadata.name] { return done }
            guard let sealed = secret.sealed else {
                throw APIError(.internalServerError, .internalError, "secret \(tenant)/\(secret.metadata.name) is stored without its values")
            }
            do {
                let values = try keyring.open(sealed, tenant: tenant, name: secret.metadata.name)
                opened[secret.metadata.name] = values
                return values
            } catch {
                deps.logger.error("a stored secret does not open", metadata: ["secret": "\(tenant)/\(secret.metadata.name)", "error": "\(error)"])
                throw APIError(.internalServerError, .internalError, "\(error.message); the api-server's secret-key-file must hold that key")
            }
        }
        for variable in references.keys.sorted() {
            guard let reference = references[variable] else { continue }
            guard let secret = byName[reference.secret] else {
                throw APIError(
                    .conflict, .secretMissing,
                    "var \(variable) references secret \(reference.secret), which tenant \(tenant) does not have; create it with gpuplane secret create \(reference.secret)",
                    field: "vars.\(variable)")
            }
            guard secret.spec.type == .generic else {
                throw APIError(
                    .conflict, .secretMissing,
                    "var \(variable) references secret \(reference.secret) of type registry; vars take values of generic secrets",
                    field: "vars.\(variable)")
            }
            let key: String
            if let named = reference.key {
                key = named
            } else if secret.spec.keys.count == 1, let only = secret.spec.keys.first {
                key = only
            } else {
                throw APIError(
                    .conflict, .secretMissing,
                    "var \(variable) references secret \(reference.secret) without a key, but it holds \(secret.spec.keys.joined(separator: ", ")); name one with {secret: \(reference.secret), key: <key>}",
                    field: "vars.\(variable)")
            }
            guard let value = try values(of: secret)[key] else {
                throw APIError(
                    .conflict, .secretMissing,
                    "var \(variable) references key \(key) of secret \(reference.secret), which holds only \(secret.spec.keys.joined(separator: ", "))",
                    field: "vars.\(variable)")
            }
            runtime.env[variable] = value
        }
        for secret in registries.sorted(by: { $0.metadata.name < $1.metadata.name }) {
            guard let registry = secret.spec.registry else { continue }
            let values = try values(of: secret)
            guard let username = values[Secret.usernameKey], let password = values[Secret.passwordKey] else { continue }
            runtime.registryCredentials.append(
                RegistryCredential(secret: secret.metadata.name, registry: registry, username: username, password: password))
        }
        return try HTTPJSON.response(runtime)
    }
}

extension APIError.Code {
    /// A replica's var references a secret (or a key of one) its tenant does not have.
    public static let secretMissing = APIError.Code(rawValue: "secret_missing")
}
