import Foundation
import GPUPlaneCore
import Hummingbird

/// Application URLs: `/apps/<tenant>/<app>/<path>/…`, proxied by ``AppIngress`` to the pod whose
/// `path` matches, with no bearer token (an application's URL is public, like a web app's).
struct AppRoutes: Sendable {
    let deps: APIDependencies

    /// The methods the ingress forwards.
    static let methods: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]

    func register(_ routes: RouteTable) {
        for method in Self.methods {
            routes.add(method, "/apps/:tenant/:app/**") { request, context in
                try await deps.ingress.forward(request, context: context)
            }
        }
    }
}
