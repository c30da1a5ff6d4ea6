import CurlHTTP
import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Logging
import Testing

/// The api-server's shared watch cache (``WatchCache``: one etcd watch per kind behind every
/// client watch) against a real etcd and a real api-server, each test with its own etcd, so
/// that etcd's watcher count and its compaction are the test's alone. Watches are read with
/// the node-agent's own client.
@Suite(.enabled(if: EtcdFixture.isAvailable, "needs etcd"))
struct WatchCacheTests {
    /// One etcd and one api-server whose watch caches keep `limits`.
    final class Plane: Sendable {
        let etcd: EtcdFixture
        let client: Etcd.Client
        let deps: APIDependencies
        let base: String
        let admin: String
        let server: Task<Void, any Error>
        /// One transport for every watch of the test (a node-agent's client makes one each).
        let http = CurlHTTP.Client(name: "watch-cache-test", maxConnections: 512)
        var store: ResourceStore { deps.store }
        var replicas: WatchCache<Replica> { deps.watchCaches.cache(Replica.self) }

        init(limits: WatchCacheLimits = WatchCacheLimits()) async throws {
            etcd = try await EtcdFixture.start()
            client = try Etcd.Client(Etcd.Configuration(endpoints: etcd.endpoints))
            admin = Tokens.generate()
            let quiet = Logger(label: "gpuplane.api") { _ in SwiftLogNoOpLogHandler() }
            let store = ResourceStore(client: client)
            var deps = APIDependencies(
                store: store, catalog: try Catalog.standard(), adminTokens: [admin], heartbeatTTL: 5, bookmarkInterval: 0.5, logger: quiet)
            deps.watchCaches = WatchCaches(store: store, limits: limits, logger: quiet)
            self.deps = deps
            let running = try await startAPIServer(deps)
            server = running.task
            base = running.base
            let plane = (base, admin)
            try await eventually("api-server answers /healthz") {
                try await Plane.call(plane.0, .get, "/healthz", token: nil).status == 200
            }
        }

        func close() {
            deps.watchCaches.stop()
            server.cancel()
            http.shutdown()
            etcd.shutdown()
        }

        static func call(_ base: String, _ method: CurlHTTP.Method, _ path: String, token: String?, body: String? = nil) async throws -> CurlHTTP.Response {
            var headers = [CurlHTTP.Header("Content-Type", "application/json")]
            if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
            return try await ControlPlane.http.perform(
                CurlHTTP.Request(method: method, url: base + path, headers: headers, body: body.map { Data($0.utf8) }, timeout: .seconds(30)))
        }

