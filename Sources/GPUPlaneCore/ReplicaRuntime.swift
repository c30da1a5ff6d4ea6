/// What a node-agent needs to start a bound replica beyond the replica itself: the values of
/// its secret vars and its tenant's registry credentials, decrypted by the api-server from the
/// tenant's secrets. Served only to the node the replica is bound to, by
/// `GET /v1/replicas/{tenant}/{name}/runtime`, and only when the agent is about to create the
/// replica's container.
///
/// Nothing here may reach a log line, a label, an event or a status: its `description` (and so
/// any string interpolation of it) names the variables and registries but never a value.
public struct ReplicaRuntime: Codable, Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The replica's secret vars (``ReplicaSpec/secretEnv``) resolved to their values: name →
    /// value. The agent adds them to the container's environment under the pod's plain vars'
    /// rules (the `NXL_*` contract wins).
    public var env: [String: String]
    /// Every registry credential of the replica's tenant (its secrets of type `registry`), in
    /// secret-name order; ``credential(forImage:)`` picks the one for an image.
    public var registryCredentials: [RegistryCredential]

    /// Makes a runtime.
    public init(env: [String: String] = [:], registryCredentials: [RegistryCredential] = []) {
        self.env = env
        self.registryCredentials = registryCredentials
    }

    /// The credential for `image`'s registry (``RegistryCredential/registry(ofImage:)``); nil
    /// when the tenant has none for it. When several secrets name the same registry, the
    /// first by secret name.
    public func credential(forImage image: String) -> RegistryCredential? {
        let registry = RegistryCredential.registry(ofImage: image)
        return registryCredentials.first { RegistryCredential.normalized($0.registry) == registry }
    }

    /// The variable names and registries, never a value.
    public var description: String {
        "ReplicaRuntime(env: [\(env.keys.sorted().joined(separator: ", "))], registries: [\(registryCredentials.map(\.description).joined(separator: ", "))])"
    }

    /// The same as ``description``.
    public var debugDescription: String { description }
}

/// A login to an image registry, from a tenant's secret of type `registry`.
///
/// Its `description` names the secret, registry and user, never the password.
public struct RegistryCredential: Codable, Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Docker Hub's name, the registry of references without one.
    public static let dockerHub = "docker.io"

    /// The name of the tenant's secret it comes from (safe to show: statuses name it).
    public var secret: String
    /// The registry, `host[:port]` as in image references (`registry.example.com`,
    /// `127.0.0.1:5000`, `docker.io`).
    public var registry: String
    /// The user name.
    public var username: String
    /// The password or token.
    public var password: String

    /// Makes a credential.
    public init(secret: String, registry: String, username: String, password: String) {
        self.secret = secret
        self.registry = registry
        self.username = username
        self.password = password
    }

    /// The registry host (and port) of an image reference, normalized: its first path
    /// component when that has a dot or a port or is `localhost` (`registry.example.com/team/app:1`,
    /// `127.0.0.1:5000/app`), else Docker Hub (`vllm/vllm-openai`, `busybox`).
    public static func registry(ofImage image: String) -> String {
        guard let slash = image.firstIndex(of: "/") else { return dockerHub }
        let first = image[..<slash]
        if first.contains(".") || first.contains(":") || first == "localhost" { return normalized(String(first)) }
        return dockerHub
    }

    /// A registry name as credentials are matched on it: lowercased, without a scheme, path or
    /// trailing slash, Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`,
    /// `registry.hub.docker.com`) as `docker.io`.
    public static func normalized(_ server: String) -> String {
        var name = server.lowercased()
        for scheme in ["https://", "http://"] where name.hasPrefix(scheme) { name.removeFirst(scheme.count) }
        if let slash = name.firstIndex(of: "/") { name = String(name[..<slash]) }
        if ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"].contains(name) { return dockerHub }
        return name
    }

    /// Secret, registry and user; never the password.
    public var description: String { "\(registry) as \(username) (secret \(secret))" }

    /// The same as ``description``.
    public var debugDescription: String { description }
}
