import Crypto
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import Synchronization

/// Who is calling: the tenant, what the token may do, and (for node tokens) which node.
public struct Principal: Sendable, Hashable {
    /// The tenant (owner) the token belongs to; `_cluster` for admin and node tokens.
    public var tenant: String
    /// What the token may do.
    public var role: Role
    /// For node tokens: the node it speaks for.
    public var node: String?
    /// The token's public id, for audit lines (never the secret).
    public var tokenID: String

    /// Makes a principal.
    public init(tenant: String, role: Role, node: String? = nil, tokenID: String) {
        self.tenant = tenant
        self.role = role
        self.node = node
        self.tokenID = tokenID
    }
}

/// Tokens: random secrets shown once, stored only as SHA-256 hashes (in ``TokenIndex``).
public enum Tokens {
    /// A new secret: `gp_` and 43 base64url characters (256 random bits).
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let base64 = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return "gp_" + base64
    }

    /// The hex SHA-256 of a token.
    public static func hash(_ token: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var hex = [UInt8]()
        hex.reserveCapacity(64)
        for byte in SHA256.hash(data: Data(token.utf8)) {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: hex, as: UTF8.self)
    }

    /// A short public id for a token hash.
    public static func publicID(hash: String) -> String { "tok-" + hash.prefix(12) }
}

/// Resolves bearer tokens to principals: the bootstrap admin token from configuration, then the
/// token index in etcd (``TokenIndex``), with a short cache of hits so a busy client costs no
/// etcd read per call.
public final class TokenAuthenticator: Sendable {
    private let index: TokenIndex
    private let adminHashes: Set<String>
    private let cache = Mutex<[String: (Principal, Date)]>([:])
    /// Hashes whose cached hit is being read again in the background.
    private let refreshing = Mutex<Set<String>>([])
    private let cacheSeconds: Double
    private let staleSeconds: Double

    /// Makes an authenticator; `adminTokens` are bootstrap admin secrets (from a file). A hit
    /// younger than `cacheSeconds` is trusted as is; one younger than `staleSeconds` is trusted
    /// while it is read again in the background (so a node's heartbeat never waits for an etcd
    /// member that stopped answering; the read's answer, a revocation included, applies from
    /// the next call); an older one is read before answering.
    public init(index: TokenIndex, adminTokens: [String], cacheSeconds: Double = 5, staleSeconds: Double = 30) {
        self.index = index
        self.adminHashes = Set(adminTokens.map(Tokens.hash))
        self.cacheSeconds = cacheSeconds
        self.staleSeconds = max(cacheSeconds, staleSeconds)
    }

    /// The principal for an `Authorization` header value.
    /// - Throws: ``APIError`` 401 when the header is missing, malformed or unknown.
    public func authenticate(_ header: String?) async throws -> Principal {
        guard let header, header.hasPrefix("Bearer ") else {
            throw APIError(.unauthorized, .unauthorized, "send 'Authorization: Bearer <token>'; ask an admin for a token")
        }
        let token = header.dropFirst("Bearer ".count).trimmingWhitespace()
        guard !token.isEmpty, token.utf8.count <= 256 else {
            throw APIError(.unauthorized, .unauthorized, "the bearer token is malformed")
        }
        let hash = Tokens.hash(token)
        if adminHashes.contains(hash) {
            return Principal(tenant: ObjectMeta.clusterTenant, role: .admin, tokenID: "bootstrap-admin")
        }
        let now = Date()
        if let (principal, at) = cache.withLock({ $0[hash] }) {
            let age = now.timeIntervalSince(at)
            if age < cacheSeconds { return principal }
            if age < staleSeconds {
                refreshInBackground(hash)
                return principal
            }
        }
        let record: TokenRecord?
        do {
            record = try await index.record(sha256: hash)
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "cannot check the token: the store is unavailable")
        }
        guard let principal = remember(hash, record, at: now) else {
            throw APIError(.unauthorized, .unauthorized, "the bearer token is not known (revoked or mistyped)")
        }
        return principal
    }

    /// Caches what the index said of `hash` (a hit, or forgets it when unknown).
    private func remember(_ hash: String, _ record: TokenRecord?, at now: Date) -> Principal? {
        guard let entry = record else {
            cache.withLock { _ = $0.removeValue(forKey: hash) }
            return nil
        }
        let principal = Principal(tenant: entry.tenant, role: entry.role, node: entry.node, tokenID: entry.id)
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[hash] = (principal, now)
        }
        return principal
    }

    /// Reads `hash` again without the caller waiting, once at a time per token; a failed read
    /// leaves the stale hit to age out.
    private func refreshInBackground(_ hash: String) {
        guard refreshing.withLock({ $0.insert(hash).inserted }) else { return }
        Task { [self] in
            defer { _ = refreshing.withLock { $0.remove(hash) } }
            let asked = Date()
            do {
                // A token no longer known (revoked) is forgotten: its next call reads again.
                _ = remember(hash, try await index.record(sha256: hash), at: asked)
            } catch {
                // The store cannot be read: the hit ages out past staleSeconds.
            }
        }
    }

    /// Forgets cached tokens (after a revocation through this replica).
    public func invalidate() { cache.withLock { $0.removeAll() } }
}
