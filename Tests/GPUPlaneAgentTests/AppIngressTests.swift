import CurlHTTP
import Foundation
import GPUPlaneAgent
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// The `path` ingress against real etcd, the api-server, a node-agent and podman: an
/// application's pod with `path: /api` and `servicePorts: [8000, 9000]` runs busybox httpd on
/// 8000 (static files, and `*.sh` run as CGI so a script can echo what reached it or answer
/// slowly); requests to `/apps/<tenant>/<app>/api/...` reach it.
@Suite(.enabled(if: agentTestsAvailable, "needs etcd, and root with podman, runc and busybox-static"))
struct AppIngressTests {
    /// Echoes the request: its environment (the headers as HTTP_*, REQUEST_URI) and body.
    static let echoScript = """
        #!/bin/sh
        printf 'Content-Type: text/plain\\r\\n\\r\\n'
        env | sort
        if [ -n "$CONTENT_LENGTH" ]; then printf 'BODY='; head -c "$CONTENT_LENGTH"; echo; fi
        """

    /// Answers in two parts two seconds apart.
    static let slowScript = """
        #!/bin/sh
        printf 'Content-Type: text/plain\\r\\n\\r\\n'
        echo first
        i=0; while [ ! -e /tmp/release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
        echo second
        """

    /// httpd starts once /tmp/go exists, so the replica runs a while without accepting connections.
    static let command = [
        "sh", "-c",
        #"mkdir -p /www/api && echo hello-from-api > /www/api/hello && printf '%s\n' "$ECHO_SH" > /www/api/echo.sh && printf '%s\n' "$SLOW_SH" > /www/api/slow.sh && chmod +x /www/api/*.sh && echo '*.sh:/bin/sh' > /etc/httpd.conf && while [ ! -e /tmp/go ]; do sleep 0.2; done; exec httpd -f -p 8000 -h /www -c /etc/httpd.conf"#,
    ]

    static func pod() -> Pod {
        Pod(
            name: "api", path: "/api", image: "", servicePorts: [8000, 9000], vars: ["ECHO_SH": echoScript, "SLOW_SH": slowScript],
            gpu: GPUBlock(enabled: true, model: Catalog.custom, memoryGB: 24), command: command)
    }

    /// Stores application `name` of `tenant` with the api pod; with `bindTo`, its replica too,
    /// bound to that node's GPU 0 (as the scheduler would).
    static func apply(_ world: AgentWorld, tenant: String, name: String, bindTo node: String?) async throws -> GPUPlaneCore.Application {
        var pod = pod()
        pod.image = world.podman.testImage
        let app = try await world.store.create(
            GPUPlaneCore.Application(metadata: ObjectMeta(name: name, tenant: tenant), spec: ApplicationSpec(pods: [pod])))
        for var replica in ReplicaPlanner(catalog: try Catalog.standard()).replicas(for: app) {
            #expect(replica.spec.ingressPort == 8000)
            if let node {
                replica.binding = Binding(node: node, gpuIndices: [0])
                replica.status = ReplicaStatus(phase: .bound)
            }
            _ = try await world.store.create(replica)
        }
        return app
    }

    static func get(_ url: String, headers: [CurlHTTP.Header] = [], method: CurlHTTP.Method = .get, body: String? = nil) async throws
        -> CurlHTTP.Response
    {
        try await ControlPlane.http.perform(
            CurlHTTP.Request(method: method, url: url, headers: headers, body: body.map { Data($0.utf8) }, timeout: .seconds(20)))
    }

    static func text(_ response: CurlHTTP.Response) -> String { String(decoding: response.body, as: UTF8.self) }

    @Test func aPathReachesItsPodOnlyItsPortIsPublishedAndOtherTenantsNeverReachIt() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            let base = world.plane.base
            let app = try await Self.apply(world, tenant: world.tenant, name: "shop", bindTo: world.node)
            let replicaName = ReplicaPlanner.replicaName(application: "shop", pod: "api")
            let shop = "\(base)/apps/\(world.tenant)/shop"

            // Running and published, but httpd is not listening yet: not ready, and the URL says 503.
            var replica = try await world.waitForReplicaNamed(replicaName, "running and published") {
                $0.status.phase == .running && $0.status.endpoint != nil
            }
            #expect(replica.status.ready != true)
            #expect(replica.status.message?.contains("accept connections") == true, "\(String(describing: replica.status.message))")
            let early = try await Self.get(shop + "/api/hello")
            #expect(early.status == 503, "\(Self.text(early))")
            #expect(early.header("Retry-After") != nil)
            #expect(Self.text(early).contains("\"code\":\"unavailable\""))

