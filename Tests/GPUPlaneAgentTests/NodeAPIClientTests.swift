import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneService
import GPUPlaneTestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The agent's api-server client against a real api-server on a real etcd.
@Suite(.enabled(if: EtcdFixture.isAvailable, "needs etcd"))
struct NodeAPIClientTests {
    /// A world without podman: only the control plane is used.
    struct Plane {
        let handle: ControlPlane.Handle
        let node: String
        let tenant: String
        let token: String

        /// A node and tenant of their own on `handle`, the shared control plane when nil.
        init(on handle: ControlPlane.Handle? = nil) async throws {
            if let handle { self.handle = handle } else { self.handle = try await ControlPlane.shared.get() }
            let word = UUID().uuidString.lowercased().prefix(8)
            node = "node-\(word)"
            tenant = "t-\(word)"
            token = try await ControlPlane.nodeToken(self.handle, node: node)
        }

        func replica(_ name: String, bound: Bool = true) -> Replica {
            Replica(
                metadata: ObjectMeta(name: name, tenant: tenant),
                spec: ReplicaSpec(
                    owner: OwnerReference(kind: .application, name: "app", uid: "u"), role: name, mode: nil, modelSlug: nil,
                    gpus: 0, vramGB: 0, machineTypes: [], priority: .inference, image: "busybox"),
                binding: bound ? Binding(node: node, gpuIndices: []) : nil)
        }
    }

    @Test func registersHeartbeatsAndReportsStatus() async throws {
        let plane = try await Plane()
        // A registration is not sent twice (not idempotent), so its one try gets the time a
        // loaded full run needs (the agent itself retries registering in a loop).
        let api = NodeAPI.Client(NodeAPI.Configuration(baseURL: plane.handle.base + "/", token: plane.token, requestTimeout: .seconds(30)))
        let gpu = GPUDevice(index: 0, uuid: "GPU-test-0", product: "NVIDIA H100 80GB HBM3", memoryMiB: 81559)
        let node = try await api.register(NodeRegistration(name: plane.node, labels: ["gpu-mode": "shared"], gpus: [gpu]))
        #expect(node.metadata.labels["gpu-mode"] == "shared")
        #expect(try await api.heartbeat(node: plane.node) == 5)
        let status = NodeStatus(gpuHealth: [GPUHealth(uuid: "GPU-test-0", healthy: false, reason: "Xid79")], containers: 3)
        let stored = try await api.reportStatus(node: plane.node, status)
        #expect(stored.status.containers == 3)
        #expect(stored.status.gpuHealth.first?.reason == "Xid79")
        #expect(stored.status.isReady)

        // A token speaks for its own node only, and the error says so by its code.
        await #expect { try await api.heartbeat(node: "someone-else") } throws: { ($0 as? NodeAPIError)?.code == .forbidden }
        let stranger = NodeAPI.Client(NodeAPI.Configuration(baseURL: plane.handle.base, token: "not-a-token"))
        await #expect { try await stranger.heartbeat(node: plane.node) } throws: { ($0 as? NodeAPIError)?.code == .unauthorized }
    }

