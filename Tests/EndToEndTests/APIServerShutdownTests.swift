import CurlHTTP
import Foundation
import GPUPlaneLocal
import GPUPlaneTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The api-server daemon on SIGTERM with a watch open, as every node-agent holds one: it stops
/// listening, ends the watch with the ERROR line that sends its client to another api-server,
/// and exits 0. Before, Hummingbird's graceful shutdown waited on the endless stream and the
/// process stayed up until SIGKILL.
@Suite struct APIServerShutdownTests {
    @Test(.enabled(if: EtcdFixture.isAvailable))
    func sigtermEndsTheWatchesAndExits() async throws {
        let etcd = try await EtcdFixture.start()
        defer { etcd.shutdown() }
        let directory = try TestEnvironment.temporaryDirectory(prefix: "api-sigterm")
        defer { try? FileManager.default.removeItem(at: directory) }
        let admin = "gp_admin_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let adminFile = directory.appendingPathComponent("admin")
        try admin.write(to: adminFile, atomically: true, encoding: .utf8)
        let port = TestEnvironment.freePort()
        let api = try ChildProcess.daemon(
            "gpuplane-api-server", ["--port", "\(port)", "--admin-token-file", adminFile.path], etcd: etcd, in: directory, logLevel: "info")
        defer { api.stop(timeout: 10) }
        let http = CurlHTTP.Client(name: "api-sigterm-test", maxConnections: 1)
        defer { http.shutdown() }
        try await eventually("the api-server is ready", timeout: 60) {
            (try? await http.perform(CurlHTTP.Request(url: "http://127.0.0.1:\(port)/readyz", timeout: .seconds(5))))?.status == 200
        }
        let out = directory.appendingPathComponent("watch.ndjson")
        let headers = directory.appendingPathComponent("watch.headers")
        let curl = try ChildProcess(
            executable: "/usr/bin/curl",
            arguments: [
                "-sSN", "-D", headers.path, "-H", "Authorization: Bearer \(admin)", "http://127.0.0.1:\(port)/v1/replicas?watch=true",
            ], logFile: out)
        defer { curl.kill9() }  // curl inherits an ignored SIGTERM from the test runner
        func lines() -> [[String: Any]] {
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        try await eventually("the watch answered") {
            ((try? String(contentsOf: headers, encoding: .utf8)) ?? "").contains("application/x-ndjson")
        }

        api.signal(SIGTERM)
        try await eventually("the api-server exited") { !api.isRunning }
        #expect(api.exitStatus == 0, "\(api.logTail())")
        try await eventually("the watch ended") { !curl.isRunning }
        #expect(curl.exitStatus == 0, "the stream was cut, not ended")
        let last = try #require(lines().last)
        let message = (last["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(last["type"] as? String == "ERROR" && message.hasPrefix("this api-server is shutting down; reconnect with resourceVersion "), "\(last)")
    }
}