        /// A token of `role` (`node` with `node`, `user` with `tenant`, creating the tenant).
        func token(node: String) async throws -> String {
            try await token(#"{"role": "node", "node": "\#(node)"}"#)
        }

        func token(tenant: String) async throws -> String {
            let created = try await Plane.call(base, .post, "/v1/tenants", token: admin, body: #"{"name": "\#(tenant)", "plan": "pro"}"#)
            guard created.status == 201 || created.status == 409 else { throw AgentHarnessError(description: "tenant: HTTP \(created.status)") }
            return try await token(#"{"role": "user", "tenant": "\#(tenant)"}"#)
        }

        private func token(_ body: String) async throws -> String {
            let reply = try await Plane.call(base, .post, "/v1/tokens", token: admin, body: body)
            guard let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any], let token = object["token"] as? String else {
                throw AgentHarnessError(description: "token: HTTP \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
            }
            return token
        }

        func api(_ token: String, base: String? = nil) -> NodeAPI.Client {
            NodeAPI.Client(
                NodeAPI.Configuration(baseURL: base ?? self.base, token: token, requestTimeout: .seconds(30), retryBackoff: .milliseconds(50)),
                http: http)
        }

        /// Another api-server on the same etcd, whose caches start now (as after a restart).
        func anotherServer() async throws -> (deps: APIDependencies, running: RunningAPIServer) {
            let quiet = Logger(label: "gpuplane.api") { _ in SwiftLogNoOpLogHandler() }
            let store = ResourceStore(client: client)
            var deps = APIDependencies(
                store: store, catalog: try Catalog.standard(), adminTokens: [admin], heartbeatTTL: 5, bookmarkInterval: 0.5, logger: quiet)
            deps.watchCaches = WatchCaches(store: store, limits: self.deps.watchCaches.limits, logger: quiet)
            return (deps, try await startAPIServer(deps))
        }

        /// etcd's own count of its watchers (`etcd_debugging_mvcc_watcher_total`).
        func etcdWatchers() async throws -> Int {
            let reply = try await ControlPlane.http.perform(CurlHTTP.Request(url: etcd.endpoints[0] + "/metrics", timeout: .seconds(10)))
            for line in String(decoding: reply.body, as: UTF8.self).split(separator: "\n") where line.hasPrefix("etcd_debugging_mvcc_watcher_total ") {
                if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return Int(value) }
            }
            throw AgentHarnessError(description: "etcd's /metrics has no etcd_debugging_mvcc_watcher_total")
        }

        /// etcd's present revision.
        func revision() async throws -> Int64 {
            try await client.range(.key("/"), countOnly: true).header.revision
        }
    }

    /// What the test wrote: each change of a replica at its revision, to compute what every
    /// watcher must see.
    struct Change {
        var revision: Int64
        var tenant: String
        var name: String
        var before: Replica?
        var after: Replica?
    }

    /// Writes replicas through the store and remembers every change.
    final class Writer: @unchecked Sendable {
        let store: ResourceStore
        private(set) var changes: [Change] = []
        private(set) var current: [String: Replica] = [:]
        private var random = SplitMix64(seed: 7)
        var label = ""

        init(store: ResourceStore) { self.store = store }

        static func replica(_ tenant: String, _ name: String, node: String?) -> Replica {
            Replica(
                metadata: ObjectMeta(name: name, tenant: tenant),
                spec: ReplicaSpec(
                    owner: OwnerReference(kind: .application, name: "app", uid: "u"), role: name, mode: nil, modelSlug: nil,
                    gpus: 0, vramGB: 0, machineTypes: [], priority: .inference, image: "busybox"),
                binding: node.map { Binding(node: $0, gpuIndices: []) })
        }

        /// Creates (or replaces, or deletes: `nil`) objects in one transaction: one revision.
        @discardableResult
        func write(_ objects: [(tenant: String, name: String, node: String?, delete: Bool)]) async throws -> Int64 {
            var handles: [(String, StoreTransaction.Handle<Replica>?)] = []
            let (_, result) = try await store.transaction { txn in
                for object in objects {
                    let key = "\(object.tenant)/\(object.name)"
                    if object.delete {
                        txn.delete(Replica.self, tenant: object.tenant, name: object.name)
                        handles.append((key, nil))
                    } else if var existing = current[key] {
                        existing.binding = object.node.map { Binding(node: $0, gpuIndices: []) }
                        existing.metadata.labels["change"] = "\(changes.count)"
                        if !label.isEmpty { existing.metadata.labels["big"] = label }
                        handles.append((key, try txn.update(existing)))
                    } else {
                        var fresh = Self.replica(object.tenant, object.name, node: object.node)
                        if !label.isEmpty { fresh.metadata.labels["big"] = label }
                        handles.append((key, try txn.create(fresh)))
                    }
                }
            }
            for ((key, handle), object) in zip(handles, objects) {
                let after = try handle.map { try result.object($0) }
                changes.append(Change(revision: result.revision, tenant: object.tenant, name: object.name, before: current[key], after: after))
                current[key] = after
            }
            return result.revision
        }

        /// One random change among `tenants` × 5 names and `nodes`: create, rebind, unbind,
        /// delete, or two objects in one transaction.
        @discardableResult
        func randomChange(tenants: [String], nodes: [String]) async throws -> Int64 {
            func pick<T>(_ items: [T]) -> T { items[Int(random.next() % UInt64(items.count))] }
            let tenant = pick(tenants)
            let name = "r\(random.next() % 5)"
            let node: String? = random.next() % 5 == 0 ? nil : pick(nodes)
            let exists = current["\(tenant)/\(name)"] != nil
            switch random.next() % 6 {
            case 0 where exists:
                return try await write([(tenant, name, nil, true)])
            case 1:
                let other = "r\(5 + random.next() % 3)"
                let otherExists = current["\(tenant)/\(other)"] != nil
                return try await write([(tenant, name, node, false), (tenant, other, pick(nodes), otherExists && random.next() % 2 == 0)])
            default:
                return try await write([(tenant, name, node, false)])
            }
        }

        /// The lines a watch from `revision` must deliver, as ``describe(_:)`` writes them:
        /// only `tenant`'s (nil: all) and only those bound to `node` (nil: all).
        func expected(after revision: Int64, tenant: String?, node: String?) -> [String] {
            func visible(_ replica: Replica?) -> Bool { replica.map { node == nil || $0.binding?.node == node } ?? false }
            var lines: [(revision: Int64, text: String)] = []
            for change in changes where change.revision > revision && (tenant == nil || change.tenant == tenant) {
                let type: String
                switch (visible(change.before), visible(change.after)) {
                case (false, true): type = "ADDED"
                case (true, true): type = "MODIFIED"
                case (true, false): type = "DELETED"
                case (false, false): continue
                }
                lines.append((change.revision, "\(type) \(change.tenant)/\(change.name) @\(change.revision)"))
            }
            // A line whose revision continues in the next says revision - 1.
            return lines.enumerated().map { index, line in
                let says = index + 1 < lines.count && lines[index + 1].revision == line.revision ? line.revision - 1 : line.revision
                return "\(line.text) rv=\(says)"
            }
        }
    }

    /// One watch connection of the agent's client, every line kept.
    final class Collector: Sendable {
        let lines = Locked<[ResourceWatchLine<Replica>]>([])
        let failure = Locked<String?>(nil)
        let task: Task<Void, Never>

        init(_ api: NodeAPI.Client, from revision: Int64) {
            let lines = lines
            let failure = failure
            task = Task {
                do {
                    for try await line in api.watch(Replica.self, "/v1/replicas", from: String(revision)) {
                        lines.withLock { $0.append(line) }
                    }
                    failure.withLock { $0 = "ended" }
                } catch {
                    failure.withLock { $0 = "\(error)" }
                }
            }
        }

        /// Whether a BOOKMARK at or past `revision` came: everything up to it was sent.
        func reached(_ revision: Int64) -> Bool {
            lines.withLock { $0.contains { $0.type == .bookmark && (Int64($0.resourceVersion ?? "") ?? 0) >= revision } }
        }

        /// The changes, as ``Writer/expected(after:tenant:node:)`` writes them.
        var changes: [String] {
            lines.withLock { $0.filter { $0.type != .bookmark }.map(WatchCacheTests.describe) }
        }

        func stop() { task.cancel() }
    }

    static func describe(_ line: ResourceWatchLine<Replica>) -> String {
        guard let object = line.object else { return "\(line.type.rawValue) \(line.error?.code ?? 0) \(line.error?.message ?? "")" }
        return "\(line.type.rawValue) \(object.metadata.tenant)/\(object.metadata.name) @\(object.metadata.resourceVersion) rv=\(line.resourceVersion ?? "")"
    }

    /// Many node watches of one kind make one etcd watch: etcd's watcher count does not grow
    /// with them, and each node sees its own bindings only.
    @Test func fiftyNodeWatchesShareOneEtcdWatcher() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let nodes = (0..<60).map { "node-\($0)" }
        var made: [NodeAPI.Client] = []
        for node in nodes { made.append(plane.api(try await plane.token(node: node))) }
        let apis = made
        let start = try await plane.revision()
        // Ten nodes first (both kinds' caches started, the api-server's informers running)...
        var collectors = (0..<10).map { Collector(apis[$0], from: start) }
        var modelServerWatches: [Task<Void, any Error>] = (0..<10).map { index in
            Task { for try await _ in apis[index].watch(ModelServer.self, "/v1/modelservers", from: String(start)) {} }
        }
        defer {
            for collector in collectors { collector.stop() }
            for watch in modelServerWatches { watch.cancel() }
        }
        try await eventually("ten replica watches subscribed") { plane.replicas.subscriberCount == 10 }
        try await eventually("ten model-server watches subscribed") { plane.deps.watchCaches.cache(ModelServer.self).subscriberCount == 10 }
        let before = try await plane.etcdWatchers()
        // ...then fifty more of each kind.
        collectors += (10..<60).map { Collector(apis[$0], from: start) }
        modelServerWatches += (10..<60).map { index in
            Task { for try await _ in apis[index].watch(ModelServer.self, "/v1/modelservers", from: String(start)) {} }
        }
        try await eventually("sixty replica watches subscribed") { plane.replicas.subscriberCount == 60 }
        try await eventually("sixty model-server watches subscribed") { plane.deps.watchCaches.cache(ModelServer.self).subscriberCount == 60 }
        #expect(try await plane.etcdWatchers() == before)

        let writer = Writer(store: plane.store)
        for index in 0..<30 { try await writer.write([("t-a", "r\(index)", nodes[index * 2], false)]) }
        let last = try await writer.write([("t-b", "pair-0", nodes[0], false), ("t-b", "pair-1", nodes[59], false)])
        try await eventually("every watch reached the last write") { collectors.allSatisfy { $0.reached(last) } }
        for (index, collector) in collectors.enumerated() {
            #expect(collector.changes == writer.expected(after: start, tenant: nil, node: nodes[index]), "node \(index)")
            #expect(collector.failure.withLock { $0 } == nil)
        }
        #expect(try await plane.etcdWatchers() == before)
    }

