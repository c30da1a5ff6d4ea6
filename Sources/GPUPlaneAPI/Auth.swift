import Crypto
import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import Logging
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
/// token index (``TokenIndex``): from the api-server's in-memory copy of it (``TokenMirror``)
/// while that copy follows etcd, else read from etcd with a short cache of hits, so a busy
/// client, or 5,000 beating nodes, costs no etcd read per call.
///
/// A token the copy does not hold is read from etcd before it is refused (it may have been
/// issued through another api-server a moment ago); a revoked one is gone from the copy as
/// soon as its watch delivers the delete (milliseconds), and at once on the api-server that
/// revoked it.
public final class TokenAuthenticator: Sendable {
    private let index: TokenIndex
    /// The in-memory copy of the index; nil: always etcd and the cache.
    public let mirror: TokenMirror?
    private let adminHashes: Set<String>
    private let cache = Mutex<[String: (Principal, Date)]>([:])
    /// Hashes whose cached hit is being read again in the background.
    private let refreshing = Mutex<Set<String>>([])
    private let cacheSeconds: Double
    private let staleSeconds: Double
    /// How long a call waits for the copy's first list (``TokenMirror/waitForFirstList(timeout:)``)
    /// before it reads etcd itself.
    private let firstListWait: Duration

    /// Makes an authenticator; `adminTokens` are bootstrap admin secrets (from a file). A hit
    /// younger than `cacheSeconds` is trusted as is; one younger than `staleSeconds` is trusted
    /// while it is read again in the background (so a node's heartbeat never waits for an etcd
    /// member that stopped answering; the read's answer, a revocation included, applies from
    /// the next call); an older one is read before answering. Calls that come while `mirror`
    /// makes its first list wait for it, up to `firstListWait`.
    public init(
        index: TokenIndex, adminTokens: [String], mirror: TokenMirror? = nil, cacheSeconds: Double = 5, staleSeconds: Double = 30,
        firstListWait: Duration = .seconds(5)
    ) {
        self.index = index
        self.mirror = mirror
        self.adminHashes = Set(adminTokens.map(Tokens.hash))
        self.cacheSeconds = cacheSeconds
        self.staleSeconds = max(cacheSeconds, staleSeconds)
        self.firstListWait = firstListWait
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
        var lookup = mirror?.lookup(hash)
        if lookup == .notFollowing, let mirror, await mirror.waitForFirstList(timeout: firstListWait) {
            // An api-server just started: its first calls wait for the one list of every token
            // rather than each reading its own (2,500 nodes coming back at once read 5,000).
            lookup = mirror.lookup(hash)
        }
        let now = Date()
        switch lookup {
        case .hit(let principal): return principal
        case .miss:
            // Not in the copy: issued elsewhere a moment ago, revoked, or unknown. etcd says.
            return try await read(hash, at: now)
        case .notFollowing, nil: break
        }
        if let (principal, at) = cache.withLock({ $0[hash] }) {
            let age = now.timeIntervalSince(at)
            if age < cacheSeconds { return principal }
            if age < staleSeconds {
                refreshInBackground(hash)
                return principal
            }
        }
        return try await read(hash, at: now)
    }

    /// Reads `hash` from etcd and caches the answer.
    private func read(_ hash: String, at now: Date) async throws -> Principal {
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
        let principal = Principal(entry)
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

    /// Forgets a token revoked through this api-server at once (its copy would a moment later).
    public func revoked(_ removal: TokenIndex.Removal) {
        cache.withLock { _ = $0.removeValue(forKey: removal.sha256) }
        mirror?.forget(removal)
    }
}

extension Principal {
    /// The principal a token record stands for.
    init(_ record: TokenRecord) {
        self.init(tenant: record.tenant, role: record.role, node: record.node, tokenID: record.id)
    }
}

/// The token index held in the api-server's memory: listed, then kept current by one etcd
/// watch of `/gpuplane/tokens/`, so authenticating a known token reads nothing from etcd.
///
/// While the watch fails (etcd unreachable, a compaction) the copy says it is not following,
/// and ``TokenAuthenticator`` goes back to reading etcd, until a new list and watch catch up.
public final class TokenMirror: Sendable {
    /// What the copy knows of a hash.
    public enum Lookup: Sendable, Equatable {
        /// A token the copy holds.
        case hit(Principal)
        /// A hash the copy does not hold, while it follows etcd.
        case miss
        /// The copy is not following etcd now (not started, listing, or its watch failed).
        case notFollowing
    }

    private let index: TokenIndex
    private let logger: Logger
    private let state = Mutex(State())

    /// A call waiting for the first list, and the task that gives up on it at its timeout.
    private struct Waiter {
        let continuation: CheckedContinuation<Void, Never>
        let timer: Task<Void, Never>

