import Foundation
import GPUPlaneAPI
import GPUPlaneTestSupport
import Testing

/// The dashboard's files: served without a token under a strict content policy, reading only
/// routes the server has, writing no HTML from data.
@Suite struct DashboardTests {
    static var script: String { get async throws { try await SharedServer.shared.get().call("GET", "/ui/dashboard.js").text } }

    @Test func theFilesAreServedWithoutATokenUnderAStrictPolicy() async throws {
        let h = try await SharedServer.shared.get()
        let page = try await h.call("GET", "/ui")
        #expect(page.status == 200)
        #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
        #expect(page.headers["content-security-policy"]?.contains("default-src 'self'") == true)
        #expect(page.headers["x-content-type-options"] == "nosniff")
        #expect(page.text.contains(#"<script src="/ui/dashboard.js" defer></script>"#))
        #expect(page.text.contains(#"href="/ui/dashboard.css""#))
        for (path, type) in [("/ui/dashboard.js", "text/javascript"), ("/ui/dashboard.css", "text/css")] {
            let file = try await h.call("GET", path)
            #expect(file.status == 200 && file.headers["content-type"]?.hasPrefix(type) == true, "\(path)")
        }
        // Only these files are public: the API behind them still wants a token.
        #expect(try await h.call("GET", "/ui/anything").status == 401)
        #expect(try await h.call("GET", "/v1/deployments").status == 401)
    }

    @Test func theScriptReadsOnlyRoutesTheServerHasAndWritesNoHTML() async throws {
        let h = try await SharedServer.shared.get()
        let script = try await Self.script
        let (_, table) = buildRouter(h.deps)
        let gets = Set(table.routes.filter { $0.method == "GET" }.map(\.path))
        let paths = script.split(separator: "\"").filter { $0.hasPrefix("/v1/") }.map(String.init)
        #expect(Set(paths) == ["/v1/deployments", "/v1/applications", "/v1/replicas", "/v1/modelservers", "/v1/nodes", "/v1/usage", "/v1/events"])
        for path in paths { #expect(gets.contains(path), "the dashboard reads \(path), which the server does not serve") }
        #expect(!script.contains("innerHTML") && !script.contains("outerHTML") && !script.contains("insertAdjacentHTML"))
        // The token goes to this origin only, from this tab's storage.
        #expect(script.contains("sessionStorage") && !script.contains("localStorage"))
        #expect(!script.contains("http://") && !script.contains("https://"))
    }

    @Test(.enabled(if: TestEnvironment.hasExecutable("/usr/bin/node"), "node checks the script's syntax"))
    func theScriptParses() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "dashboard")
        let file = directory.appendingPathComponent("dashboard.js")
        try await Self.script.write(to: file, atomically: false, encoding: .utf8)
        let log = directory.appendingPathComponent("node.log")
        let node = try ChildProcess(executable: "/usr/bin/node", arguments: ["--check", file.path], logFile: log)
        var status: Int32?
        try await eventually("node --check finished") {
            status = node.exitStatus
            return status != nil
        }
        #expect(status == 0, "\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }
}
