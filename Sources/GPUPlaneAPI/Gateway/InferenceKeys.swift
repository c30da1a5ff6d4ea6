import Crypto
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Synchronization

/// The keys in inference URLs (see ``InferenceEndpoint``): HMAC-SHA256 of `<tenant>/<slug>`
/// under one cluster secret, as 22 base64url characters (128 bits).
///
/// The secret lives in etcd (``InferenceSecret``, at ``KeySpace/inferenceSecret``): the first
/// api-server that needs it creates it (create-if-absent, so replicas racing agree on one),
/// every replica reads it once and keeps it. Only api-servers read it; nodes and users only
/// ever see keys.
public final class InferenceKeys: Sendable {
    private let stored: InferenceSecret
    private let secret = Mutex<Data?>(nil)
    private let verified = Mutex<Set<String>>([])

    /// Keys over the secret in `store`.
    public init(store: ResourceStore) { stored = InferenceSecret(store: store) }

    /// The key for `tenant`'s URL of `slug`.
    /// - Throws: ``APIError`` 503 when the secret cannot be read or made.
    public func key(tenant: String, slug: String) async throws -> String {
        Self.key(tenant: tenant, slug: slug, secret: try await loadSecret())
    }

    /// Whether `key` is `tenant`'s key for `slug` (compared in constant time). Keys that
    /// passed are remembered, so a pod's steady stream of requests costs one HMAC.
    public func verify(_ key: Substring, tenant: String, slug: String) async throws -> Bool {
        let entry = "\(tenant)/\(slug)/\(key)"
        if verified.withLock({ $0.contains(entry) }) { return true }
        let expected = Self.key(tenant: tenant, slug: slug, secret: try await loadSecret())
        guard key.utf8.count == expected.utf8.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(key.utf8, expected.utf8) { difference |= a ^ b }
        guard difference == 0 else { return false }
        verified.withLock { set in
            if set.count >= 10_000 { set.removeAll() }
            set.insert(entry)
        }
        return true
    }

    /// Stamps each Mode 2/3 replica's spec with its key.
    public func stamp(_ replicas: [Replica]) async throws -> [Replica] {
        guard replicas.contains(where: { $0.spec.modelSlug != nil }) else { return replicas }
        let secret = try await loadSecret()
        return replicas.map { replica in
            guard let slug = replica.spec.modelSlug else { return replica }
            var stamped = replica
            stamped.spec.inferenceKey = Self.key(tenant: replica.metadata.tenant, slug: slug, secret: secret)
            return stamped
        }
    }

    static func key(tenant: String, slug: String, secret: SymmetricKey) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(tenant)/\(slug)".utf8), using: secret)
        let text = Data(mac.prefix(16)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return text
    }

    /// The cluster secret's bytes, for the other keys derived from it (``AgentLink``'s per-node
    /// listener keys).
    /// - Throws: ``APIError`` 503 when the secret cannot be read or made.
    func secretBytes() async throws -> [UInt8] {
        try await loadSecret().withUnsafeBytes { Array($0) }
    }

    private func loadSecret() async throws -> SymmetricKey {
        if let known = secret.withLock({ $0 }) { return SymmetricKey(data: known) }
        let loaded: Data
        do {
            loaded = try await stored.value { Data(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }) }
        } catch let error as StoreError where error.code == .conflict {
            throw APIError(.serviceUnavailable, .unavailable, "the inference secret vanished while being made; retry")
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot read the inference secret: the store is unavailable")
        }
        secret.withLock { $0 = loaded }
        return SymmetricKey(data: loaded)
    }
}