            // Only the path's port (the first servicePort) is published; 9000 stays private.
            let containerID = try #require(replica.status.containerID)
            let ports = try await world.engine.inspect(containerID).ports
            let endpoint = try #require(replica.status.endpoint)
            #expect(ports.map(\.containerPort) == [8000], "\(ports)")
            #expect(ports.first.map { endpoint.hasSuffix(":\($0.hostPort)") } == true, "\(endpoint) \(ports)")

            // httpd starts: the agent's TCP probe makes the replica ready, and the URL reaches it.
            try await world.podman.podman(["exec", containerID, "touch", "/tmp/go"])
            replica = try await world.waitForReplicaNamed(replicaName, "ready") { $0.status.ready == true }
            var hello = try await Self.get(shop + "/api/hello")
            try await eventually("the ingress's cache sees the ready replica") {
                hello = try await Self.get(shop + "/api/hello")
                return hello.status == 200
            }
            #expect(Self.text(hello) == "hello-from-api\n")

            // The path is kept, the query goes along, hop-by-hop headers and gpuplane tokens stay
            // behind, a client's X-Forwarded-For is replaced, the X-Forwarded-* are set.
            let echoed = try await Self.get(
                shop + "/api/echo.sh?a=b",
                headers: [
                    CurlHTTP.Header("Authorization", "Bearer gp_not-for-the-app"), CurlHTTP.Header("X-Forwarded-For", "6.6.6.6"),
                    CurlHTTP.Header("Connection", "keep-alive, X-Drop-Me"), CurlHTTP.Header("X-Drop-Me", "1"),
                    CurlHTTP.Header("X-Keep-Me", "yes"),
                ])
            let env = Self.text(echoed)
            #expect(echoed.status == 200, "\(env)")
            #expect(env.contains("REQUEST_URI=/api/echo.sh?a=b\n"), "\(env)")
            #expect(env.contains("HTTP_X_FORWARDED_PREFIX=/apps/\(world.tenant)/shop\n"), "\(env)")
            #expect(env.contains("HTTP_X_FORWARDED_FOR=127.0.0.1\n"), "\(env)")
            #expect(env.contains("HTTP_X_FORWARDED_PROTO=http\n"), "\(env)")
            #expect(env.contains("HTTP_X_KEEP_ME=yes\n"), "\(env)")
            #expect(!env.contains("HTTP_X_DROP_ME"), "\(env)")
            #expect(!env.contains("HTTP_AUTHORIZATION"), "\(env)")
            #expect(!env.contains("6.6.6.6"), "\(env)")
            // The application's own credentials and bodies do go through.
            let posted = try await Self.get(
                shop + "/api/echo.sh", headers: [CurlHTTP.Header("Authorization", "Bearer the-apps-own-token"), CurlHTTP.Header("Content-Type", "text/plain")],
                method: .post, body: "x=1&y=2")
            #expect(Self.text(posted).contains("HTTP_AUTHORIZATION=Bearer the-apps-own-token\n"), "\(Self.text(posted))")
            #expect(Self.text(posted).contains("REQUEST_METHOD=POST\n"), "\(Self.text(posted))")
            #expect(Self.text(posted).contains("BODY=x=1&y=2\n"), "\(Self.text(posted))")

            // A slow answer arrives as it is written, not at its end.
            let answer = try await ControlPlane.http.exchange(CurlHTTP.Request(url: shop + "/api/slow.sh", timeout: .seconds(20)))
            #expect(answer.status == 200)
            // The script writes its second part only once /tmp/release exists, which this test
            // makes when the first part has come through: a buffering proxy would never pass
            // the first part on (and the script gives up after a minute, failing the check).
            var received = ""
            var released = false
            for try await chunk in answer.body {
                received += String(decoding: chunk, as: UTF8.self)
                if !released, received.contains("first") {
                    released = true
                    try await world.podman.podman(["exec", containerID, "touch", "/tmp/release"])
                }
            }
            #expect(received == "first\nsecond\n")
            #expect(released, "the first part never came before the end")

            // Nothing but this tenant's own pod answers: no path, a path that only starts alike,
            // another tenant, another tenant's application of the same name.
            #expect(try await Self.get(shop + "/other").status == 404)
            #expect(try await Self.get(shop + "/apix/hello").status == 404)
            #expect(try await Self.get(shop + "/api/%2e%2e/api/hello").status == 400)
            #expect(try await Self.get("\(base)/apps/t-nobody/shop/api/hello").status == 404)
            let other = "t2-\(UUID().uuidString.lowercased().prefix(8))"
            _ = try await Self.apply(world, tenant: other, name: "shop", bindTo: nil)
            var theirs = try await Self.get("\(base)/apps/\(other)/shop/api/hello")
            try await eventually("the other tenant's application is seen") {
                theirs = try await Self.get("\(base)/apps/\(other)/shop/api/hello")
                return theirs.status != 404
            }
            #expect(theirs.status == 503, "\(Self.text(theirs))")
            #expect(!Self.text(theirs).contains("hello-from-api"))

