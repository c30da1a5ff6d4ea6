import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneLocal
import GPUPlaneTestSupport
import Glibc
import Logging
import Testing

/// Token hits: fresh ones trusted, recent ones trusted while read again in the background (a
/// revocation applies from the next call; a store that stopped answering does not hold the
/// call up), old ones read first. Real etcd of the test's own, stopped for the last part.
@Suite(.enabled(if: EtcdFixture.isAvailable)) struct TokenAuthenticatorTests {
    @Test func aRecentHitAnswersAtOnceWhileItIsReadAgain() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.stop() }
        let store = try ResourceStore.connect(endpoints: etcd.endpoints)
        let index = TokenIndex(store: store)
        let secret = "gp_test_" + UUID().uuidString.lowercased()
        let hash = Tokens.hash(secret)
        try await index.add(TokenRecord(id: "tok-" + hash.prefix(12), sha256: hash, tenant: "acme", role: .user))
        let auth = TokenAuthenticator(index: index, adminTokens: [], cacheSeconds: 0.05, staleSeconds: 600)
        #expect(try await auth.authenticate("Bearer \(secret)").tenant == "acme")

        // Revoked: the stale hit answers once more while the background read finds it gone,
        // then the token is refused.
        #expect(try await index.remove(hashPrefix: String(hash.prefix(12))) != nil)
        try await Task.sleep(for: .milliseconds(60))  // the hit's age past cacheSeconds, not a wait for something
        #expect(try await auth.authenticate("Bearer \(secret)").tenant == "acme", "a recent hit answers at once")
        try await eventually("the revocation applies from a later call") {
            do {
                _ = try await auth.authenticate("Bearer \(secret)")
                return false
            } catch let error as APIError {
                return error.code == .unauthorized
            }
        }

        // The store stops answering: a recent hit still answers; once it is older than
        // staleSeconds the call waits for the store and fails with 503.
        let other = "gp_test_" + UUID().uuidString.lowercased()
        let otherHash = Tokens.hash(other)
        try await index.add(TokenRecord(id: "tok-" + otherHash.prefix(12), sha256: otherHash, tenant: "globex", role: .user))
        // 20 s: a loaded run took more than a second to stop etcd between the two calls below.
        let shortStale = TokenAuthenticator(index: index, adminTokens: [], cacheSeconds: 0.05, staleSeconds: 20)
        #expect(try await shortStale.authenticate("Bearer \(other)").tenant == "globex")
        etcd.stop()
        try await Task.sleep(for: .milliseconds(60))
        #expect(try await shortStale.authenticate("Bearer \(other)").tenant == "globex", "no etcd read held it up")
        try await eventually("an old hit needs the store", timeout: 90) {
            do {
                _ = try await shortStale.authenticate("Bearer \(other)")
                return false
            } catch let error as APIError {
                return error.code == .unavailable
            }
        }
    }

    /// With the api-server's copy of the token index: a known token answers from memory (etcd
    /// frozen with SIGSTOP, and no cache to fall back on: without the copy the call would wait
    /// for etcd and fail); a token issued after the copy was listed answers at once (read from
    /// etcd on the miss) and then comes through the watch; a token revoked elsewhere leaves
    /// the copy through the watch and is refused; one revoked through this api-server leaves
    /// it at once.
    @Test func theCopyOfTheIndexAnswersFromMemoryAndFollowsRevocations() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let store = try ResourceStore.connect(endpoints: etcd.endpoints)
        let index = TokenIndex(store: store)
        func issue(_ tenant: String) async throws -> (secret: String, hash: String) {
            let secret = "gp_test_" + UUID().uuidString.lowercased()
            let hash = Tokens.hash(secret)
            try await index.add(TokenRecord(id: "tok-" + hash.prefix(12), sha256: hash, tenant: tenant, role: .user))
            return (secret, hash)
        }
        let early = try await issue("acme")
        let mirror = TokenMirror(index: index, logger: Logger(label: "test"))
        #expect(mirror.lookup(early.hash) == .notFollowing)
        mirror.start()
        defer { mirror.stop() }
        let auth = TokenAuthenticator(index: index, adminTokens: [], mirror: mirror, cacheSeconds: 0, staleSeconds: 0)
        try await eventually("the copy listed") { mirror.isFollowing && mirror.count == 1 }
        #expect(try await auth.authenticate("Bearer \(early.secret)").tenant == "acme")

        let late = try await issue("globex")
        #expect(try await auth.authenticate("Bearer \(late.secret)").tenant == "globex", "a token issued a moment ago")
        try await eventually("the new token in the copy") { mirror.lookup(late.hash) != .miss }

        // Revoked through another api-server (straight in etcd here): the watch takes it out.
        #expect(try await index.remove(hashPrefix: String(early.hash.prefix(12))) != nil)
        try await eventually("the revoked token out of the copy") { mirror.lookup(early.hash) == .miss }
        await #expect { try await auth.authenticate("Bearer \(early.secret)") } throws: { ($0 as? APIError)?.code == .unauthorized }

        // etcd frozen: the known token still answers, from memory.
        let pid = try #require(etcd.member.pid)
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        #expect(try await auth.authenticate("Bearer \(late.secret)").tenant == "globex", "answered without etcd")
        #expect(mirror.isFollowing)
        // Revoked through this api-server: out of the copy before any watch could say so.
        auth.revoked(TokenIndex.Removal(sha256: late.hash, revision: Int64.max / 2))
        #expect(mirror.lookup(late.hash) == .miss)
        kill(pid, SIGCONT)

        mirror.stop()
        #expect(mirror.lookup(late.hash) == .notFollowing)
    }
}
