import Foundation
import Hummingbird

/// `/ui`: the dashboard, for people: plain HTML, CSS and JavaScript modules shipped in the
/// build (no build step, nothing fetched from elsewhere). The page asks for a token and does
/// everything through the `/v1/...` routes with it, as the CLI does. No token is needed for the
/// files themselves, which hold nothing of anyone's.
struct DashboardRoutes: Sendable {
    /// The scripts: `app.js` (sign-in, pages, live updates) imports the others.
    static let scripts = ["app.js", "api.js", "dom.js", "deployments.js", "applications.js", "fleet.js", "usage.js", "events.js"]

    /// The files, by route path: resource name and content type.
    static let files: [String: (name: String, type: String)] = {
        var files: [String: (name: String, type: String)] = [
            "/ui": ("index.html", "text/html; charset=utf-8"),
            "/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
            "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
        ]
        for script in scripts { files["/ui/" + script] = (script, "text/javascript; charset=utf-8") }
        return files
    }()

    /// The routes' paths, which need no token.
    static var publicPaths: Set<String> { Set(files.keys) }

    func register(_ routes: RouteTable) {
        for (path, file) in Self.files.sorted(by: { $0.key < $1.key }) {
            routes.add(.get, path) { _, _ in try Self.serve(file.name, type: file.type) }
        }
    }

    static func serve(_ name: String, type: String) throws -> Response {
        guard let data = DashboardFiles.data(name) else {
            throw APIError(.internalServerError, .internalError, "the dashboard's \(name) is missing from the build")
        }
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "no-cache"
        // Only this origin's script, style and API; never framed.
        headers[.contentSecurityPolicy] = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        headers[.xContentTypeOptions] = "nosniff"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The dashboard's files in the build (`Sources/GPUPlaneAPI/Dashboard`).
enum DashboardFiles {
    static func data(_ name: String) -> Data? {
        let dot = name.lastIndex(of: ".") ?? name.endIndex
        let base = String(name[..<dot])
        let ext = dot < name.endIndex ? String(name[name.index(after: dot)...]) : nil
        return Bundle.module.url(forResource: base, withExtension: ext, subdirectory: "Dashboard").flatMap { try? Data(contentsOf: $0) }
    }
}
