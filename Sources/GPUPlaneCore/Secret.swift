/// A tenant's secret: named values (type `generic`) that pods reference from their `vars`, or a
/// registry login (type `registry`) the node-agent pulls the tenant's images with.
///
/// The values are write-only: they are sealed (AES-GCM) by the api-server before they are
/// stored, under `/gpuplane/secrets/<tenant>/<name>`, and opened only to answer
/// `GET /v1/replicas/{tenant}/{name}/runtime` for the node a replica is bound to. Every API
/// answer carries the object without ``sealed``: its type, key names and (for `registry`) the
/// registry, never a value.
public struct Secret: Resource, Hashable {
    public static let kind = ResourceKind.secret

    /// The most bytes of values (keys and values together) one secret may hold.
    public static let maxDataBytes = 64 * 1024
    /// The most keys one generic secret may hold.
    public static let maxKeys = 64
    /// The keys of a registry secret's sealed data.
    public static let usernameKey = "username"
    /// The keys of a registry secret's sealed data.
    public static let passwordKey = "password"

    /// What a secret holds.
    public enum SecretType: String, Codable, Sendable, CaseIterable {
        /// Named string values (`data`), for pods' `vars: {NAME: {secret: name, key: k}}`.
        case generic
        /// A login to one image registry (`registry`, `username`, `password`), for image pulls.
        case registry
    }

    /// What may be shown of a secret.
    public struct Spec: Codable, Sendable, Hashable {
        /// The type.
        public var type: SecretType
        /// The names of its values, sorted (for `registry`: `password` and `username`).
        public var keys: [String]
        /// For `registry`: the registry, `host[:port]` as in image references.
        public var registry: String?
        /// A random id that changes with every write of the values. Replicas that reference the
        /// secret record it (``Replica/secretVersions``), so a running container is replaced
        /// when a value it got changes.
        public var version: String

        /// Makes a spec.
        public init(type: SecretType, keys: [String], registry: String? = nil, version: String) {
            self.type = type
            self.keys = keys
            self.registry = registry
            self.version = version
        }
    }

    public var metadata: ObjectMeta
    public var spec: Spec
    /// The values, sealed; present in etcd, nil in every API answer.
    public var sealed: SealedData?

    /// Makes a secret.
    public init(metadata: ObjectMeta, spec: Spec, sealed: SealedData? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.sealed = sealed
    }

    /// The secret as API answers carry it: without ``sealed``.
    public var redacted: Secret {
        var copy = self
        copy.sealed = nil
        return copy
    }

    /// Whether `name` may name a value of a generic secret: 1–253 characters of letters,
    /// digits, `.`, `_` and `-` (Kubernetes' rule for secret keys).
    public static func isKeyName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 253
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2E || byte == 0x5F || byte == 0x2D
            }
    }
}

/// A secret's values sealed with AES-GCM (256-bit key): the key's id, so keys can be rotated,
/// and the sealed box (nonce, ciphertext and tag), base64. The additional authenticated data is
/// `gpuplane/secrets/<tenant>/<name>`, so a sealed value opens only as the secret it was made for.
public struct SealedData: Codable, Sendable, Hashable, CustomStringConvertible {
    /// The sealing algorithm's name.
    public static let aes256GCM = "aes-256-gcm"

    /// The algorithm, ``aes256GCM``.
    public var algorithm: String
    /// The id of the key it was sealed with (from the api-server's key file).
    public var keyID: String
    /// Nonce, ciphertext and tag (AES-GCM's combined form), base64.
    public var box: String

    /// Makes sealed data.
    public init(algorithm: String = SealedData.aes256GCM, keyID: String, box: String) {
        self.algorithm = algorithm
        self.keyID = keyID
        self.box = box
    }

    /// The algorithm and key id, never the box.
    public var description: String { "SealedData(\(algorithm), key \(keyID))" }
}

/// A pod var's or a replica's reference to a value of a secret of its tenant:
/// `{secret: db-url}` or `{secret: db, key: password}` in a manifest.
public struct SecretReference: Codable, Sendable, Hashable {
    /// The secret's name.
    public var secret: String
    /// The value's key in a generic secret; nil: the secret's only key.
    public var key: String?

    /// Makes a reference.
    public init(secret: String, key: String? = nil) {
        self.secret = secret
        self.key = key
    }
}