            // The API shows the application's URL and its path's, ready.
            let created = try await ControlPlane.call(
                world.plane, .post, "/v1/tenants", token: world.plane.admin, body: #"{"name": "\#(world.tenant)", "plan": "enterprise"}"#)
            #expect(created.status == 201 || created.status == 409)
            let tokenReply = try await ControlPlane.call(
                world.plane, .post, "/v1/tokens", token: world.plane.admin, body: #"{"tenant": "\#(world.tenant)", "role": "user"}"#)
            let token = try #require((try JSONSerialization.jsonObject(with: tokenReply.body) as? [String: Any])?["token"] as? String)
            let got = try await ControlPlane.call(world.plane, .get, "/v1/applications/shop", token: token)
            let status = try #require((try JSONSerialization.jsonObject(with: got.body) as? [String: Any])?["status"] as? [String: Any])
            #expect(status["url"] as? String == shop, "\(status)")
            let routes = try #require(status["routes"] as? [[String: Any]])
            #expect(routes.count == 1)
            #expect(routes.first?["url"] as? String == shop + "/api")
            #expect(routes.first?["ready"] as? Bool == true)
            #expect(routes.first?["port"] as? Int == 8000)
            _ = app
        }
    }

    /// Answers any request with `101 Switching Protocols` (echoing the X-Forwarded-Prefix and
    /// whether an Authorization arrived), then echoes every byte back: an upgraded protocol.
    static let upgradeScript = """
        #!/bin/sh
        prefix=none; auth=none
        while read -r line; do
          line=$(printf '%s' "$line" | tr -d '\\r')
          [ -z "$line" ] && break
          case "$line" in X-Forwarded-Prefix:*) prefix="${line#*: }";; Authorization:*) auth=present;; esac
        done
        printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Seen-Prefix: %s\r\nX-Seen-Authorization: %s\r\n\r\n' "$prefix" "$auth"
        exec cat
        """

