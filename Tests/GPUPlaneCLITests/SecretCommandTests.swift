import Foundation
import GPUPlaneCLI
import GPUPlaneCore
import GPUPlaneTestSupport
import Testing

/// `gpuplane secret create|list|delete`, the real executable against a live api-server: values
/// go in through standard input and files, and never come back out.
@Suite(.timeLimit(.minutes(3))) struct SecretCommandTests {
    @Test func createListReplaceAndDeleteWithValuesFromStdinAndFiles() async throws {
        let (base, admin) = try await OnlineCommandTests.Server.shared.get()
        let name = "cli-" + UUID().uuidString.prefix(8).lowercased()
        let asAdmin = APIClient(base: base, token: admin)
        // Set-up through the API; a 503 (etcd starved on a loaded machine) is sent again, and a
        // tenant that the first try made already exists.
        func setUp(_ path: String, _ body: String, accepting: Set<Int> = [201]) async throws -> APIClient.Answer {
            for _ in 0..<5 {
                let answer = try await asAdmin.call(.post, path, body: Data(body.utf8))
                if answer.status != 503 {
                    #expect(accepting.contains(answer.status), "\(path): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
                    return answer
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            throw CLIError("\(path) answered 503 five times")
        }
        _ = try await setUp("/v1/tenants", #"{"name": "\#(name)", "plan": "pro"}"#, accepting: [201, 409])
        let token = try #require(try await setUp("/v1/tokens", #"{"tenant": "\#(name)", "role": "user"}"#).value["token"].string)
        let directory = try TestEnvironment.temporaryDirectory(prefix: "cli-secret")
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        func gpuplane(_ arguments: [String], stdin: String = "") async throws -> (status: Int32, output: String) {
            try await TestEnvironment.offPool {
                try Command.run(
                    OnlineCommandTests.executable.path, arguments,
                    environment: ["GPUPLANE_SERVER": base, "GPUPLANE_TOKEN_FILE": tokenFile.path], inheritEnvironment: false, input: stdin)
            }
        }
        let value = "v-" + UUID().uuidString
        let password = "p-" + UUID().uuidString
        let created = try await gpuplane(["secret", "create", "db-url"], stdin: value + "\n")
        #expect(created.status == 0 && created.output == "secret/db-url created (value)\n", "\(created.output)")
        let userFile = directory.appendingPathComponent("user")
        try "app\n".write(to: userFile, atomically: true, encoding: .utf8)
        let pwFile = directory.appendingPathComponent("pw")
        try password.write(to: pwFile, atomically: true, encoding: .utf8)
        let fromFiles = try await gpuplane(["secret", "create", "db", "--from-file", "user=\(userFile.path)", "--from-file", "password=\(pwFile.path)"])
        #expect(fromFiles.status == 0 && fromFiles.output == "secret/db created (password, user)\n", "\(fromFiles.output)")
        let registry = try await gpuplane(["secret", "create", "hub", "--registry", "127.0.0.1:5000", "--username", "bot"], stdin: password)
        #expect(registry.status == 0, "\(registry.output)")
        let listed = try await gpuplane(["secret", "list"])
        #expect(listed.status == 0)
        #expect(listed.output.contains("db-url") && listed.output.contains("generic") && listed.output.contains("127.0.0.1:5000"), "\(listed.output)")
        #expect(!listed.output.contains(value) && !listed.output.contains(password))
        // Taken; then replaced.
        #expect(try await gpuplane(["secret", "create", "db-url"], stdin: "x").status == 1)
        let replaced = try await gpuplane(["secret", "create", "db-url", "--replace", "--key", "url"], stdin: "y")
        #expect(replaced.status == 0 && replaced.output == "secret/db-url replaced (url)\n", "\(replaced.output)")
        // Usage errors before anything is sent.
        #expect(try await gpuplane(["secret", "create", "x", "--username", "bot"]).status != 0)
        #expect(try await gpuplane(["secret", "create", "x", "--from-file", "nokey"]).status != 0)
        #expect(try await gpuplane(["secret", "delete", "db-url"]).output == "secret/db-url deleted\n")
        let gone = try await gpuplane(["secret", "delete", "db-url"])
        #expect(gone.status == 1 && gone.output.contains("HTTP 404"), "\(gone.output)")
    }
}
