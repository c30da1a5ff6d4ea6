import EtcdClient
import Foundation
import GPUPlaneAPI
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneTestSupport
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Requests a hostile tenant (or no one at all) can send, each of which once took the
/// api-server down or answered wrongly. The server runs in this process: a trap fails the run.
@Suite(.timeLimit(.minutes(5))) struct HostileRequestTests {
    /// Resuming a watch after the largest revision overflowed `version + 1`.
    @Test func watchResumeAfterTheLargestRevisionIsRefused() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let nodeToken = try await h.nodeToken(node)
        let routes = [
            ("/v1/applications", token), ("/v1/deployments", token), ("/v1/replicas", token), ("/v1/events", token),
            ("/v1/nodes", nodeToken), ("/v1/modelservers", nodeToken), ("/v1/replicas", nodeToken),
        ]
        for (path, caller) in routes {
            for version in ["9223372036854775807", "9223372036854775808", "-1", "0x10"] {
                let reply = try await h.call("GET", "\(path)?watch=true&resourceVersion=\(version)", token: caller)
                #expect(reply.status == 400, "\(path) at \(version): \(reply.status) \(reply.text)")
                #expect(reply.error["field"] as? String == "resourceVersion")
            }
        }
        // A node's watch of both kinds: each version, named.
        for field in ["replicaVersion", "modelServerVersion"] {
            for version in ["9223372036854775807", "9223372036854775808", "-1", "0x10"] {
                let reply = try await h.call("GET", "/v1/nodes/\(node)/watch?\(field)=\(version)", token: nodeToken)
                #expect(reply.status == 400, "\(field) at \(version): \(reply.status) \(reply.text)")
                #expect(reply.error["field"] as? String == field)
            }
        }
        #expect(try await h.call("GET", "/healthz").status == 200)
    }

    /// `num_gpus × min_instances/max_instances` overflowed in the deployment rules.
    @Test func hugeInstanceCountsAreRefusedNotMultiplied() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        func body(_ name: String, gpus: String, minimum: String, maximum: String) -> String {
            #"{"model_name": "\#(name)", "gpu": "H100-80GB", "num_gpus": \#(gpus), "max_batch_size": 8, "hf": {"repo": "org/model-7b"}, "settings": {"min_instances": \#(minimum), "max_instances": \#(maximum)}}"#
        }
        let cases = [
            body("a", gpus: "1", minimum: "0", maximum: "9223372036854775807"),
            body("b", gpus: "2", minimum: "0", maximum: "4611686018427387904"),
            body("c", gpus: "2", minimum: "4611686018427387904", maximum: "4611686018427387904"),
            body("d", gpus: "4611686018427387904", minimum: "2", maximum: "2"),
            body("e", gpus: "-4611686018427387904", minimum: "2", maximum: "3"),
        ]
        for text in cases {
            let created = try await h.call("POST", "/v1/deployments", token: token, body: text)
            #expect(created.status == 422, "\(text): \(created.status) \(created.text)")
            let manifest = "deployment: " + text
            let validated = try await h.call("POST", "/v1/validate", token: token, body: manifest)
            #expect(validated.status == 200 && validated.json["valid"] as? Bool == false, "validate \(text): \(validated.status) \(validated.text)")
        }
        // Updating a 2-GPU deployment to huge bounds.
        #expect(try await h.call("POST", "/v1/deployments", token: token, body: body("two", gpus: "2", minimum: "0", maximum: "1")).status == 201)
        for maximum in ["9223372036854775807", "4611686018427387904"] {
            let update = try await h.call(
                "PUT", "/v1/deployments/two", token: token,
                body: #"{"settings": {"min_instances": 0, "max_instances": \#(maximum)}}"#)
            #expect(update.status == 422, "\(update.status) \(update.text)")
            #expect(update.text.contains("max_instances"))
        }
        #expect(try await h.call("GET", "/healthz").status == 200)
    }

    /// Sizes read off a repository name (`1e30x1b`, `infx1b`) and a huge `weights_gb` were
    /// converted to Int and trapped; NaN passed the fit check.
    @Test func weightsSizesOutsideDoublesRangeAreSafe() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.pro)
        for (index, repo) in ["org/m-1e30x1b", "org/m-infx1b", "org/m-1e19x1b", "org/m-nanx1b", "org/m-1e400b", "org/m-nan-b"].enumerated() {
            let body = #"{"model_name": "w\#(index)", "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "\#(repo)"}, "settings": {"min_instances": 0, "max_instances": 1}}"#
            let reply = try await h.call("POST", "/v1/deployments", token: token, body: body)
            // Not a parameter count: no size is estimated, so nothing is refused for fit.
            #expect(reply.status == 201, "\(repo): \(reply.status) \(reply.text)")
        }
        for weights in ["1e20", "1e308", "-1", "0"] {
            let body = #"{"model_name": "big", "gpu": "H100-80GB", "num_gpus": 1, "max_batch_size": 8, "hf": {"repo": "org/m"}, "weights_gb": \#(weights), "settings": {"min_instances": 0, "max_instances": 1}}"#
            let reply = try await h.call("POST", "/v1/deployments", token: token, body: body)
            #expect(reply.status == 422, "\(weights): \(reply.status) \(reply.text)")
            let details = reply.json["details"] as? [[String: Any]] ?? []
            // Only the range is reported: the value is never used for the fit.
            #expect(details.map { $0["path"] as? String } == ["weights_gb"], "\(reply.text)")
        }
        #expect(try await h.call("GET", "/healthz").status == 200)
    }

    /// Four identical applies of a new application at once, many times: one 201, the rest
    /// 200; an apply racing a delete is a create (201) or an update (200), never 404 or 409.
    @Test func concurrentIdenticalAppliesAllSucceed() async throws {
        let h = try await SharedServer.shared.get()
        let (_, token) = try await h.tenant(.scale)
        for round in 0..<25 {
            let manifest = app("race-\(round)", pods: "  - name: web\n    image: example/web:1\n")
            let statuses = try await withThrowingTaskGroup(of: Reply.self) { group in
                for _ in 0..<4 { group.addTask { try await h.call("POST", "/v1/applications", token: token, body: manifest) } }
                var out: [Reply] = []
                for try await reply in group { out.append(reply) }
                return out
            }
            #expect(statuses.filter { $0.status == 201 }.count == 1, "round \(round): \(statuses.map { "\($0.status) \($0.errorMessage)" })")
            #expect(statuses.filter { $0.status == 200 }.count == 3, "round \(round): \(statuses.map { "\($0.status) \($0.errorMessage)" })")
        }
        for round in 0..<15 {
            let manifest = app("churn", pods: "  - name: web\n    image: example/web:\(round)\n")
            async let applied = h.call("POST", "/v1/applications", token: token, body: manifest)
            async let deleted = h.call("DELETE", "/v1/applications/churn", token: token)
            let (apply, delete) = try await (applied, deleted)
            #expect([200, 201].contains(apply.status), "round \(round): \(apply.status) \(apply.text)")
            #expect([204, 404].contains(delete.status), "round \(round): \(delete.status) \(delete.text)")
        }
    }

    /// Heartbeats only from the node's own agent, only for a node that exists; nodes can be
    /// deleted; a beat is not an audit line.
    @Test func heartbeatsNeedARegisteredNodeAndItsAgent() async throws {
        let h = try await SharedServer.shared.get()
        try await JournaldFixture.shared.ensureRunning()
        let ghost = "ghost-" + UUID().uuidString.prefix(8).lowercased()
        let ghostToken = try await h.nodeToken(ghost)
        let beat = try await h.call("POST", "/v1/nodes/\(ghost)/heartbeat", token: ghostToken)
        #expect(beat.status == 404, "\(beat.text)")
        #expect(beat.errorMessage.contains("POST /v1/nodes"))
        #expect(try await h.client.get(NodeHeartbeat.key(ghost)) == nil)

        let node = "n-" + UUID().uuidString.prefix(8).lowercased()
        let token = try await h.nodeToken(node)
        let registration = #"{"name": "\#(node)", "gpus": [{"index": 0, "uuid": "GPU-\#(node)", "product": "NVIDIA H100 80GB HBM3", "memoryMiB": 81559}]}"#
        #expect(try await h.call("POST", "/v1/nodes", token: token, body: registration).status == 201)
        for _ in 0..<3 {
            let accepted = try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: token)
            #expect(accepted.status == 200)
            #expect(accepted.headers["Content-Type"] == "application/json" || accepted.headers["content-type"] == "application/json")
            #expect(accepted.json["ttlSeconds"] as? Int == Int(h.deps.heartbeatTTL), "\(accepted.text)")
        }
        let adminBeat = try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: h.admin)
        #expect(adminBeat.status == 403, "\(adminBeat.text)")

        // Deleting drains and removes the node and its heartbeat key; the agent's next beat is
        // told to register again.
        #expect(try await h.call("DELETE", "/v1/nodes/\(node)", token: token).status == 403)
        #expect(try await h.call("DELETE", "/v1/nodes/\(node)", token: h.admin).status == 204)
        #expect(try await h.call("GET", "/v1/nodes/\(node)", token: h.admin).status == 404)
        #expect(try await h.client.get(NodeHeartbeat.key(node)) == nil)
        #expect(try await h.call("POST", "/v1/nodes/\(node)/heartbeat", token: token).status == 404)
        #expect(try await h.call("DELETE", "/v1/nodes/\(node)", token: h.admin).status == 404)

        // The registration and the delete were audited; the three accepted beats were not.
        var entries: [JournalEntry] = []
        try await eventually("the last refused beat's audit line in journald") {
            entries = try await JournaldFixture.shared.entries(identifier: h.auditIdentifier)
            return entries.contains { $0["GPUPLANE_AUDIT_PATH"] == "/v1/nodes/\(node)/heartbeat" && $0["GPUPLANE_AUDIT_STATUS"] == "404" }
        }
        #expect(entries.contains { $0["GPUPLANE_AUDIT_PATH"] == "/v1/nodes/\(node)" && $0["GPUPLANE_AUDIT_STATUS"] == "204" })
        let beats = entries.filter { $0["GPUPLANE_AUDIT_PATH"] == "/v1/nodes/\(node)/heartbeat" }
        #expect(beats.compactMap { $0["GPUPLANE_AUDIT_STATUS"] }.sorted() == ["403", "404"], "\(beats.map { $0["GPUPLANE_AUDIT_STATUS"] })")
    }

    /// One address cannot hold more than its share of connections (the extra one is closed at
    /// once, whichever of them the server accepted last), and the server keeps answering others.
    @Test func greedyClientsAreCutOff() async throws {
        let (base, port, server) = try await Self.server(ConnectionLimits(headerTimeout: .seconds(120), maxConnectionsPerSource: 6))
        defer { server.cancel() }
        var sockets: [RawSocket] = []
        defer { for socket in sockets { socket.close() } }
        for _ in 0..<7 {
            let socket = try RawSocket(from: "127.0.0.2", to: port)
            try socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
            sockets.append(socket)
        }
        try await eventually("one of seven connections from one address is closed", timeout: 20) {
            sockets.contains { $0.isClosed() }
        }
        #expect(sockets.filter { $0.isClosed() }.count == 1, "the others are kept: their header timeout is 120 s")
        let h = try await SharedServer.shared.get()
        #expect(try await h.call("GET", "/healthz", base: base).status == 200)
    }

    /// Sockets that send a request line and never the end of the headers are closed after the
    /// header timeout, a body that stops midway after the body timeout; the address is served
    /// again afterwards.
    @Test func slowClientsAreCutOff() async throws {
        let (base, port, server) = try await Self.server(ConnectionLimits(headerTimeout: .seconds(1), bodyTimeout: .seconds(1)))
        defer { server.cancel() }
        var slow: [RawSocket] = []
        defer { for socket in slow { socket.close() } }
        for _ in 0..<20 {
            let socket = try RawSocket(from: "127.0.0.2", to: port)
            try socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow.append(socket)
        }
        let stalled = try RawSocket(from: "127.0.0.3", to: port)
        defer { stalled.close() }
        try stalled.send("POST /v1/validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\"")
        let h = try await SharedServer.shared.get()
        #expect(try await h.call("GET", "/healthz", base: base).status == 200)
        for socket in slow { #expect(await socket.waitForClose(seconds: 20), "a slow client was never cut off") }
        #expect(await stalled.waitForClose(seconds: 20), "a stalled body was never cut off")
        let socket = try RawSocket(from: "127.0.0.2", to: port)
        defer { socket.close() }
        try socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(await socket.readAll(seconds: 60).hasPrefix("HTTP/1.1 200"))
    }

    /// An api-server of its own with `limits`, over the shared etcd.
    static func server(_ limits: ConnectionLimits) async throws -> (base: String, port: Int, task: Task<Void, any Error>) {
        let h = try await SharedServer.shared.get()
        var logger = Logger(label: "gpuplane.api.limits")
        logger.logLevel = .critical
        let deps = APIDependencies(
            store: try ResourceStore.connect(endpoints: h.etcd.endpoints), catalog: try Catalog.standard(),
            adminTokens: [h.admin], logger: logger)
        let server = try await startAPIServer(deps, limits: limits)
        try await eventually("api-server answers") { try await h.call("GET", "/healthz", base: server.base).status == 200 }
        return (server.base, server.port, server.task)
    }
}