    /// An `Upgrade` request to an application URL is spliced to the pod: its `101` comes back,
    /// and bytes then flow both ways, unchanged, as a websocket's frames would.
    @Test func anUpgradeIsSplicedToThePodBothWays() async throws {
        try await withAgentWorld { world in
            world.startAgent()
            let pod = Pod(
                name: "live", path: "/live", image: world.podman.testImage, servicePorts: [8000], vars: ["UP_SH": Self.upgradeScript],
                gpu: GPUBlock(enabled: true, model: Catalog.custom, memoryGB: 24),
                command: ["sh", "-c", #"printf '%s\n' "$UP_SH" > /up.sh && chmod +x /up.sh && exec nc -ll -p 8000 -e /up.sh"#])
            let app = try await world.store.create(
                GPUPlaneCore.Application(metadata: ObjectMeta(name: "ws", tenant: world.tenant), spec: ApplicationSpec(pods: [pod])))
            for var replica in ReplicaPlanner(catalog: try Catalog.standard()).replicas(for: app) {
                replica.binding = Binding(node: world.node, gpuIndices: [0])
                replica.status = ReplicaStatus(phase: .bound)
                _ = try await world.store.create(replica)
            }
            try await world.waitForReplicaNamed("ws.live", "ready") { $0.status.ready == true }
            let port = try #require(Int(world.plane.base.split(separator: ":").last ?? ""))
            let path = "/apps/\(world.tenant)/ws/live/socket"
            var outcome = UpgradeOutcome(head: "", echoes: [], roundTrips: [])
            try await eventually("the upgrade is spliced", timeout: 30, every: 0.5) {
                outcome = try await Self.upgrade(port: port, path: path, messages: (1...20).map { "ping-\($0)\n" })
                return outcome.head.hasPrefix("HTTP/1.1 101")
            }
            #expect(outcome.head.contains("X-Seen-Prefix: /apps/\(world.tenant)/ws"), "\(outcome.head)")
            #expect(outcome.head.contains("X-Seen-Authorization: none"), "a gpuplane token must not reach the pod: \(outcome.head)")
            #expect(outcome.echoes == (1...20).map { "ping-\($0)\n" }, "\(outcome.echoes)")
            let sorted = outcome.roundTrips.sorted()
            print("upgrade round trips through the ingress: median \(sorted[sorted.count / 2] * 1000) ms, max \((sorted.last ?? 0) * 1000) ms")
            // Without a ready pod, an upgrade gets the route's JSON answer.
            let missing = try await Self.upgrade(port: port, path: "/apps/\(world.tenant)/nothing/live/socket", messages: [])
            #expect(missing.head.hasPrefix("HTTP/1.1 404"), "\(missing.head)")
        }
    }

    struct UpgradeOutcome: Sendable {
        var head: String
        var echoes: [String]
        var roundTrips: [Double]
    }

    /// Sends an `Upgrade: echo` request with a gpuplane token over a plain socket, reads the
    /// answer's head; after a 101, sends each message and reads it back, timing each.
    static func upgrade(port: Int, path: String, messages: [String]) async throws -> UpgradeOutcome {
        try await TestEnvironment.offPool("upgrade-client") { () throws -> UpgradeOutcome in
            guard let fd = TestSockets.connectLoopback(port: port) else {
                throw AgentHarnessError(description: "cannot connect to the api-server")
            }
            defer { close(fd) }
            TestSockets.setReceiveTimeout(fd, seconds: 10)
            func write(_ text: String) { _ = text.withCString { send(fd, $0, strlen($0), 0) } }
            var pending = [UInt8]()
            func readUntil(_ marker: String) -> String? {
                let wanted = Array(marker.utf8)
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    if let range = pending.firstRange(of: wanted) {
                        let text = String(decoding: pending[..<range.upperBound], as: UTF8.self)
                        pending.removeSubrange(..<range.upperBound)
                        return text
                    }
                    let n = recv(fd, &buffer, buffer.count, 0)
                    if n <= 0 { return nil }
                    pending += buffer[..<n]
                }
            }
            write("GET \(path) HTTP/1.1\r\nHost: ingress.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\nAuthorization: Bearer gp_not-for-the-app\r\n\r\n")
            let head = readUntil("\r\n\r\n") ?? String(decoding: pending, as: UTF8.self)
            var outcome = UpgradeOutcome(head: head, echoes: [], roundTrips: [])
            guard head.hasPrefix("HTTP/1.1 101") else { return outcome }
            for message in messages {
                let start = Date()
                write(message)
                guard let echo = readUntil("\n") else { break }
                outcome.roundTrips.append(Date().timeIntervalSince(start))
                outcome.echoes.append(echo)
            }
            return outcome
        }
    }

    /// The application URLs are routes of the api-server, so its connection limits hold there:
    /// a request head over the decoder's limit is refused, and one that never ends is cut off.
    @Test func hostileRequestsToAnApplicationURLMeetTheAPIsLimits() async throws {
        let plane = try await ControlPlane.shared.get()
        let huge = String(repeating: "a", count: 128 * 1024)
        // The server answers 400 and closes while the head is still arriving, so the client may
        // read the 400 or see the connection reset (RST for the unread rest) first: both are the
        // refusal; what must not happen is an answer from a route.
        func outcome(_ path: String) async -> String {
            do {
                let answer = try await ControlPlane.http.perform(
                    CurlHTTP.Request(url: plane.base + path, headers: [CurlHTTP.Header("X-Huge", huge)], timeout: .seconds(30)))
                return (400..<500).contains(answer.status) && answer.status != 404 ? "refused" : "answered \(answer.status)"
            } catch where error.code == .transfer {
                return "refused"
            } catch {
                return "\(error)"
            }
        }
        let refused = await outcome("/apps/t-any/app/api/x")
        let apiRefused = await outcome("/v1/applications")
        #expect(refused == "refused", "an oversized head must not reach the route")
        #expect(refused == apiRefused)

        // Slowloris: a head that never ends is closed after the header timeout (10 s by default).
        let port = try #require(Int(plane.base.split(separator: ":").last ?? ""))
        let closedAfter = try await TestEnvironment.offPool("slowloris") { () -> Double in
            guard let fd = TestSockets.connectLoopback(port: port) else { return -1 }
            defer { close(fd) }
            let head = "GET /apps/t-any/app/api/x HTTP/1.1\r\nHost: x\r\n"
            _ = head.withCString { send(fd, $0, strlen($0), 0) }
            TestSockets.setReceiveTimeout(fd, seconds: 30)
            let start = Date()
            var buffer = [UInt8](repeating: 0, count: 1024)
            while recv(fd, &buffer, buffer.count, 0) > 0 {}
            return Date().timeIntervalSince(start)
        }
        #expect(closedAfter > 5 && closedAfter < 25, "closed after \(closedAfter) s")
    }
}

extension AgentWorld {
    /// Waits until the replica called `name` (any name, not only `app.<name>`) satisfies `condition`.
    @discardableResult
    func waitForReplicaNamed(_ name: String, _ what: String, timeout: Double = 60, _ condition: @escaping (Replica) -> Bool) async throws
        -> Replica
    {
        var last: Replica?
        do {
            try await eventually("\(name): \(what)", timeout: timeout) {
                last = try? await self.store.get(Replica.self, tenant: self.tenant, name: name)
                return last.map(condition) ?? false
            }
        } catch {
            throw AgentHarnessError(description: "\(error); last status: \(String(describing: last?.status))")
        }
        return try #require(last)
    }
}
