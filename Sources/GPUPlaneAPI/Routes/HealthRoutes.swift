import Foundation
import GPUPlaneService
import Hummingbird

/// `/healthz`, `/readyz`, `/metrics`, `/openapi.json`: no token needed.
struct HealthRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        routes.add(.get, "/healthz") { _, _ in try HTTPJSON.response(["status": "ok"]) }
        routes.add(.get, "/readyz") { _, _ in try await ready() }
        routes.add(.get, "/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = MetricsExporter.contentType
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: MetricsExporter.render())))
        }
        routes.add(.get, "/openapi.json") { _, _ in
            guard let data = OpenAPIDocument.data else {
                throw APIError(.internalServerError, .internalError, "the OpenAPI document is missing from the build")
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
        }
    }

    /// Ready when etcd answers.
    func ready() async throws -> Response {
        do {
            try await deps.store.ping()
            return try HTTPJSON.response(["status": "ready"])
        } catch {
            throw APIError(.serviceUnavailable, .unavailable, "etcd does not answer")
        }
    }
}

/// The OpenAPI 3 document shipped with the server (`Sources/GPUPlaneAPI/openapi.json`).
public enum OpenAPIDocument {
    /// The document's bytes.
    public static let data: Data? = Bundle.module.url(forResource: "openapi", withExtension: "json").flatMap { try? Data(contentsOf: $0) }
}
