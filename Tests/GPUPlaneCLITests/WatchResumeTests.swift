import Foundation
import GPUPlaneAPI
import GPUPlaneCLI
import GPUPlaneCore
import GPUPlaneSystem
import GPUPlaneTestSupport
import Testing

/// `gpuplane get -w` across an api-server's restart: the stream's shutdown line (503, "reconnect
/// with resourceVersion N") used to end the command ("run it again"); it now resumes at the
/// same URL from the last version it read, so a rolling restart of the api-servers neither ends
/// a user's watch nor loses or repeats a change.
@Suite(.timeLimit(.minutes(3))) struct WatchResumeTests {
    private func application(_ name: String) -> Data {
        Data("application:\n  name: \(name)\n  pods:\n    - {name: p, image: x}\n".utf8)
    }

    @Test func aWatchResumesAfterItsAPIServerRestartsAndMissesNothing() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let admin = Tokens.generate()
        let first = try await startAPIServer(try apiDependencies(etcd, admin: admin))
        let base = first.base
        let asAdmin = APIClient(base: base, token: admin)
        try await eventually("api-server answers") { try await asAdmin.call(.get, "/healthz").status == 200 }
        _ = try await asAdmin.json(.post, "/v1/tenants", body: Data(#"{"name": "watcher", "plan": "pro"}"#.utf8))
        let token = try #require(try await asAdmin.json(.post, "/v1/tokens", body: Data(#"{"tenant": "watcher", "role": "user"}"#.utf8))["token"].string)
        let user = APIClient(base: base, token: token)
        _ = try await user.json(.post, "/v1/applications", body: application("before"))

        let lines = Locked<[String]>([])
        let notices = Locked<[String]>([])
        let watching = Task {
            try await GetCommand.watch(
                kind: .applications, name: nil, output: .json, client: user, notice: { line in notices.withLock { $0.append(line) } }
            ) { line in lines.withLock { $0.append(line) } }
        }
        defer { watching.cancel() }
        func added(_ name: String) -> Int {
            lines.withLock { $0 }.compactMap { JSONValue.parse(Data($0.utf8)) }
                .filter { $0["type"].string == "ADDED" && $0.at("object.metadata.name").string == name }.count
        }
        try await eventually("the watch lists the first application") { added("before") == 1 }

        // The api-server stops (its stream ends with the shutdown line); an application is
        // created through another api-server while none listens at the watch's URL; the
        // api-server starts again on the same port.
        await first.stop()
        let port = try #require(URLComponents(string: base)?.port)
        let other = try await startAPIServer(try apiDependencies(etcd, admin: admin))
        _ = try await APIClient(base: other.base, token: token).json(.post, "/v1/applications", body: application("while-down"))
        await other.stop()
        let second = try await startAPIServer(try apiDependencies(etcd, admin: admin), port: port)
        _ = try await user.json(.post, "/v1/applications", body: application("after"))

        try await eventually("the resumed watch shows both new applications") { added("while-down") == 1 && added("after") == 1 }
        #expect(added("before") == 1, "nothing is shown twice: \(lines.withLock { $0 })")
        #expect(notices.withLock { $0 }.contains { $0.hasPrefix("watch: this api-server is shutting down") && $0.contains("resuming from resourceVersion ") })
        watching.cancel()
        await second.stop()
    }
}
