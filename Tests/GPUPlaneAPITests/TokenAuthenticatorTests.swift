import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
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
        #expect(try await index.remove(hashPrefix: String(hash.prefix(12))))
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
}
