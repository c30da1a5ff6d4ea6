import CurlHTTP
import EtcdClient
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Synchronization
import Testing

@testable import GPUPlaneScheduling


/// Heartbeats kept in the api-servers' memory (`HeartbeatTracker`), end to end: real etcd, real
/// `gpuplane-api-server` processes (killed with SIGKILL and restarted), the scheduler's node
/// lifecycle in this process, and beats sent as a node-agent sends them.
@Suite("Heartbeats in the api-servers' memory", .serialized, .enabled(if: EtcdFixture.isAvailable))
struct HeartbeatTrackerTests {
    /// Steady beats make no etcd request: etcd's own counters of ranges, writes and lease
    /// renewals move by far less than the beats (two requests each when every beat renewed a
    /// lease).
    @Test func steadyBeatsCostEtcdNothing() async throws {
        try await SchedulerHarness.with { h in
            // A silent-after no loaded run reaches between two beats of a node: a node marked
            // silent and live again would be writes the beats did not cause by themselves.
            let servers = try await APIServers.start(h, count: 1, ttl: 120, silentAfter: "90s")
            defer { servers.shutdown() }
            let nodes = (0..<10).map { "steady-\($0)" }
            var tokens: [String: String] = [:]
            for node in nodes {
                tokens[node] = try await servers.register(node, via: 0)
                // The first beat after registration writes nothing either; beat once before counting.
                #expect(try await servers.beat(node, token: tokens[node] ?? "", via: 0) == 200)
            }
            let before = try await EtcdCounters.read(h.etcd)
            let started = ContinuousClock.now
            let rounds = 20
            for _ in 0..<rounds {
                for node in nodes { #expect(try await servers.beat(node, token: tokens[node] ?? "", via: 0) == 200) }
            }
            let after = try await EtcdCounters.read(h.etcd)
            let took = ContinuousClock.now - started
            // What the api-server and the harness ask of etcd without any beat, over as long
            // as the beats took (a loaded run stretches it: the requests of its own periodic
            // work then grow with it), is not the beats' cost.
            try await Task.sleep(for: took)
            let idle = try await EtcdCounters.read(h.etcd)
            let beats = Double(rounds * nodes.count)
            let requests = (after.total - before.total) - (idle.total - after.total)
            let writes = (after.puts + after.txns - before.puts - before.txns) - (idle.puts + idle.txns - after.puts - after.txns)
            print("\(Int(beats)) beats in \(took): etcd ranges +\(after.ranges - before.ranges), puts +\(after.puts - before.puts), txns +\(after.txns - before.txns), lease renewals +\(after.renewals - before.renewals); idle as long: +\(idle.total - after.total) requests")
            // Two requests per beat before the tracker (a range and a lease renewal): 400.
            #expect(requests < beats / 4, "etcd requests during \(Int(beats)) beats, less the idle ones: \(requests)")
            #expect(writes < beats / 10, "heartbeats wrote to etcd: \(writes)")
        }
    }

    /// A node that stops beating is marked silent by its api-server and NotReady at once after
    /// (no grace); nodes that keep beating never go NotReady, neither when their api-server is
    /// killed and restarted (it starts with empty memory) nor when it dies and they beat to the
    /// other one. A node that moved to another api-server is never marked silent by the first.
    /// A node deleted through one api-server gets 404 from the other.
    @Test func silenceFailoverRestartAndDeletion() async throws {
        try await SchedulerHarness.with { h in
            // silent-after 6 s: beats of this process come late in a loaded run (seconds), and
            // a late beat past silent-after is a node marked silent, rightly.
            let servers = try await APIServers.start(h, count: 2, ttl: 10, silentAfter: "6s")
            defer { servers.shutdown() }
            let scheduler = h.startScheduler()
            try await h.waitUntilLeading(scheduler)
            let log = KeyLog()
            let from = try await h.client.range(.prefix(KeySpace.heartbeats)).header.revision + 1
            let watch = Task {
                for try await response in h.client.watch(.prefix(KeySpace.heartbeats), startRevision: from) {
                    for event in response.events { log.append(event) }
                }
            }
            defer { watch.cancel() }

            // steady: beats to 0 only, then to 1 when 0 is gone. restarted: to 0, through its
            // restart. quiet: stops. mover: to 0, then to 1 while 0 still runs.
            var tokens: [String: String] = [:]
            for node in ["steady", "restarted", "quiet", "mover"] {
                tokens[node] = try await servers.register(node, via: 0)
            }
            let steady = servers.beatLoop("steady", token: tokens["steady"] ?? "", order: [0, 1])
            let restarted = servers.beatLoop("restarted", token: tokens["restarted"] ?? "", order: [0])
            let quiet = servers.beatLoop("quiet", token: tokens["quiet"] ?? "", order: [0])
            let mover = servers.beatLoop("mover", token: tokens["mover"] ?? "", order: [0])
            defer { for loop in [steady, restarted, quiet, mover] { loop.cancel() } }
            for node in ["steady", "restarted", "quiet", "mover"] {
                try await eventually("\(node) Ready from its key", timeout: 30) {
                    try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: node).status.isReady
                }
            }

            // A node that stops: silent, then NotReady at once (HeartbeatExpired).
            quiet.cancel()
            try await eventually("quiet NotReady", timeout: 30) {
                let node = try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "quiet")
                let ready = node.status.conditions.first { $0.type == NodeHeartbeat.readyCondition }
                return ready?.status == false && ready?.reason == LeaderSession.ReadyReason.heartbeatExpired
            }
            #expect(log.states("quiet").contains { if case .silent = $0 { true } else { false } }, "\(log.states("quiet"))")
            // It beats again: live, Ready.
            let back = servers.beatLoop("quiet", token: tokens["quiet"] ?? "", order: [1])
            defer { back.cancel() }
            try await eventually("quiet Ready again", timeout: 30) {
                try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "quiet").status.isReady
            }

