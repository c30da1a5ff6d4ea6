import Foundation
import GPUPlaneCore
import Hummingbird

/// The inference gateway's routes:
/// - `NXL_INFERENCE_URL` and what OpenAI clients append to it, with no bearer token: the key in
///   the path is the credential (see ``InferenceEndpoint``);
/// - `/v1/openai/…`, the OpenAI-compatible base URL of deployments, with the tenant's token.
struct GatewayRoutes: Sendable {
    let deps: APIDependencies

    func register(_ routes: RouteTable) {
        let path = "/v1/inference/:tenant/:slug/:key/v1/**"
        routes.add(.post, path) { try await forward($0, $1) }
        routes.add(.get, path) { try await forward($0, $1) }
        routes.add(.get, "/v1/openai/models") { _, context in try deps.gateway.models(for: try context.caller()) }
        routes.add(.post, "/v1/openai/**") { request, context in
            try await deps.gateway.forwardDeployment(
                request, caller: try context.caller(), rest: context.parameters.getCatchAll().joined(separator: "/"))
        }
    }

    /// Maps to `POST|GET /v1/inference/{tenant}/{slug}/{key}/v1/{path}`.
    func forward(_ request: Request, _ context: APIContext) async throws -> Response {
        let tenant = try context.parameters.require("tenant")
        let slug = try context.parameters.require("slug")
        let key = try context.parameters.require("key")
        let rest = context.parameters.getCatchAll().joined(separator: "/")
        return try await deps.gateway.forward(request, tenant: tenant, slug: slug, key: Substring(key), rest: rest)
    }
}