    /// Nodes that resume their watches on an api-server started after the last change of the
    /// kind (a restart in a quiet cluster: their version is below its cache's floor) are served
    /// by its cache, not by an etcd watch each that lasts until the next change. A deletion
    /// in between, which no range shows, keeps a watch on etcd, and the watch gets it.
    @Test func aWatchFromBeforeTheCacheStartedIsServedByItWhenNothingChangedSince() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let writer = Writer(store: plane.store)
        let created = try await writer.write([("t-a", "r0", "n0", false), ("t-a", "r1", "n0", false)])
        let deleted = try await writer.write([("t-a", "r1", nil, true)])
        // Another kind changes: etcd's revision moves on, the replicas' does not.
        _ = try await plane.client.put("/gpuplane-test/other", "x")
        let (deps, running) = try await plane.anotherServer()
        defer {
            deps.watchCaches.stop()
            running.task.cancel()
        }
        let replicas = deps.watchCaches.cache(Replica.self)
        try await eventually("the new api-server's cache started") { replicas.floor > deleted }
        let token = try await plane.token(node: "n0")
        let watchers = try await plane.etcdWatchers()

        // Resumed from the last change: nothing since, so the cache serves all of them.
        let quiet = (0..<5).map { _ in Collector(plane.api(token, base: running.base), from: deleted) }
        defer { for collector in quiet { collector.stop() } }
        try await eventually("five watches subscribed to the cache") { replicas.subscriberCount == 5 }
        #expect(try await plane.etcdWatchers() == watchers)
        // Resumed from before the deletion: etcd's watch sends it.
        let behind = Collector(plane.api(token, base: running.base), from: created)
        defer { behind.stop() }
        do {
            try await eventually("the deletion reached the watch from before it") {
                behind.changes == writer.expected(after: created, tenant: nil, node: "n0")
            }
        } catch {
            Issue.record("subscribers \(replicas.subscriberCount) floor \(replicas.floor) created \(created) deleted \(deleted) got \(behind.lines.withLock { $0.prefix(3).map { "\($0.type) \($0.resourceVersion ?? "")" } }) \(behind.failure.withLock { $0 } ?? ""), wanted \(writer.expected(after: created, tenant: nil, node: "n0"))")
            throw error
        }
        #expect(behind.changes.first?.hasPrefix("DELETED t-a/r1") == true)
        #expect(replicas.subscriberCount == 5)