extension Harness {
    /// A call to another server than the harness's own.
    func call(_ method: String, _ path: String, base: String) async throws -> Reply {
        let other = Harness(base: base, admin: admin, etcd: etcd, client: client, deps: deps, auditIdentifier: auditIdentifier)
        return try await other.call(method, path)
    }
}

/// A TCP connection from a chosen loopback address, for clients no HTTP library would be.
final class RawSocket: @unchecked Sendable {
    let fd: Int32
    private var closed = false

    init(from source: String, to port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HarnessError(description: "socket: \(errno)") }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw HarnessError(description: "bind \(source): \(errno)") }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError(description: "connect: \(errno)") }
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw HarnessError(description: "send: \(errno)") }
    }

    /// Whether the peer closed the connection (end of file or reset) within `seconds`,
    /// reading and dropping whatever came before. The wait blocks a thread of its own, never
    /// one of the two cooperative threads the in-process api-server answers on.
    func waitForClose(seconds: Double) async -> Bool {
        await TestEnvironment.offPool { self.blockingWaitForClose(seconds: seconds) }
    }

    private func blockingWaitForClose(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = Int32(max(1, deadline.timeIntervalSinceNow * 1000))
            guard poll(&poller, 1, left) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return true }
        }
        return false
    }

    /// Whether the peer has closed the connection, without waiting.
    func isClosed() -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    /// Everything the peer sends until it closes or `seconds` pass, read on a thread of its own
    /// (a poll on a cooperative thread stalled the in-process api-server it waited for).
    func readAll(seconds: Double) async -> String {
        await TestEnvironment.offPool { self.blockingReadAll(seconds: seconds) }
    }

    private func blockingReadAll(seconds: Double) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(max(1, deadline.timeIntervalSinceNow * 1000))) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    func close() {
        guard !closed else { return }
        closed = true
        _ = Glibc.close(fd)
    }
}