            let server1 = try #require(log.lastServer("quiet"))
            let server0 = try #require(log.firstServer("steady"))

            // A node moved to server 1 while server 0 runs: 1 writes its key under its own
            // lease; 0 never marks it silent (its compare on its lease fails, or its watch
            // forgot the node first), though the node has not beaten to it for longer than
            // its silent-after: 1 s of beats to 1 and then 7 s more (6 s plus several sweeps).
            // Only what follows server 1's write counts: before it, a late beat may rightly
            // have let server 0 mark the node silent.
            mover.cancel()
            let moved = servers.beatLoop("mover", token: tokens["mover"] ?? "", order: [1])
            defer { moved.cancel() }
            try await eventually("mover's key written by server 1", timeout: 30) { log.lastServer("mover") == server1 }
            let beatsBefore = servers.beats("mover")
            try await eventually("twenty-five more beats of mover", timeout: 90) { servers.beats("mover") >= beatsBefore + 25 }
            let sinceServer1 = log.states("mover").drop(while: { if case .live(let server) = $0 { server != server1 } else { true } })
            #expect(!sinceServer1.contains { if case .silent(let server) = $0 { server == server0 } else { false } }, "\(log.states("mover"))")

            // Deleted through server 0 while it beats to server 1: 1 answers 404 once its watch
            // saw the key go.
            #expect(try await APIServers.call("DELETE", servers.url(0) + "/v1/nodes/mover", token: servers.admin).status == 204)
            #expect(try await h.client.get(NodeHeartbeat.key("mover")) == nil)
            try await eventually("server 1 answers mover's beat 404", timeout: 30) {
                try await servers.beat("mover", token: tokens["mover"] ?? "", via: 1) == 404
            }
            moved.cancel()

            // Server 0 killed and restarted at once: "restarted" beats to it again (its new
            // life writes the key on the node's first beat, before the old lease expires);
            // "steady" moves to 1 (or stays with 0). Neither goes NotReady.
            servers.kill9(0)
            try servers.launch(0)
            try await servers.waitReady(0)
            try await eventually("restarted's key rewritten by the restarted server", timeout: 30) {
                guard let server = log.lastServer("restarted") else { return false }
                return server != server0 && server != server1
            }
            for node in ["steady", "restarted"] {
                let events = try await h.events(about: node)
                #expect(!events.contains { $0.spec.reason == EventRecorder.Reason.nodeNotReady }, "\(node): \(events.map(\.spec.message))")
                #expect(try await h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: node).status.isReady)
            }

