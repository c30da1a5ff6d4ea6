import Foundation
@testable import GPUPlaneAPI
import GPUPlaneTestSupport
import Testing

/// The dashboard's files: served without a token under a strict content policy, calling only
/// routes the server has, writing no HTML from data, keeping the token out of URLs. (What the
/// pages do is tested in a real browser: Tests/EndToEndTests/DashboardBrowserTests.swift.)
@Suite struct DashboardTests {
    /// Every script module, by name.
    static var scripts: [(name: String, text: String)] {
        get async throws {
            let h = try await SharedServer.shared.get()
            var scripts: [(String, String)] = []
            for name in DashboardRoutes.scripts { scripts.append((name, try await h.call("GET", "/ui/\(name)").text)) }
            return scripts
        }
    }

    @Test func theFilesAreServedWithoutATokenUnderAStrictPolicy() async throws {
        let h = try await SharedServer.shared.get()
        let page = try await h.call("GET", "/ui")
        #expect(page.status == 200)
        #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
        #expect(page.headers["content-security-policy"]?.contains("default-src 'self'") == true)
        #expect(page.headers["x-content-type-options"] == "nosniff")
        #expect(page.text.contains(#"<script type="module" src="/ui/app.js"></script>"#))
        #expect(page.text.contains(#"href="/ui/dashboard.css""#))
        var files = [("/ui/dashboard.css", "text/css"), ("/ui/favicon.svg", "image/svg+xml")]
        files += DashboardRoutes.scripts.map { ("/ui/\($0)", "text/javascript") }
        for (path, type) in files {
            let file = try await h.call("GET", path)
            #expect(file.status == 200 && file.headers["content-type"]?.hasPrefix(type) == true, "\(path)")
            #expect(file.headers["content-security-policy"]?.contains("default-src 'self'") == true, "\(path)")
        }
        // Only these files are public: the API behind them still wants a token.
        #expect(try await h.call("GET", "/ui/anything").status == 401)
        #expect(try await h.call("GET", "/v1/deployments").status == 401)
    }

    /// Each module the page imports is one the server serves.
    @Test func everyImportIsServed() async throws {
        for (name, text) in try await Self.scripts {
            for line in text.split(separator: "\n") where line.hasPrefix("import ") {
                guard let from = line.range(of: "from \"./") else { continue }
                let module = line[from.upperBound...].prefix { $0 != "\"" }
                #expect(DashboardRoutes.scripts.contains(String(module)), "\(name) imports \(module), which /ui does not serve")
            }
        }
    }

    @Test func theScriptsCallOnlyRoutesTheServerHasAndWriteNoHTML() async throws {
        let h = try await SharedServer.shared.get()
        let (_, table) = buildRouter(h.deps)
        let routes = table.routes.map { ($0.method, $0.path.split(separator: "/").map(String.init)) }
        var called: Set<String> = []
        for (name, script) in try await Self.scripts {
            // Every literal that starts a /v1/ path ("…", `…`), up to its query, with each
            // ${…} taken as one path segment.
            for piece in script.components(separatedBy: CharacterSet(charactersIn: "\"`")) where piece.hasPrefix("/v1/") {
                let path = piece.prefix { $0 != "?" }.replacingOccurrences(of: #"\$\{[^}]*\}"#, with: ":x", options: .regularExpression)
                let segments = path.split(separator: "/").map(String.init)
                let served = routes.contains { route in
                    route.1.count == segments.count && zip(route.1, segments).allSatisfy { $0 == $1 || $0.hasPrefix(":") || $1 == ":x" }
                }
                #expect(served, "\(name) calls \(path), which the server does not serve")
                called.insert(path)
            }
            #expect(!script.contains("innerHTML") && !script.contains("outerHTML") && !script.contains("insertAdjacentHTML") && !script.contains("eval("), "\(name)")
            #expect(!script.contains("localStorage"), "\(name) keeps something beyond this tab")
            // Nothing fetched from elsewhere (the one absolute URL is SVG's namespace name).
            let urls = script.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "")
            #expect(!urls.contains("http://") && !urls.contains("https://"), "\(name)")
        }
        // The pages use the routes the issue names.
        for path in ["/v1/deployments", "/v1/validate", "/v1/applications", "/v1/nodes", "/v1/tenants", "/v1/usage", "/v1/events", "/v1/replicas"] {
            #expect(called.contains(path), "no script calls \(path)")
        }
        // The token travels in the Authorization header, from this tab's storage, never in a URL.
        let api = try #require(try await Self.scripts.first { $0.name == "api.js" }?.text)
        #expect(api.contains("sessionStorage") && api.contains("Authorization: `Bearer ${token()}`"))
        #expect(!api.contains("token=") && !api.contains("new EventSource"))
    }

    @Test(.enabled(if: TestEnvironment.hasExecutable("/usr/bin/node"), "node checks the modules' syntax"))
    func theScriptsParse() async throws {
        let directory = try TestEnvironment.temporaryDirectory(prefix: "dashboard")
        for (name, text) in try await Self.scripts {
            // .mjs: node reads it as a module, as the browser does.
            let file = directory.appendingPathComponent(name.replacingOccurrences(of: ".js", with: ".mjs"))
            try text.write(to: file, atomically: false, encoding: .utf8)
            let log = directory.appendingPathComponent("\(name).log")
            let node = try ChildProcess(executable: "/usr/bin/node", arguments: ["--check", file.path], logFile: log)
            var status: Int32?
            try await eventually("node --check \(name) finished") {
                status = node.exitStatus
                return status != nil
            }
            #expect(status == 0, "\(name): \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
    }
}
