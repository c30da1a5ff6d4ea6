import CurlHTTP
import Foundation
import GPUPlaneTestSupport

/// A STAND-IN for the Hugging Face Hub, NOT the Hub: a small Python HTTP server on loopback that
/// serves the two routes the node-agent's weights fetch uses, from a folder (`<folder>/<owner>/<name>/…`):
/// - `GET /api/models/<owner>/<name>/revision/<rev>[?blobs=true]`: `{"id", "sha", "siblings":
///   [{"rfilename", "size", "lfs": {"sha256", "size"}}]}` (the commit is the sha1 of the file
///   list and contents, so it changes when the files do);
/// - `GET /<owner>/<name>/resolve/<commit>/<path>`: the file's bytes.
/// With a token, both answer 401 to a request without `Authorization: Bearer <token>`. A file
/// named in `lie` is announced with a wrong sha256 (a verification failure to catch). Every
/// request line and its Authorization header's presence are logged to `requests.log`.
final class HuggingFaceHubStandIn: @unchecked Sendable {
    private static let http = CurlHTTP.Client(name: "hf-standin-probe", maxConnections: 2)
    let folder: URL
    let endpoint: String
    private let process: ChildProcess

    init(token: String?, lie: String? = nil) async throws {
        folder = try TestEnvironment.temporaryDirectory(prefix: "hf-hub-standin")
        let script = folder.appendingPathComponent("hf_hub_standin.py")
        try Self.script.write(to: script, atomically: true, encoding: .utf8)
        let port = TestEnvironment.freePort()
        endpoint = "http://127.0.0.1:\(port)"
        try FileManager.default.createDirectory(at: folder.appendingPathComponent("repos"), withIntermediateDirectories: true)
        process = try ChildProcess(
            executable: "/usr/bin/python3",
            arguments: [script.path, String(port), folder.appendingPathComponent("repos").path, token ?? "", lie ?? ""],
            logFile: folder.appendingPathComponent("standin.log"))
        let http = Self.http
        try await eventually("the Hub stand-in answers", timeout: 30, every: 0.05) {
            (try? await http.perform(.init(url: self.endpoint + "/health", timeout: .seconds(2))))?.status == 200
        }
    }

    /// Writes `files` into repository `repo` (`owner/name`).
    func add(_ repo: String, _ files: [(String, Data)]) throws {
        for (name, data) in files {
            let url = folder.appendingPathComponent("repos/\(repo)/\(name)")
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
    }

    /// The request log.
    var requests: String { (try? String(contentsOf: folder.appendingPathComponent("requests.log"), encoding: .utf8)) ?? "" }

    func shutdown() {
        process.stop(timeout: 2)
        try? FileManager.default.removeItem(at: folder)
    }

    deinit { shutdown() }

    static let script = #"""
        # A STAND-IN for the Hugging Face Hub (gpuplane tests), NOT the Hub: serves
        # /api/models/<repo>/revision/<rev> and /<repo>/resolve/<commit>/<path> from a folder.
        import hashlib, http.server, json, os, sys, urllib.parse
        port, root, token, lie = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        log = os.path.join(os.path.dirname(root), "requests.log")

        def files(repo):
            base = os.path.join(root, repo)
            out = []
            for directory, _, names in os.walk(base):
                for name in names:
                    path = os.path.join(directory, name)
                    out.append((os.path.relpath(path, base), path))
            return sorted(out)

        def commit(repo):
            h = hashlib.sha1()
            for rel, path in files(repo):
                h.update(rel.encode())
                h.update(open(path, "rb").read())
            return h.hexdigest()

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, status, body, kind="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                auth = self.headers.get("Authorization")
                with open(log, "a") as f:
                    f.write("%s auth=%s\n" % (self.path, "yes" if auth else "no"))
                if self.path == "/health":
                    return self.answer(200, b"{}")
                if token and auth != "Bearer " + token:
                    return self.answer(401, b'{"error": "Invalid credentials in Authorization header"}')
                path = urllib.parse.unquote(self.path.split("?")[0])
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
                    repo = parts[2] + "/" + parts[3]
                    if not os.path.isdir(os.path.join(root, repo)):
                        return self.answer(404, b'{"error": "Repository not found"}')
                    siblings = []
                    for rel, full in files(repo):
                        data = open(full, "rb").read()
                        sha = hashlib.sha256(data).hexdigest()
                        if rel == lie:
                            sha = "0" * 64
                        siblings.append({"rfilename": rel, "size": len(data), "lfs": {"sha256": sha, "size": len(data)}})
                    body = {"id": repo, "sha": commit(repo), "siblings": siblings}
                    return self.answer(200, json.dumps(body).encode())
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = parts[0] + "/" + parts[1]
                    if parts[3] != commit(repo):
                        return self.answer(404, b'{"error": "Revision not found"}')
                    full = os.path.join(root, repo, *parts[4:])
                    if not os.path.isfile(full):
                        return self.answer(404, b'{"error": "Entry not found"}')
                    return self.answer(200, open(full, "rb").read(), "application/octet-stream")
                return self.answer(404, b'{"error": "no such route in the stand-in"}')

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#
}