    @Test func replicaStatusOnlyForReplicasBoundHere() async throws {
        let plane = try await Plane()
        // The in-process api-server shares the test process's threads with the whole suite: a
        // loaded full run once took longer than the default 5 s to answer a status report.
        let api = NodeAPI.Client(NodeAPI.Configuration(baseURL: plane.handle.base, token: plane.token, requestTimeout: .seconds(30)))
        _ = try await plane.handle.store.create(plane.replica("mine"))
        _ = try await plane.handle.store.create(plane.replica("other", bound: false))
        let updated = try await api.reportStatus(replica: plane.tenant, "mine", ReplicaStatus(phase: .running, containerID: "abc"))
        #expect(updated.status.phase == .running)
        await #expect { try await api.reportStatus(replica: plane.tenant, "other", ReplicaStatus(phase: .running)) } throws: {
            ($0 as? NodeAPIError)?.code == .notFound
        }
        let list = try await api.listReplicas()
        #expect(list.items.map(\.metadata.name) == ["mine"])
    }

    /// With several api-servers, a client whose current one does not answer moves to the next
    /// and stays there; an answer that is a refusal (403) moves nothing.
    @Test func movesToTheNextApiServerWhenOneDoesNotAnswer() async throws {
        let plane = try await Plane()
        let dead = "http://127.0.0.1:\(TestEnvironment.freePort())"
        let api = NodeAPI.Client(
            NodeAPI.Configuration(
                baseURL: dead, token: plane.token, requestTimeout: .seconds(30), maxRetries: 1, retryBackoff: .milliseconds(10),
                otherURLs: [plane.handle.base]))
        #expect(api.currentBaseURL == dead)
        let gpu = GPUDevice(index: 0, uuid: "GPU-failover-0", product: "NVIDIA H100 80GB HBM3", memoryMiB: 81559)
        _ = try await api.register(NodeRegistration(name: plane.node, labels: [:], gpus: [gpu]))
        #expect(api.currentBaseURL == plane.handle.base)
        #expect(try await api.heartbeat(node: plane.node) == 5)
        await #expect { try await api.heartbeat(node: "someone-else") } throws: { ($0 as? NodeAPIError)?.code == .forbidden }
        #expect(api.currentBaseURL == plane.handle.base, "a refusal is an answer")
        #expect(try await api.listReplicas().items.isEmpty)

        // None answering: the error of the last one, after trying each once.
        let nowhere = NodeAPI.Client(
            NodeAPI.Configuration(
                baseURL: dead, token: "t", requestTimeout: .seconds(1), maxRetries: 0, retryBackoff: .milliseconds(10),
                otherURLs: ["http://127.0.0.1:\(TestEnvironment.freePort())"]))
        await #expect { try await nowhere.heartbeat(node: "n") } throws: { ($0 as? NodeAPIError)?.code == .unavailable }
    }

    /// A client goes back to its own api-server (the first URL) once that answers again after
    /// a move, and its node watch follows its calls both ways: the api-server it left holds no
    /// connection of the node afterwards. Without the way back, every node of a fleet sits on
    /// one api-server after each has restarted once.
    @Test func returnsToItsOwnApiServerOnceItAnswersAgainAndTheWatchFollows() async throws {
        let plane = try await Plane()
        var (own, ownServer) = try await ControlPlane.shared.anotherServer()
        let (other, otherServer) = try await ControlPlane.shared.anotherServer()
        defer {
            otherServer.task.cancel()
            other.deps.watchCaches.stop()
        }
        let api = NodeAPI.Client(
            NodeAPI.Configuration(
                baseURL: own.base, token: plane.token, requestTimeout: .seconds(30), maxRetries: 1, retryBackoff: .milliseconds(10),
                watchIdleTimeout: .seconds(2), otherURLs: [other.base], returnAfter: .milliseconds(400)))
        defer { api.shutdown() }
        let gpu = GPUDevice(index: 0, uuid: "GPU-return-0", product: "NVIDIA H100 80GB HBM3", memoryMiB: 81559)
        _ = try await api.register(NodeRegistration(name: plane.node, labels: [:], gpus: [gpu]))
        let seen = Collected<String>()
        let watching = Task {
            for await change in api.workloadChanges(node: plane.node) {
                if case .replicas(.upserted(let replica)) = change { seen.append(replica.metadata.name) }
            }
        }
        defer { watching.cancel() }
        func watches(_ handle: ControlPlane.Handle) -> Int { handle.deps.watchCaches.cache(Replica.self).subscriberCount }
        try await eventually("the node watch on its own api-server", timeout: 30) { watches(own) == 1 && watches(other) == 0 }

        // Its own api-server stops: calls move, and the watch with them.
        ownServer.task.cancel()
        _ = await ownServer.task.result
        own.deps.watchCaches.stop()
        #expect(try await api.heartbeat(node: plane.node) == 5)
        #expect(api.currentBaseURL == other.base)
        _ = try await plane.handle.store.create(plane.replica("while-away"))
        try await eventually("a replica bound while away seen", timeout: 30) { seen.all.contains("while-away") }
        try await eventually("the node watch on the other api-server", timeout: 30) { watches(other) == 1 }

        // It answers again where it listened: calls go back, and the watch leaves the other.
        let port = try #require(URLComponents(string: own.base)?.port)
        (own, ownServer) = try await ControlPlane.shared.anotherServer(port: port)
        defer {
            ownServer.task.cancel()
            own.deps.watchCaches.stop()
        }
        try await eventually("calls back on the own api-server", timeout: 30) { api.currentBaseURL == own.base }
        try await eventually("the node watch back on its own api-server", timeout: 30) { watches(own) == 1 && watches(other) == 0 }
        _ = try await plane.handle.store.create(plane.replica("back-home"))
        try await eventually("a replica bound after the return seen", timeout: 30) { seen.all.contains("back-home") }
        #expect(try await api.heartbeat(node: plane.node) == 5)
        #expect(api.currentBaseURL == own.base)
        #expect(seen.all.filter { $0 == "while-away" }.count == 1, "nothing seen twice across the moves")
    }

    /// The client tells the api-server how long it waits (`Gpuplane-Timeout-Ms`, its request
    /// timeout): a report it gave up on while etcd was frozen is dropped there once etcd
    /// answers again, not written behind the client's back (under overload such copies, each
    /// sent again by a retry, multiplied the api-server's work).
    @Test func aReportTheClientGaveUpOnIsNotWrittenLater() async throws {
        MetricsExporter.bootstrap()
        let handle = try await ControlPlane.startPrivate()
        defer {
            handle.deps.watchCaches.stop()
            handle.etcd.shutdown()
        }
        let plane = try await Plane(on: handle)
        let (tenant, token) = (plane.tenant, plane.token)
        _ = try await handle.store.create(plane.replica("late"))
        let patient = NodeAPI.Client(NodeAPI.Configuration(baseURL: handle.base, token: token, requestTimeout: .seconds(30)))
        defer { patient.shutdown() }
        let first = try await patient.reportStatus(replica: tenant, "late", ReplicaStatus(phase: .starting))
        let hasty = NodeAPI.Client(NodeAPI.Configuration(baseURL: handle.base, token: token, requestTimeout: .milliseconds(400), maxRetries: 0))
        defer { hasty.shutdown() }
        let abandoned = { MetricsExporter.render().split(separator: "\n").first { $0.hasPrefix("gpuplane_api_requests_abandoned_total ") }
            .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0 }
        let before = abandoned()

        let pid = try #require(handle.etcd.member.pid)
        kill(pid, SIGSTOP)
        var thawed = false
        defer { if !thawed { kill(pid, SIGCONT) } }
        await #expect { try await hasty.reportStatus(replica: tenant, "late", ReplicaStatus(phase: .running)) } throws: {
            ($0 as? NodeAPIError)?.code == .timeout
        }
        kill(pid, SIGCONT)
        thawed = true
        try await eventually("the api-server dropped the report its client gave up on", timeout: 30) { abandoned() >= before + 1 }
        let stored = try await handle.store.get(Replica.self, tenant: tenant, name: "late")
        #expect(stored.status.phase == .starting && stored.metadata.resourceVersion == first.metadata.resourceVersion)
    }

    /// The node's own api-server is picked by its name, the same on every host and run, and a
    /// fleet whose agents list the same api-servers spreads evenly over them.
    @Test func aNodesOwnApiServerIsPickedByItsNameAndAFleetSpreads() {
        let urls = ["https://a:8080", "https://b:8080", "https://c:8080"]
        // Pinned: an agent restarted, or upgraded, keeps its api-server.
        // (FNV-1a 64 of "gpu-7" mod 3 is 2, of "hollow-0" is 1.)
        #expect(NodeAPI.Configuration.ownFirst(urls, node: "gpu-7") == ["https://c:8080", "https://a:8080", "https://b:8080"])
        #expect(NodeAPI.Configuration.ownFirst(urls, node: "hollow-0") == ["https://b:8080", "https://c:8080", "https://a:8080"])
        #expect(NodeAPI.Configuration.ownFirst(["https://a:8080"], node: "gpu-7") == ["https://a:8080"])
        for count in 2...3 {
            var nodes = [String: Int]()
            for i in 0..<3_000 {
                let order = NodeAPI.Configuration.ownFirst(Array(urls.prefix(count)), node: "gpu-\(i)")
                #expect(Set(order) == Set(urls.prefix(count)))
                nodes[order[0], default: 0] += 1
            }
            let share = 3_000 / count
            #expect(nodes.count == count)
            #expect(nodes.values.allSatisfy { abs($0 - share) < share / 10 }, "\(nodes)")
        }
    }

    /// Gives up with a typed error after its retries. The time limit only catches a hang: a
    /// bound on the elapsed time (it was 5 s) failed on a loaded full-suite run at 5.5 s.
    @Test(.timeLimit(.minutes(1)))
    func unreachableServerTimesOutOrFailsFastWithATypedError() async throws {
        let port = TestEnvironment.freePort()
        let api = NodeAPI.Client(
            NodeAPI.Configuration(baseURL: "http://127.0.0.1:\(port)", token: "t", requestTimeout: .seconds(1), maxRetries: 2, retryBackoff: .milliseconds(10)))
        await #expect { try await api.heartbeat(node: "n") } throws: { ($0 as? NodeAPIError)?.code == .unavailable }
    }

    /// Against a server whose bookmarks come rarely and a client that drops a silent watch after
    /// eight seconds: the watch is dropped and resumed many times, and every change arrives
    /// exactly once, with one list only. (With 0.8 s, once in a loaded full run with 2 s, and in
    /// three full runs in a row on two cores with 4 s, a resumed watch was dropped again before
    /// its replay arrived, every time: at the full suite's peak the api-server's etcd reads
    /// before a resumed watch's first line took longer than the client's idle timeout.)
    @Test func droppedWatchResumesFromItsLastResourceVersion() async throws {
        let plane = try await Plane()
        let quiet = try await ControlPlane.shared.secondServer(bookmarkInterval: 60)
        let api = NodeAPI.Client(
            NodeAPI.Configuration(baseURL: quiet.base, token: plane.token, retryBackoff: .milliseconds(50), watchIdleTimeout: .seconds(8)))
        let seen = Collected<String>()
        let task = Task {
            for await change in api.replicaChanges() {
                switch change {
                case .listed(let items): seen.append("listed:\(items.count)")
                case .upserted(let replica): seen.append("up:\(replica.metadata.name):\(replica.status.phase.rawValue)")
                case .deleted(let replica): seen.append("del:\(replica.metadata.name)")
                }
            }
        }
        defer { task.cancel() }
        try await eventually("listed") { seen.all == ["listed:0"] }
        for index in 0..<4 {
            _ = try await plane.handle.store.create(plane.replica("r\(index)"))
            // Longer than the idle timeout: the watch is dropped and resumed in between.
            try await eventually("r\(index) seen") { seen.all.contains("up:r\(index):pending") }
            let drops = seen.all.count
            try await Task.sleep(for: .milliseconds(9000))
            #expect(seen.all.count == drops)
        }
        try await plane.handle.store.delete(Replica.self, tenant: plane.tenant, name: "r0")
        try await eventually("r0 deleted") { seen.all.contains("del:r0") }
        #expect(seen.all == ["listed:0", "up:r0:pending", "up:r1:pending", "up:r2:pending", "up:r3:pending", "del:r0"])
    }

    /// The node's watch of both kinds, as the agent holds it: each kind listed, then its
    /// changes; dropped (longer than the idle timeout without a line) and resumed, each kind from
    /// its own version, nothing missed or repeated.
    @Test func workloadChangesFollowBothKindsOnOneWatchAndResumeEach() async throws {
        let plane = try await Plane()
        let quiet = try await ControlPlane.shared.secondServer(bookmarkInterval: 60)
        let api = NodeAPI.Client(
            NodeAPI.Configuration(baseURL: quiet.base, token: plane.token, retryBackoff: .milliseconds(50), watchIdleTimeout: .seconds(8)))
        let server = ModelServer(
            metadata: ObjectMeta(name: "ms-\(plane.node)"),
            spec: .init(slug: "phi-3.5-mini", mode: .sharedPinned, vramGB: 10, serving: .init(image: "m:1", args: [])),
            binding: Binding(node: plane.node, gpuIndices: [0]))
        _ = try await plane.handle.store.create(plane.replica("r0"))
        let seen = Collected<String>()
        let task = Task {
            for await change in api.workloadChanges(node: plane.node) {
                switch change {
                case .replicas(.listed(let items)): seen.append("replicas listed:\(items.map(\.metadata.name))")
                case .replicas(.upserted(let replica)): seen.append("up:\(replica.metadata.name)")
                case .replicas(.deleted(let replica)): seen.append("del:\(replica.metadata.name)")
                case .modelServers(.listed(let items)): seen.append("servers listed:\(items.count)")
                case .modelServers(.upserted(let server)): seen.append("up:\(server.metadata.name)")
                case .modelServers(.deleted(let server)): seen.append("del:\(server.metadata.name)")
                }
            }
        }
        defer { task.cancel() }
        try await eventually("both listed") { seen.all == ["replicas listed:[\"r0\"]", "servers listed:0"] }
        _ = try await plane.handle.store.create(server)
        try await eventually("the model server seen") { seen.all.contains("up:ms-\(plane.node)") }
        // Longer than the idle timeout: the watch is dropped and resumed in between.
        try await Task.sleep(for: .milliseconds(9000))
        _ = try await plane.handle.store.create(plane.replica("r1"))
        try await plane.handle.store.delete(ModelServer.self, tenant: ObjectMeta.clusterTenant, name: "ms-\(plane.node)")
        try await eventually("r1 and the model server's deletion seen") { seen.all.count == 5 }
        try await Task.sleep(for: .milliseconds(9000))
        // Each kind in its order; the two kinds' lines are not ordered between them.
        #expect(seen.all.count == 5)
        #expect(seen.all.filter { $0.hasPrefix("replicas") || $0.contains(":r") } == ["replicas listed:[\"r0\"]", "up:r1"])
        #expect(seen.all.filter { $0.hasPrefix("servers") || $0.contains(":ms-") } == ["servers listed:0", "up:ms-\(plane.node)", "del:ms-\(plane.node)"])
    }

    @Test func compactedResourceVersionListsAgain() async throws {
        let plane = try await Plane()
        let api = NodeAPI.Client(NodeAPI.Configuration(baseURL: plane.handle.base, token: plane.token))
        let old = try await api.listReplicas().resourceVersion
        _ = try await plane.handle.store.create(plane.replica("a"))
        let revision = try await plane.handle.client.status().header.revision
        _ = try await plane.handle.client.compact(revision: revision)
        var lines: [ReplicaWatchLine] = []
        for try await line in api.watchReplicas(from: old) {
            lines.append(line)
            if line.type == .error { break }
        }
        #expect(lines.last?.type == .error)
        #expect(lines.last?.error?.code == 410)
    }
}