            // Server 0 killed for good: "restarted" has no other api-server; its key vanishes
            // with the lease (not silent: nobody saw it stop) and it is NotReady after the grace.
            servers.kill9(0)
            try await eventually("restarted NotReady after its key vanished and the grace", timeout: 60) {
                try await !h.store.get(Node.self, tenant: ObjectMeta.clusterTenant, name: "restarted").status.isReady
            }
            #expect(log.states("restarted").last == .deleted(expired: false), "\(log.states("restarted"))")
            try await eventually("steady's key written by server 1", timeout: 30) { log.lastServer("steady") == server1 }
            let events = try await h.events(about: "steady")
            #expect(!events.contains { $0.spec.reason == EventRecorder.Reason.nodeNotReady }, "steady: \(events.map(\.spec.message))")
        }
    }
}

extension HeartbeatTrackerTests {
    /// When an api-server dies, its nodes connect to the survivors within a second. Connections
    /// the survivor has not accepted yet wait in its listener's accept queue; past that queue the
    /// kernel drops them and their clients try again 1, 3 and 7 seconds later, beats among them
    /// (at 5,000 hollow nodes, hundreds of live nodes marked silent). With the api-server stopped
    /// (SIGSTOP: it accepts nothing), a burst of 1,000 connections all complete their handshake:
    /// they wait in the queue. Behind Hummingbird's default queue of 256, 257 did.
    @Test func aBurstOfConnectionsWaitsInTheAcceptQueue() async throws {
        let somaxconn = (try? String(contentsOfFile: "/proc/sys/net/core/somaxconn", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 4096
        // The kernel cuts any queue to somaxconn (4096 on Linux 5.4 and later).
        let burst = min(1000, somaxconn)
        try await SchedulerHarness.with { h in
            let servers = try await APIServers.start(h, count: 1, ttl: 120, silentAfter: "90s")
            defer { servers.shutdown() }
            servers.signal(0, SIGSTOP)
            defer { servers.signal(0, SIGCONT) }
            let sockets = try ConnectionBurst(port: servers.ports[0], count: burst)
            defer { sockets.close() }
            try await eventually("\(burst) connections to a stopped api-server queued (connected: \(sockets.connected()))", timeout: 20) {
                sockets.connected() == burst
            }
            servers.signal(0, SIGCONT)
            try await servers.waitReady(0)
        }
    }
}

/// Non-blocking TCP connections to a loopback port, opened at once.
final class ConnectionBurst: Sendable {
    private let fds: [Int32]

    init(port: Int, count: Int) throws {
        var fds: [Int32] = []
        for _ in 0..<count {
            guard let fd = TestSockets.connectLoopback(port: port, nonBlocking: true) else {
                let failure = errno
                for fd in fds { Glibc.close(fd) }
                throw HarnessError("connect: errno \(failure)")
            }
            fds.append(fd)
        }
        self.fds = fds
    }

    /// How many have completed their handshake (writable, no error).
    func connected() -> Int {
        var polls = fds.map { pollfd(fd: $0, events: Int16(POLLOUT), revents: 0) }
        guard poll(&polls, nfds_t(polls.count), 0) >= 0 else { return 0 }
        return zip(fds, polls).filter { fd, polled in
            guard polled.revents & Int16(POLLOUT) != 0 else { return false }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            return getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0
        }.count
    }

    func close() {
        for fd in fds { Glibc.close(fd) }
    }
}

/// Real `gpuplane-api-server` processes on one etcd, with an admin token.
final class APIServers: Sendable {
    let admin: String
    let ports: [Int]
    private let directory: URL
    private let etcdEndpoints: [String]
    private let ttl: Int
    private let silentAfter: String
    private let processes = Mutex<[Int: ChildProcess]>([:])
    private let answered = Mutex<[String: Int]>([:])

    private init(directory: URL, etcdEndpoints: [String], count: Int, ttl: Int, silentAfter: String) {
        self.admin = "gp_hb_admin_" + UUID().uuidString.lowercased().filter { $0 != "-" }
        self.ports = (0..<count).map { _ in TestEnvironment.freePort() }
        self.directory = directory
        self.etcdEndpoints = etcdEndpoints
        self.ttl = ttl
        self.silentAfter = silentAfter
    }

    static var executable: String {
        URL(fileURLWithPath: SchedulerHarness.executable).deletingLastPathComponent().appendingPathComponent("gpuplane-api-server").path
    }

    static func start(_ h: SchedulerHarness, count: Int, ttl: Int, silentAfter: String) async throws -> APIServers {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw HarnessError("gpuplane-api-server not built at \(executable): run `swift build --product gpuplane-api-server`")
        }
        let servers = APIServers(
            directory: try TestEnvironment.temporaryDirectory(prefix: "hb"), etcdEndpoints: h.etcd.endpoints, count: count, ttl: ttl,
            silentAfter: silentAfter)
        try servers.admin.write(to: servers.directory.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
        try "".write(to: servers.directory.appendingPathComponent("empty.conf"), atomically: true, encoding: .utf8)
        do {
            for i in 0..<count { try servers.launch(i) }
            for i in 0..<count { try await servers.waitReady(i) }
        } catch {
            servers.shutdown()
            throw error
        }
        return servers
    }

    func url(_ i: Int) -> String { "http://127.0.0.1:\(ports[i])" }

    func launch(_ i: Int) throws {
        let process = try ChildProcess(
            executable: Self.executable,
            arguments: [
                "--etcd.endpoints", etcdEndpoints.joined(separator: ","), "--port", "\(ports[i])",
                "--admin-token-file", directory.appendingPathComponent("admin-token").path, "--heartbeat-ttl", "\(ttl)",
                "--silent-after", silentAfter, "--log-level", "notice", "--log-destination", "stderr",
            ],
            environment: ["GPUPLANE_CONFIG": directory.appendingPathComponent("empty.conf").path, "NOTIFY_SOCKET": ""],
            logFile: directory.appendingPathComponent("api-\(i)-\(UUID().uuidString.prefix(4)).log"))
        processes.withLock { $0[i] = process }
    }

    func waitReady(_ i: Int) async throws {
        try await eventually("api-server \(i) ready", timeout: 60) { try await Self.call("GET", self.url(i) + "/readyz").status == 200 }
    }

    /// Sends `signal` to server `i`.
    func signal(_ i: Int, _ signal: Int32) {
        processes.withLock { $0[i] }?.signal(signal)
    }

    func kill9(_ i: Int) {
        processes.withLock { $0.removeValue(forKey: i) }?.kill9()
    }

    func shutdown() {
        let all = processes.withLock { p in
            defer { p = [:] }
            return Array(p.values)
        }
        for process in all { process.kill9() }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A node token for `node`, and the node registered with it through server `i`.
    func register(_ node: String, via i: Int) async throws -> String {
        let issued = try await Self.call("POST", url(i) + "/v1/tokens", token: admin, body: #"{"role": "node", "node": "\#(node)"}"#)
        guard let token = (try? JSONSerialization.jsonObject(with: issued.body) as? [String: Any])?["token"] as? String else {
            throw HarnessError("no node token: \(String(decoding: issued.body, as: UTF8.self))")
        }
        let registration = #"{"name": "\#(node)", "gpus": [{"index": 0, "uuid": "GPU-\#(node)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}]}"#
        let registered = try await Self.call("POST", url(i) + "/v1/nodes", token: token, body: registration)
        guard registered.status == 201 else { throw HarnessError("registration: \(registered.status) \(String(decoding: registered.body, as: UTF8.self))") }
        return token
    }

    /// One beat of `node` to server `i`: the status, or 0 without an answer.
    func beat(_ node: String, token: String, via i: Int) async throws -> Int {
        let status = (try? await Self.call("POST", url(i) + "/v1/nodes/\(node)/heartbeat", token: token, timeout: 5))?.status ?? 0
        if status == 200 { answered.withLock { $0[node, default: 0] += 1 } }
        return status
    }

    /// The beats of `node` answered 200 so far.
    func beats(_ node: String) -> Int { answered.withLock { $0[node] ?? 0 } }

    /// Beats `node` every 300 ms as an agent with the api-servers `order` does: to the first
    /// that answers, staying with it until it stops answering.
    func beatLoop(_ node: String, token: String, order: [Int]) -> Task<Void, Never> {
        Task {
            var current = 0
            while !Task.isCancelled {
                for attempt in 0..<order.count {
                    let i = order[(current + attempt) % order.count]
                    if (try? await beat(node, token: token, via: i)) == 200 {
                        current = (current + attempt) % order.count
                        break
                    }
                }
                try? await Task.sleep(for: .milliseconds(300))
            }
        }
    }

    /// Calls through libcurl, not URLSession: the beat loops are cancelled mid-call, and
    /// FoundationNetworking's cancel of an async `data(for:)` can deadlock with its completion
    /// (the cancel holds the task's status lock and waits on the session's queue, whose
    /// completion waits on that lock): the whole test process hung.
    static func call(_ method: String, _ url: String, token: String? = nil, body: String? = nil, timeout: Double = 10) async throws -> (status: Int, body: Data) {
        let response = try await http.perform(.api(
            method, url, token: token, headers: body == nil ? [] : [CurlHTTP.Header("Content-Type", "application/json")], body: body.map { Data($0.utf8) },
            timeout: .milliseconds(Int(timeout * 1000))))
        return (response.status, response.body)
    }

    static let http = CurlHTTP.Client(name: "heartbeat-test-curl")
}

/// Every heartbeat key change a watch saw, in order.
final class KeyLog: Sendable {
    private let changes = Mutex<[(node: String, state: NodeHeartbeats.KeyState)]>([])

    func append(_ event: Etcd.WatchEvent) {
        guard let node = KeySpace.node(ofHeartbeatKey: event.kv.keyString) else { return }
        let state: NodeHeartbeats.KeyState =
            event.type == .put ? NodeHeartbeats.KeyState(value: event.kv.value) : .deleted(expired: false)
        changes.withLock { $0.append((node, state)) }
    }

    var count: Int { changes.withLock { $0.count } }

    func states(_ node: String) -> [NodeHeartbeats.KeyState] {
        changes.withLock { $0.filter { $0.node == node }.map(\.state) }
    }

    /// The server that wrote `node`'s first key.
    func firstServer(_ node: String) -> String? {
        for state in states(node) {
            if case .live(let server?) = state { return server }
        }
        return nil
    }

    /// The server that wrote `node`'s last live key.
    func lastServer(_ node: String) -> String? {
        for state in states(node).reversed() {
            if case .live(let server?) = state { return server }
        }
        return nil
    }
}

/// etcd's counters of requests, from its `/metrics`.
struct EtcdCounters {
    var ranges = 0.0
    var puts = 0.0
    var txns = 0.0
    var renewals = 0.0
    var total: Double { ranges + puts + txns + renewals }

    static func read(_ etcd: EtcdFixture) async throws -> EtcdCounters {
        guard let endpoint = etcd.endpoints.first else { throw HarnessError("etcd has no endpoint") }
        let (status, body) = try await APIServers.call("GET", endpoint + "/metrics")
        guard status == 200 else { throw HarnessError("etcd /metrics: \(status)") }
        var counters = EtcdCounters()
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let value = Double(parts[parts.count - 1]) else { continue }
            let name = parts[0].split(separator: "{").first.map(String.init) ?? ""
            switch name {
            case "etcd_mvcc_range_total": counters.ranges += value
            case "etcd_mvcc_put_total": counters.puts += value
            case "etcd_mvcc_txn_total": counters.txns += value
            case "etcd_debugging_lease_renewed_total": counters.renewals += value
            default: break
            }
        }
        return counters
    }
}