        // A change after reaches every watch, the cache's and etcd's.
        let moved = try await writer.write([("t-a", "r0", "n0", false)])
        try await eventually("every watch reached the change") { quiet.allSatisfy { $0.reached(moved) } && behind.reached(moved) }
        for collector in quiet {
            #expect(collector.changes == writer.expected(after: deleted, tenant: nil, node: "n0"))
            #expect(collector.failure.withLock { $0 } == nil)
        }
        #expect(behind.changes == writer.expected(after: created, tenant: nil, node: "n0"))
    }

    /// A change reaches only the watches of the nodes it concerns (its replica's node before
    /// and after) and the unrouted ones, not every node's watch: the cache's deliveries count
    /// exactly those. The other nodes' watches still get bookmarks at the head (from their
    /// ticks) and see nothing of the change.
    @Test func aChangeWakesOnlyTheWatchesOfItsNodes() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let nodes = (0..<30).map { "node-\($0)" }
        var apis: [NodeAPI.Client] = []
        for node in nodes { apis.append(plane.api(try await plane.token(node: node))) }
        let start = try await plane.revision()
        let collectors = apis.map { Collector($0, from: start) } + [Collector(plane.api(plane.admin), from: start)]
        defer { for collector in collectors { collector.stop() } }
        try await eventually("31 watches subscribed") { plane.replicas.subscriberCount == 31 }
        // Any progress etcd sent to everyone before the writes is counted in the baseline.
        let writer = Writer(store: plane.store)
        let before = plane.replicas.batchDeliveries
        let created = try await writer.write([("t-a", "moving", "node-3", false)])
        try await eventually("node-3 and the admin got the create") { collectors[3].reached(created) && collectors[30].reached(created) }
        try await writer.write([("t-a", "moving", "node-7", false)])
        let deleted = try await writer.write([("t-a", "moving", nil, true)])
        try await eventually("node-3, node-7 and the admin reached the delete") {
            collectors[3].reached(deleted) && collectors[7].reached(deleted) && collectors[30].reached(deleted)
        }
        // Every other node's watch is served up to the head by its own ticks, with no line.
        try await eventually("the other nodes' bookmarks reached the delete") {
            collectors.indices.allSatisfy { collectors[$0].reached(deleted) }
        }
        for (index, collector) in collectors.enumerated() {
            let node: String? = index < 30 ? nodes[index] : nil
            #expect(collector.changes == writer.expected(after: start, tenant: nil, node: node), "watch \(index)")
        }
        #expect(writer.expected(after: start, tenant: nil, node: "node-7").count == 2, "node-7 saw the replica come and go")
        // Batches: create → node-3 + admin; rebind → node-3, node-7, admin; delete → node-7 +
        // admin. The ticks' progress items are not batches of changes and are not counted.
        let batches = plane.replicas.batchDeliveries - before
        #expect(batches == 7, "\(batches) batch deliveries for 3 changes to 30 node watches and an admin watch")
    }

    /// Node, tenant and admin watches from revisions inside the cache's window, before it (an
    /// etcd watch of their own that hands over to the cache), and past it (waiting for it) see
    /// exactly the changes their filter admits, in order, each once; tenant B never sees A's.
    @Test func everyWatchSeesExactlyWhatItsFilterAdmits() async throws {
        let plane = try await Plane(limits: WatchCacheLimits(maxEvents: 12))
        defer { plane.close() }
        let nodes = ["n0", "n1", "n2", "n3"]
        let tenants = ["t-a", "t-b"]
        var watchers: [(api: NodeAPI.Client, tenant: String?, node: String?)] = [(plane.api(plane.admin), nil, nil)]
        for node in nodes { watchers.append((plane.api(try await plane.token(node: node)), nil, node)) }
        for tenant in tenants { watchers.append((plane.api(try await plane.token(tenant: tenant)), tenant, nil)) }
        let writer = Writer(store: plane.store)
        let start = try await plane.revision()
        // Live from the start (the first watch starts the cache at etcd's present revision).
        var collectors: [(Collector, Int64, String?, String?)] = watchers.map { (Collector($0.api, from: start), start, $0.tenant, $0.node) }
        defer { for collector in collectors { collector.0.stop() } }
        try await eventually("live watches subscribed") { plane.replicas.subscriberCount == watchers.count }
        var revisions: [Int64] = []
        for _ in 0..<40 { revisions.append(try await writer.randomChange(tenants: tenants, nodes: nodes)) }
        // The window holds the last 12 changes or so: the start and the tenth write are before it.
        let floor = plane.replicas.floor
        #expect(floor > revisions[10])
        #expect(floor <= revisions[36])
        let head = revisions.last ?? start
        for from in [start, revisions[10], revisions[36], revisions[38], head, head + 3] {
            collectors += watchers.map { (Collector($0.api, from: from), from, $0.tenant, $0.node) }
        }
        for _ in 0..<15 { revisions.append(try await writer.randomChange(tenants: tenants, nodes: nodes)) }
        let last = revisions.last ?? head
        _ = try? await eventually("every watch reached the last write", timeout: 60) { collectors.allSatisfy { $0.0.reached(last) } }
        for (collector, from, tenant, node) in collectors {
            let bookmark = collector.lines.withLock { $0.last { $0.type == .bookmark }?.resourceVersion ?? "-" }
            #expect(collector.reached(last), "from \(from) tenant \(tenant ?? "-") node \(node ?? "-"): last bookmark \(bookmark), last write \(last)")
            let expected = writer.expected(after: from, tenant: tenant, node: node)
            #expect(collector.changes == expected, "from \(from) tenant \(tenant ?? "-") node \(node ?? "-") (window from \(floor))")
            #expect(collector.failure.withLock { $0 } == nil)
            if tenant == "t-b" { #expect(!collector.changes.contains { $0.contains("t-a/") }) }
        }
        // The watches from before the window watched etcd until they caught up, then joined the cache.
        #expect(plane.replicas.subscriberCount == collectors.count)
        #expect(writer.expected(after: start, tenant: nil, node: nil).count > 40)
    }

    /// 60 changes of 500 kB to replicas on `node`, a revision each: far more than the sockets
    /// hold, so a stream that stopped reading blocks its writer and its buffer fills. Returns
    /// the writer (its expected changes) and the last revision (`start` when none).
    private func writeBigChanges(_ store: ResourceStore, on node: String, after start: Int64) async throws -> (Writer, Int64) {
        let writer = Writer(store: store)
        writer.label = String(repeating: "x", count: 500_000)
        var last = start
        for index in 0..<60 { last = try await writer.write([("t-a", "big-\(index)", node, false)]) }
        return (writer, last)
    }

    /// A subscriber that stops reading is cut with the 503 line once its buffer is full, while
    /// the others go on; it resumes from the resourceVersion the line names and misses nothing.
    @Test func aSlowWatchIsCutAndResumes() async throws {
        let plane = try await Plane(limits: WatchCacheLimits(maxEvents: 1000, maxBytes: 256 << 20, subscriberBuffer: 4))
        defer { plane.close() }
        let token = try await plane.token(node: "slow-node")
        let start = try await plane.revision()
        let dir = try TestEnvironment.temporaryDirectory(prefix: "slow-watch")
        let out = dir.appendingPathComponent("slow.ndjson")
        let slow = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: ["-sN", "-H", "Authorization: Bearer \(token)", "\(plane.base)/v1/replicas?watch=true&resourceVersion=\(start)"],
            logFile: out)
        defer { slow.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        let fast = Collector(plane.api(token), from: start)
        defer { fast.stop() }
        try await eventually("both watches subscribed") { plane.replicas.subscriberCount == 2 }
        slow.signal(SIGSTOP)
        let (writer, last) = try await writeBigChanges(plane.store, on: "slow-node", after: start)
        try await eventually("the slow watch is cut", timeout: 60) { plane.replicas.subscriberCount == 1 }
        try await eventually("the fast watch has everything", timeout: 60) { fast.reached(last) }
        let expected = writer.expected(after: start, tenant: nil, node: "slow-node")
        #expect(fast.changes == expected)
        slow.signal(SIGCONT)
        var lines: [ResourceWatchLine<Replica>] = []
        try await eventually("the slow watch ends with ERROR 503", timeout: 60, every: 1) {
            let data = (try? Data(contentsOf: out)) ?? Data()
            lines = data.split(separator: 0x0A).compactMap { try? GPUPlaneJSON.decode(ResourceWatchLine<Replica>.self, from: Data($0)) }
            return lines.last?.type == .error
        }
        let error = try #require(lines.last?.error)
        #expect(error.code == 503)
        let resume = try #require(error.message.split(separator: " ").last.flatMap { Int64($0) })
        let before = lines.filter { $0.type != .bookmark && $0.type != .error }.map(Self.describe)
        #expect(before.count < 60)
        let resumed = Collector(plane.api(token), from: resume)
        defer { resumed.stop() }
        try await eventually("the resumed watch reached the last write", timeout: 60) { resumed.reached(last) }
        #expect(before + resumed.changes == expected)
    }

    /// A node's watch of both kinds (one task reading one inbox) that stops reading is cut with
    /// its replicas' 503 line once the inbox is full, and resumes from the version the line
    /// names missing nothing, as a watch of one kind does.
    @Test func aSlowNodeWatchIsCutAndResumes() async throws {
        let plane = try await Plane(limits: WatchCacheLimits(maxEvents: 1000, maxBytes: 256 << 20, subscriberBuffer: 4))
        defer { plane.close() }
        let token = try await plane.token(node: "slow-node")
        let start = try await plane.revision()
        let out = try TestEnvironment.temporaryDirectory(prefix: "slow-node-watch").appendingPathComponent("slow.ndjson")
        let slow = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: [
                "-sN", "-H", "Authorization: Bearer \(token)",
                "\(plane.base)/v1/nodes/slow-node/watch?replicaVersion=\(start)&modelServerVersion=\(start)",
            ],
            logFile: out)
        defer { slow.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        let servers = plane.deps.watchCaches.cache(ModelServer.self)
        try await eventually("both kinds subscribed") { plane.replicas.subscriberCount == 1 && servers.subscriberCount == 1 }
        slow.signal(SIGSTOP)
        let (writer, last) = try await writeBigChanges(plane.store, on: "slow-node", after: start)
        try await eventually("the slow node watch is cut", timeout: 60) { plane.replicas.subscriberCount == 0 }
        slow.signal(SIGCONT)
        var lines: [(kind: String?, line: ResourceWatchLine<Replica>)] = []
        try await eventually("the stream ends with the replicas' ERROR 503, and no subscription is left", timeout: 60, every: 1) {
            let data = (try? Data(contentsOf: out)) ?? Data()
            lines = data.split(separator: 0x0A).compactMap { raw in
                let kind = (try? JSONSerialization.jsonObject(with: Data(raw)) as? [String: Any])?["kind"] as? String
                return (try? GPUPlaneJSON.decode(ResourceWatchLine<Replica>.self, from: Data(raw))).map { (kind, $0) }
            }
            return lines.last?.line.type == .error && !slow.isRunning && servers.subscriberCount == 0
        }
        #expect(lines.last?.kind == "replicas")
        let error = try #require(lines.last?.line.error)
        #expect(error.code == 503)
        let resume = try #require(error.message.split(separator: " ").last.flatMap { Int64($0) })
        let before = lines.filter { $0.kind == "replicas" && $0.line.type != .bookmark && $0.line.type != .error }.map { Self.describe($0.line) }
        #expect(before.count < 60)
        let resumed = Collector(plane.api(token), from: resume)
        defer { resumed.stop() }
        try await eventually("the resumed watch reached the last write", timeout: 60) { resumed.reached(last) }
        #expect(before + resumed.changes == writer.expected(after: start, tenant: nil, node: "slow-node"))
    }

    /// Subscribers cancelled while the cache fans changes out to them: the cache yields to its
    /// subscribers' tasks under its lock, and a cancelled subscriber's termination handler runs
    /// under the runtime's lock of its task; when that handler took the cache's lock, a cancel
    /// landing mid-fan-out deadlocked both (an api-server froze at SIGTERM with 2,500 node
    /// watches). Rounds of 1,000 subscribers, cancelled while writes stream in; every round's
    /// consumers must end, and the cache must go on serving. A regression shows as a hang, not a
    /// failure: the deadlock takes the pool's threads (and the cache's lock its cleanup needs).
    @Test func cancellingSubscribersMidFanOutNeverDeadlocks() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let cache = plane.replicas
        try await cache.start()
        let writer = Writer(store: plane.store)
        let writing = Task {
            var index = 0
            while !Task.isCancelled {
                _ = try? await writer.write([("t-a", "churn-\(index % 20)", nil, false)])
                index += 1
            }
        }
        defer { writing.cancel() }
        let ended = Locked(0)
        for round in 0..<20 {
            let consumers = (0..<1000).map { _ in
                Task.detached {
                    if let subscription = cache.subscribe(after: cache.head) {
                        for await _ in subscription.items {}
                    }
                    ended.withLock { $0 += 1 }
                }
            }
            try await eventually("round \(round): every subscriber attached") { cache.subscriberCount >= 1000 }
            for consumer in consumers { consumer.cancel() }
            try await eventually("round \(round): every subscriber ended", timeout: 20) { ended.withLock { $0 } == (round + 1) * 1000 }
        }
        try await eventually("the subscriptions forgotten") { cache.subscriberCount == 0 }
        let head = cache.head
        let last = try await writer.write([("t-a", "after", nil, false)])
        try await eventually("the cache still follows etcd") { cache.head >= last && last > head }
    }

    /// A routed subscription's tick queues the cache's head through the same hook every time:
    /// the progress reaches the sink at the same depth of the caller's stack on the 1,000th
    /// tick as on the first. Held in a `Locked<(() -> Void)?>`, the hook was stored back
    /// wrapped in two more thunks at each call (64 bytes leaked and two frames deeper a tick:
    /// ~30 KB a second in an api-server with 2,500 nodes; docs/benchmarks.md).
    @Test func ticksNeitherLeakNorDeepen() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let cache = plane.replicas
        try await cache.start()
        let depths = Locked<[Int]>([])
        let sink = WatchCacheSink<Replica>(
            deliver: { item in
                if case .batch(let events, _) = item, events.isEmpty { depths.withLock { $0.append(stackAddress()) } }
                return true
            },
            finish: {})
        let subscription = try #require(cache.subscribe(after: cache.head, route: "node-a", into: sink))
        defer { subscription.cancel() }
        for _ in 0..<1_000 { subscription.tick() }
        let marks = depths.withLock { $0 }
        #expect(marks.count == 1_000)
        #expect(Set(marks).count == 1, "the progress hook ran at \(Set(marks).count) depths, \((marks.first ?? 0) - (marks.last ?? 0)) bytes deeper at the last tick")
    }

    /// A node's watch resuming from the cache gets in its replay only the changes of its node
    /// (its replicas before or after each change), not a copy of the whole window: when an
    /// api-server restarted, the 2,500 nodes that moved to its peer each resumed there, and
    /// their copies of the window (up to 10,000 changes) took the peer to 2 GB. An unrouted
    /// subscription (an admin's watch) still replays everything.
    @Test func aRoutedReplayHoldsOnlyItsNodesChanges() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let cache = plane.replicas
        try await cache.start()
        let start = cache.head
        let writer = Writer(store: plane.store)
        // 40 replicas over four nodes, one revision each; then r0 moves from node-0 to node-3,
        // r1 (node-1) is deleted, and one transaction rebinds r4 (node-0 → node-2) and r8
        // (node-0 → node-3).
        var concerning: [String: Int] = [:]
        for index in 0..<40 {
            try await writer.write([("t-a", "r\(index)", "node-\(index % 4)", false)])
            concerning["node-\(index % 4)", default: 0] += 1
        }
        try await writer.write([("t-a", "r0", "node-3", false)])
        concerning["node-0", default: 0] += 1
        concerning["node-3", default: 0] += 1
        try await writer.write([("t-a", "r1", nil, true)])
        concerning["node-1", default: 0] += 1
        let last = try await writer.write([("t-a", "r4", "node-2", false), ("t-a", "r8", "node-3", false)])
        concerning["node-0", default: 0] += 2
        concerning["node-2", default: 0] += 1
        concerning["node-3", default: 0] += 1
        try await eventually("the cache reached the last write") { cache.head >= last }
        for node in ["node-0", "node-1", "node-2", "node-3", "node-9"] {
            let events = try replay(cache, after: start, route: node)
            #expect(events.count == concerning[node, default: 0], "\(node): \(events.count) changes replayed")
            #expect(events.allSatisfy { $0.event.object?.binding?.node == node || $0.event.previous?.binding?.node == node })
            #expect(events.map(\.event.revision) == events.map(\.event.revision).sorted())
        }
        #expect(try replay(cache, after: start, route: nil).count == 44)
    }

    /// The changes a subscription after `revision` (routed to `route`) gets at once, its replay.
    private func replay(_ cache: WatchCache<Replica>, after revision: Int64, route: String?) throws -> [CachedWatchEvent<Replica>] {
        let items = Locked<[WatchCacheItem<Replica>]>([])
        let sink = WatchCacheSink<Replica>(deliver: { item in items.withLock { $0.append(item) }; return true }, finish: {})
        let subscription = try #require(cache.subscribe(after: revision, route: route, into: sink))
        subscription.cancel()
        return items.withLock { $0 }.flatMap { item -> [CachedWatchEvent<Replica>] in
            if case .batch(let events, _) = item { return events }
            return []
        }
    }

    /// A change's previous object is the very object the window holds for the change before
    /// it (one decoded object, shared), not a second copy decoded from etcd's prevKV; the
    /// objects kept for sharing go as the window drops their changes.
    @Test func aChangeSharesItsPreviousObjectWithTheChangeBefore() async throws {
        let plane = try await Plane(limits: WatchCacheLimits(maxEvents: 12))
        defer { plane.close() }
        let cache = plane.replicas
        try await cache.start()
        let start = cache.head
        let writer = Writer(store: plane.store)
        try await writer.write([("t-a", "moving", nil, false)])
        try await writer.write([("t-a", "moving", "node-1", false)])
        try await writer.write([("t-a", "moving", "node-2", false), ("t-a", "other", "node-2", false)])
        let last = try await writer.write([("t-a", "moving", nil, true)])
        try await eventually("the cache reached the delete") { cache.head >= last }
        let events = try replay(cache, after: start, route: nil).map(\.event).filter { ($0.object ?? $0.previous)?.metadata.name == "moving" }
        try #require(events.count == 4)
        #expect(events[0].previousBox == nil)
        for index in 1..<4 {
            let before = try #require(events[index - 1].objectBox)
            #expect(events[index].previousBox === before, "change \(index) holds a copy of its previous object")
        }
        #expect(events[2].object?.binding?.node == "node-2" && events[3].object == nil)
        // "moving" is deleted, "other" kept; then 20 changes of new objects push both out of
        // the window (12 changes at most): only the objects of changes still in it are kept.
        #expect(cache.keptObjects == 1)
        for index in 0..<20 { try await writer.write([("t-a", "fill-\(index)", nil, false)]) }
        let filled = try await writer.write([("t-a", "fill-last", nil, false)])
        try await eventually("the cache reached the last fill") { cache.head >= filled }
        #expect(cache.keptObjects <= 13, "\(cache.keptObjects) objects kept for a window of 12 changes")
        #expect(cache.keptObjects >= 1)
    }

    /// The shared etcd watch restarted (etcd itself restarted; the cache's watch stopped and
    /// opened again after more writes) loses and repeats nothing; after etcd compacted what
    /// the cache missed, its subscribers are told to resume, and resuming answers 410: the
    /// agent lists again. No silent gap.
    @Test func restartsAndCompactionLoseNothingSilently() async throws {
        let plane = try await Plane()
        defer { plane.close() }
        let nodes = ["n0", "n1"]
        let apis = [plane.api(try await plane.token(node: "n0")), plane.api(try await plane.token(node: "n1"))]
        let writer = Writer(store: plane.store)
        let start = try await plane.revision()
        let raw = nodes.indices.map { Collector(apis[$0], from: start) }
        defer { for collector in raw { collector.stop() } }
        // The agent's resumable watch: what a node-agent sees.
        let seen = Locked<[[String]]>([[], []])
        let followers = nodes.indices.map { index in
            Task {
                for await change in apis[index].replicaChanges() {
                    let text: String
                    switch change {
                    case .listed(let items): text = "listed " + items.map { "\($0.metadata.tenant)/\($0.metadata.name)" }.sorted().joined(separator: ",")
                    case .upserted(let replica): text = "up \(replica.metadata.tenant)/\(replica.metadata.name) @\(replica.metadata.resourceVersion)"
                    case .deleted(let replica): text = "del \(replica.metadata.tenant)/\(replica.metadata.name)"
                    }
                    seen.withLock { $0[index].append(text) }
                }
            }
        }
        defer { for follower in followers { follower.cancel() } }
        try await eventually("watches subscribed") { plane.replicas.subscriberCount == 4 }
        func agentView(_ node: String, after revision: Int64) -> [String] {
            writer.expected(after: revision, tenant: nil, node: node).map { line in
                let parts = line.split(separator: " ")
                return (parts[0] == "DELETED" ? "del " : "up ") + parts[1] + (parts[0] == "DELETED" ? "" : " " + parts[2])
            }
        }
        for _ in 0..<10 { try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes) }

        // etcd restarted under the cache's watch.
        try await plane.etcd.restart()
        for _ in 0..<10 { try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes) }
        // The cache's watch stopped while writes go on, then opened again from where it was.
        let restarts = plane.replicas.restartCount
        try await plane.replicas.interruptWatch {
            for _ in 0..<10 { try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes) }
        }
        var last = try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes)
        #expect(plane.replicas.restartCount == restarts + 1)
        try await eventually("every watch reached the last write", timeout: 60) { raw.allSatisfy { $0.reached(last) } }
        for (index, node) in nodes.enumerated() {
            #expect(raw[index].changes == writer.expected(after: start, tenant: nil, node: node))
            #expect(raw[index].failure.withLock { $0 } == nil)
            try await eventually("\(node)'s agent view caught up") { seen.withLock { $0[index] } == ["listed "] + agentView(node, after: start) }
        }

        // The cache's watch stopped, and etcd compacted what it missed: its subscribers are
        // told to reconnect from where they were; etcd then answers 410 and agents list again.
        let cutAt = last
        try await plane.replicas.interruptWatch {
            for _ in 0..<10 { try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes) }
            _ = try await plane.client.compact(revision: try await plane.revision())
        }
        try await eventually("the raw watches end with ERROR 503", timeout: 60) {
            raw.allSatisfy { $0.lines.withLock { $0.last?.type == .error } }
        }
        for collector in raw {
            let error = try #require(collector.lines.withLock { $0.last?.error })
            #expect(error.code == 503)
            let resume = try #require(error.message.split(separator: " ").last.flatMap { Int64($0) })
            #expect(resume >= cutAt)
            // Resuming from there is answered 410 (compacted): never a silent gap.
            var answer: ResourceWatchLine<Replica>?
            for try await line in apis[0].watch(Replica.self, "/v1/replicas", from: String(resume)) where line.type != .bookmark {
                answer = line
                break
            }
            #expect(answer?.type == .error)
            #expect(answer?.error?.code == 410)
        }
        last = try await writer.randomChange(tenants: ["t-a", "t-b"], nodes: nodes)
        for (index, node) in nodes.enumerated() {
            // Listed again after the 410: the list is the store's present, then each change once.
            let present = writer.current.values.filter { $0.binding?.node == node }
                .map { "\($0.metadata.tenant)/\($0.metadata.name)" }.sorted().joined(separator: ",")
            try await eventually("\(node)'s agent listed again and caught up", timeout: 60) {
                let view = seen.withLock { $0[index] }
                guard let relist = view.lastIndex(where: { $0.hasPrefix("listed ") }), relist > 0 else { return false }
                var state = Set(view[relist].dropFirst("listed ".count).split(separator: ",").map(String.init))
                for line in view[(relist + 1)...] {
                    let parts = line.split(separator: " ")
                    if parts[0] == "del" { state.remove(String(parts[1])) } else { state.insert(String(parts[1])) }
                }
                return state.sorted().joined(separator: ",") == present && view.count(where: { $0.hasPrefix("listed ") }) == 2
            }
        }
        _ = last
    }
}

/// The address of a local of this call: how deep the caller's stack is.
@inline(never)
private func stackAddress() -> Int {
    var local = 0
    return withUnsafeMutablePointer(to: &local) { Int(bitPattern: $0) }
}
