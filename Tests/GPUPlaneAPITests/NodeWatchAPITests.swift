import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Testing

/// `GET /v1/nodes/{name}/watch`: a node's replicas and model servers in one stream, each line
/// tagged with its kind, each kind resumable from its own version; real etcd and api-server.
@Suite(.timeLimit(.minutes(5))) struct NodeWatchAPITests {
    private func name(_ line: [String: Any]) -> String? {
        ((line["object"] as? [String: Any])?["metadata"] as? [String: Any])?["name"] as? String
    }

    /// Runs `body` on an api-server and etcd of its own (for tests that compact etcd or count
    /// the cache's subscribers), with a node's name and token.
    private func onAPrivateServer(_ body: (Harness, _ node: String, _ token: String) async throws -> Void) async throws {
        let (h, server) = try await Harness.start()
        defer {
            server.task.cancel()
            h.etcd.shutdown()
        }
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        try await body(h, node, try await h.nodeToken(node))
    }

    private func server(_ name: String, on node: String) -> ModelServer {
        ModelServer(
            metadata: ObjectMeta(name: name),
            spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10, serving: .init(image: "m:1", args: ["--model", "x"])),
            binding: Binding(node: node, gpuIndices: [0]))
    }

    @Test func aNodeSeesItsReplicasAndModelServersInOneStreamAndResumesEachKind() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let other = "n-" + UUID().uuidString.prefix(6).lowercased()
        let token = try await h.nodeToken(node)
        let (tenant, user) = try await h.tenant(.enterprise)
        #expect(try await h.call("POST", "/v1/applications", token: user, body: app("a", pods: "  - {name: p, image: x}\n  - {name: q, image: x}\n")).status == 201)
        var mine = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.p")
        mine.binding = Binding(node: node, gpuIndices: [])
        _ = try await h.deps.store.update(mine)
        var theirs = try await h.deps.store.get(Replica.self, tenant: tenant, name: "a.q")
        theirs.binding = Binding(node: other, gpuIndices: [])
        _ = try await h.deps.store.update(theirs)
        _ = try await h.deps.store.create(server("ms-\(node)", on: node))
        _ = try await h.deps.store.create(server("ms-\(other)", on: other))

        // Without versions: the node's objects of both kinds as ADDED lines, then changes.
        let (curl, out) = try h.curlStream("/v1/nodes/\(node)/watch", token: token, "all.ndjson")
        defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("both kinds listed and bookmarked") {
            let seen = ndjsonLines(out)
            return Set(seen.filter { $0["type"] as? String == "BOOKMARK" }.compactMap { $0["kind"] as? String }) == ["replicas", "modelservers"]
        }
        let listed = ndjsonLines(out).filter { $0["type"] as? String == "ADDED" }
        #expect(listed.map { "\($0["kind"] ?? "-") \(name($0) ?? "-")" }.sorted() == ["modelservers ms-\(node)", "replicas a.p"])
        let versions = Dictionary(
            ndjsonLines(out).compactMap { line -> (String, Int64)? in
                guard let kind = line["kind"] as? String, let version = (line["resourceVersion"] as? String).flatMap({ Int64($0) }) else { return nil }
                return (kind, version)
            }, uniquingKeysWith: max)
        let replicaVersion = try #require(versions["replicas"])
        let serverVersion = try #require(versions["modelservers"])

        // A change of each kind, and changes of the other node's objects it never sees.
        #expect(try await h.call("PUT", "/v1/replicas/\(tenant)/a.p/status", token: token, body: #"{"phase": "running", "restarts": 0}"#).status == 200)
        try await h.deps.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: "ms-\(node)")
        try await h.deps.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: "ms-\(other)")
        try await eventually("a MODIFIED replica and a DELETED model server") {
            let seen = ndjsonLines(out)
            return seen.contains { $0["kind"] as? String == "replicas" && $0["type"] as? String == "MODIFIED" }
                && seen.contains { $0["kind"] as? String == "modelservers" && $0["type"] as? String == "DELETED" }
        }
        // Each kind's lines in order; the two kinds' are not ordered between them.
        let changes = ndjsonLines(out).filter { $0["type"] as? String == "MODIFIED" || $0["type"] as? String == "DELETED" }
        #expect(changes.map { "\($0["kind"] ?? "-") \($0["type"] ?? "-") \(name($0) ?? "-")" }.sorted() == [
            "modelservers DELETED ms-\(node)", "replicas MODIFIED a.p",
        ])
        #expect(!ndjsonLines(out).contains { name($0) == "a.q" || name($0) == "ms-\(other)" })

        // Resumed from each kind's version before the changes: exactly the changes again, after a
        // BOOKMARK of each kind at its own version.
        let (resumed, resumedOut) = try h.curlStream(
            "/v1/nodes/\(node)/watch?replicaVersion=\(replicaVersion)&modelServerVersion=\(serverVersion)", token: token, "resumed.ndjson")
        defer { resumed.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("the resumed stream delivers both changes") {
            ndjsonLines(resumedOut).filter { $0["type"] as? String != "BOOKMARK" }.count >= 2
        }
        let again = ndjsonLines(resumedOut)
        #expect(again.filter { $0["type"] as? String != "BOOKMARK" }.map { "\($0["kind"] ?? "-") \($0["type"] ?? "-") \(name($0) ?? "-")" }.sorted() == [
            "modelservers DELETED ms-\(node)", "replicas MODIFIED a.p",
        ])
        let firstBookmarks = again.prefix(2).map { "\($0["kind"] ?? "-") \($0["type"] ?? "-") \($0["resourceVersion"] ?? "-")" }.sorted()
        #expect(firstBookmarks == ["modelservers BOOKMARK \(serverVersion)", "replicas BOOKMARK \(replicaVersion)"])
    }

    @Test func onlyTheNodeItselfAndAdminsMayWatchItAndBadVersionsAreNamed() async throws {
        let h = try await SharedServer.shared.get()
        let node = "n-" + UUID().uuidString.prefix(6).lowercased()
        let otherToken = try await h.nodeToken("n-" + UUID().uuidString.prefix(6).lowercased())
        let (_, user) = try await h.tenant(.free)
        #expect(try await h.call("GET", "/v1/nodes/\(node)/watch", token: otherToken).status == 403)
        #expect(try await h.call("GET", "/v1/nodes/\(node)/watch", token: user).status == 403)
        #expect(try await h.call("GET", "/v1/nodes/\(node)/watch").status == 401)
        let token = try await h.nodeToken(node)
        for (query, field) in [("replicaVersion=x", "replicaVersion"), ("replicaVersion=5&modelServerVersion=-2", "modelServerVersion")] {
            let bad = try await h.call("GET", "/v1/nodes/\(node)/watch?\(query)", token: token)
            #expect(bad.status == 400, "\(query): \(bad.text)")
            #expect(bad.error["field"] as? String == field)
        }
        // An admin may watch any node's (a stream: only its first line is read).
        let (curl, out) = try h.curlStream("/v1/nodes/\(node)/watch", token: h.admin, "admin.ndjson")
        defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        try await eventually("an admin's stream bookmarks") { ndjsonLines(out).contains { $0["type"] as? String == "BOOKMARK" } }
    }

    /// A refused node watch leaves nothing behind: a replicas list (no replicaVersion) subscribed
    /// to the cache before the model servers' version was found bad, and that subscription goes
    /// with the 400 (it would otherwise fill with every node's changes until it overflowed).
    @Test func aRefusedWatchLeavesNoSubscription() async throws {
        try await onAPrivateServer { h, node, token in
            let cache = h.deps.watchCaches.cache(Replica.self)
            let before = cache.subscriberCount
            for _ in 0..<3 {
                let bad = try await h.call("GET", "/v1/nodes/\(node)/watch?modelServerVersion=x", token: token)
                #expect(bad.status == 400)
                #expect(bad.error["field"] as? String == "modelServerVersion")
            }
            #expect(cache.subscriberCount == before)
        }
    }

    /// A node's watch that ends (its client gone) leaves no cache subscription behind, whether
    /// it listed first or resumed from versions: both kinds' subscriptions deliver into the
    /// watch's one inbox, and nothing but the watch itself ends them.
    @Test func aClosedWatchLeavesNoSubscription() async throws {
        try await onAPrivateServer { h, node, token in
            let replicas = h.deps.watchCaches.cache(Replica.self)
            let servers = h.deps.watchCaches.cache(ModelServer.self)
            try await eventually("the caches started") { replicas.floor >= 0 && servers.floor >= 0 }
            let (before, beforeServers) = (replicas.subscriberCount, servers.subscriberCount)
            let head = try await h.client.range(.key("/nonexistent")).header.revision
            let (listing, _) = try h.curlStream("/v1/nodes/\(node)/watch", token: token, "listing.ndjson")
            defer { listing.kill9() }
            let (resuming, _) = try h.curlStream("/v1/nodes/\(node)/watch?replicaVersion=\(head)&modelServerVersion=\(head)", token: token, "resuming.ndjson")
            defer { resuming.kill9() }
            try await eventually("both watches subscribed to both kinds") {
                replicas.subscriberCount == before + 2 && servers.subscriberCount == beforeServers + 2
            }
            listing.kill9()
            resuming.kill9()
            try await eventually("every subscription gone with its watch") {
                replicas.subscriberCount == before && servers.subscriberCount == beforeServers
            }
        }
    }

    /// One kind's stream ending ends the node's: a compacted version gets that kind's 410 line,
    /// and the response is over (the client lists that kind again and reconnects with both).
    @Test func oneKindGoneEndsTheStream() async throws {
        try await onAPrivateServer { h, node, token in
            _ = try await h.deps.store.create(self.server("ms-\(node)", on: node))
            let old = try await h.client.range(.key("/nonexistent")).header.revision
            _ = try await h.deps.store.create(self.server("ms-\(node)-b", on: node))
            let head = try await h.client.range(.key("/nonexistent")).header.revision
            _ = try await h.client.compact(revision: head)
            let (curl, out) = try h.curlStream("/v1/nodes/\(node)/watch?replicaVersion=\(head)&modelServerVersion=\(old - 1)", token: token, "gone.ndjson")
            defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
            try await eventually("the model servers' ERROR 410 line, and the stream over") {
                ndjsonLines(out).contains { $0["kind"] as? String == "modelservers" && ($0["error"] as? [String: Any])?["code"] as? Int == 410 }
                    && !curl.isRunning
            }
        }
    }
}
