import Foundation
import EtcdClient
@testable import GPUPlaneAPI
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

    /// An api-server that just started (its copy of the index making its first list) gets
    /// calls from many nodes at once: they wait for that one list rather than each reading
    /// its own token from etcd (2,500 nodes coming back to a restarted api-server read 5,000
    /// tokens). etcd is frozen while the calls arrive, so the list cannot win the race; once it
    /// runs, every call answers, and etcd served the list and the watch, not 100 reads.
    @Test func callsDuringTheFirstListWaitForIt() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let store = try ResourceStore.connect(endpoints: etcd.endpoints)
        var secrets: [String] = []
        for i in 0..<100 {
            let secret = "gp_test_" + UUID().uuidString.lowercased()
            let hash = Tokens.hash(secret)
            try await TokenIndex(store: store).add(TokenRecord(id: "tok-" + hash.prefix(12), sha256: hash, tenant: "t\(i)", role: .user))
            secrets.append(secret)
        }
        // A client of its own: its transfers are the copy's and the calls' etcd requests.
        let client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints, requestTimeout: .seconds(60)))
        let index = TokenIndex(store: ResourceStore(client: client))
        let mirror = TokenMirror(index: index, logger: Logger(label: "test"))
        let auth = TokenAuthenticator(index: index, adminTokens: [], mirror: mirror, firstListWait: .seconds(120))
        let pid = try #require(etcd.member.pid)
        kill(pid, SIGSTOP)
        var continued = false
        defer { if !continued { kill(pid, SIGCONT) } }
        mirror.start()
        defer { mirror.stop() }
        let calls = Task {
            try await withThrowingTaskGroup(of: String.self) { group in
                for secret in secrets { group.addTask { try await auth.authenticate("Bearer \(secret)").tenant } }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
        }
        try await eventually("every call waiting for the first list", timeout: 60) { mirror.waitingForFirstList == 100 }
        let before = client.transportStatistics.transfers
        kill(pid, SIGCONT)
        continued = true
        let tenants = try await calls.value
        #expect(tenants == Set((0..<100).map { "t\($0)" }))
        #expect(mirror.isFollowing)
        // The list; no read per call (the watch is a stream, counted when it ends).
        let requests = client.transportStatistics.transfers - before
        #expect(requests <= 5, "100 calls during the first list made \(requests) etcd requests")
        #expect(mirror.waitingForFirstList == 0)
    }

}