        /// Lets the call go on (once; never under `state`).
        func release() {
            timer.cancel()
            continuation.resume()
        }
    }

    private struct State {
        var principals: [String: Principal] = [:]
        var following = false
        /// Whether the copy has listed once since ``start()``.
        var listedOnce = false
        /// Calls waiting for the first list.
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
        /// The revision of the last change applied.
        var revision: Int64 = 0
        /// Revoked here before the watch delivered the delete: hash → the delete's revision
        /// (an older put the watch still delivers must not bring the token back).
        var revoked: [String: Int64] = [:]
        var task: Task<Void, Never>?
    }

    /// Makes a copy of `index`; nothing runs until ``start()``.
    public init(index: TokenIndex, logger: Logger) {
        self.index = index
        self.logger = logger
    }

    /// Lists and watches in a task of its own until ``stop()`` (once).
    public func start() {
        state.withLock { s in
            guard s.task == nil else { return }
            s.task = Task { [self] in await run() }
        }
    }

    /// Stops following: lookups say ``Lookup/notFollowing`` from now on.
    public func stop() {
        let (task, waiters) = state.withLock { s -> (Task<Void, Never>?, [Int: Waiter]) in
            s.following = false
            defer {
                s.task = nil
                s.waiters = [:]
            }
            return (s.task, s.waiters)
        }
        task?.cancel()
        for waiter in waiters.values { waiter.release() }
    }

    /// Waits, at most `timeout`, while the copy makes its first list after ``start()``, and
    /// says whether it follows etcd now. Answers at once when the copy was never started or
    /// has listed before (a watch that failed later is not waited for: etcd is what is
    /// wrong then, and waiting would only delay every call).
    public func waitForFirstList(timeout: Duration) async -> Bool {
        let id = state.withLock { s -> Int? in
            guard s.task != nil, !s.listedOnce else { return nil }
            s.nextWaiter += 1
            return s.nextWaiter
        }
        guard let id else { return isFollowing }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiting = state.withLock { s -> Bool in
                    guard s.task != nil, !s.listedOnce else { return false }
                    let timer = Task { [self] in
                        try? await Task.sleep(for: timeout)
                        wake(id)
                    }
                    s.waiters[id] = Waiter(continuation: continuation, timer: timer)
                    return true
                }
                if !waiting { continuation.resume() }
            }
        } onCancel: {
            wake(id)
        }
        return isFollowing
    }

    /// Calls waiting for the first list now (tests).
    var waitingForFirstList: Int { state.withLock { $0.waiters.count } }

    /// Lets the waiter `id` go (its time ran out, or it was cancelled).
    private func wake(_ id: Int) {
        state.withLock { $0.waiters.removeValue(forKey: id) }?.release()
    }

    /// What the copy knows of `sha256`.
    public func lookup(_ sha256: String) -> Lookup {
        state.withLock { s in
            guard s.following else { return .notFollowing }
            return s.principals[sha256].map { .hit($0) } ?? .miss
        }
    }

    /// Whether the copy follows etcd now.
    public var isFollowing: Bool { state.withLock { $0.following } }

    /// How many tokens the copy holds.
    public var count: Int { state.withLock { $0.principals.count } }

    /// Forgets a token revoked through this api-server, before its watch says so.
    func forget(_ removal: TokenIndex.Removal) {
        state.withLock { s in
            s.principals[removal.sha256] = nil
            if removal.revision > s.revision { s.revoked[removal.sha256] = removal.revision }
        }
    }

    private func run() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let (records, revision) = try await index.list()
                let waiters = state.withLock { s in
                    s.principals = records.mapValues(Principal.init)
                    s.revision = revision
                    s.revoked = s.revoked.filter { $0.value > revision }
                    for hash in s.revoked.keys { s.principals[hash] = nil }
                    s.following = true
                    s.listedOnce = true
                    defer { s.waiters = [:] }
                    return s.waiters
                }
                for waiter in waiters.values { waiter.release() }
                failures = 0
                for try await changes in index.watch(from: revision + 1) {
                    apply(changes)
                }
                // The watch ended without error: only when cancelled.
            } catch {
                state.withLock { $0.following = false }
                if Task.isCancelled { break }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("the token index watch failed; reading tokens from etcd until it is back", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: ResourceStore.relistPause(afterFailures: failures))
            }
        }
        state.withLock { $0.following = false }
    }

    private func apply(_ changes: [TokenIndex.Change]) {
        guard !changes.isEmpty else { return }
        state.withLock { s in
            for change in changes {
                if let revokedAt = s.revoked[change.sha256], change.revision < revokedAt { continue }
                s.principals[change.sha256] = change.record.map(Principal.init)
                s.revision = max(s.revision, change.revision)
            }
            s.revoked = s.revoked.filter { $0.value > s.revision }
        }
    }
}
