import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird
import Logging

/// The request context: Hummingbird's core plus the authenticated caller.
public struct APIContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The caller, set by ``AuthMiddleware`` on every route but health, metrics and the spec.
    public var principal: Principal?
    /// The client's IP address, when the connection has one (for `X-Forwarded-For`).
    public var remoteAddress: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
        remoteAddress = source.channel.remoteAddress?.ipAddress
    }

    /// The largest body accepted (a 1 MiB manifest plus slack for JSON escaping).
    public var maxUploadSize: Int { 2 << 20 }

    /// The caller; throws 401 when unauthenticated (never the case behind the middleware).
    public func caller() throws -> Principal {
        guard let principal else { throw APIError(.unauthorized, .unauthorized, "authentication required") }
        return principal
    }

    /// The tenant a request acts for: the caller's own, or for admins `?tenant=`.
    public func tenant(_ request: Request) throws -> String {
        let caller = try caller()
        if caller.role == .admin, let asked = request.uri.queryParameters["tenant"] { return String(asked) }
        guard caller.role == .user || caller.role == .admin else {
            throw APIError(.forbidden, .forbidden, "a \(caller.role.rawValue) token can't use this route")
        }
        return caller.tenant
    }

    /// Throws 403 unless the caller is an admin.
    public func requireAdmin() throws {
        guard try caller().role == .admin else {
            throw APIError(.forbidden, .forbidden, "this route needs an admin token")
        }
    }
}

/// Authenticates every request except the public paths, and writes an audit line for every
/// mutating request: who, what, result — never a secret.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let authenticator: TokenAuthenticator
    let audit: Logger
    /// Refuses sources that guessed too many tokens lately; nil: no limit.
    var limiter: AuthFailureLimiter? = nil
    static let publicPaths: Set<String> = ["/healthz", "/readyz", "/metrics", "/openapi.json"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if AuthMiddleware.publicPaths.contains(request.uri.path) || DashboardRoutes.publicPaths.contains(request.uri.path) {
            return try await next(request, context)
        }
        // Inference URLs carry their own key (pods send no token), and are data, not changes
        // to the cluster: no audit line either.
        if request.uri.path.hasPrefix(InferenceEndpoint.pathPrefix) {
            return try await next(request, context)
        }
        // Application URLs are public, like any web application's (see ``AppIngress``).
        if request.uri.path.hasPrefix(AppIngress.pathPrefix) {
            return try await next(request, context)
        }
        var context = context
        // Inference calls through /v1/openai/ are data, not changes to the cluster: no audit line.
        let mutating = request.method != .get && request.method != .head && !request.uri.path.hasPrefix("/v1/openai/")
        do {
            let source = context.remoteAddress ?? "unknown"
            if let limiter, let wait = limiter.wait(source) {
                var error = APIError(
                    .tooManyRequests, .rateLimited,
                    "too many unknown tokens from \(source) in the last \(limiter.window.components.seconds) s; try again in \(wait.wholeSecondsRoundedUp) s")
                error.retryAfter = Int(wait.wholeSecondsRoundedUp)
                throw error
            }
            do {
                context.principal = try await authenticator.authenticate(request.headers[.authorization])
            } catch let error as APIError where error.status == .unauthorized && request.headers[.authorization] != nil {
                limiter?.recordFailure(source)
                throw error
            }
            let response = try await next(request, context)
            // A heartbeat that renewed a lease changes nothing an auditor asks about (and comes
            // every second from every node); a refused one is still recorded.
            let routineHeartbeat = AuthMiddleware.isHeartbeat(request) && response.status.code < 300
            if mutating && !routineHeartbeat { record(request, context.principal, status: response.status.code) }
            return response
        } catch let error as APIError {
            if mutating { record(request, context.principal, status: error.status.code) }
            throw error
        } catch let error as StoreError {
            if mutating { record(request, context.principal, status: APIError.from(error).status.code) }
            throw error
        } catch let error as HTTPResponseError {
            if mutating { record(request, context.principal, status: error.status.code) }
            throw error
        } catch {
            if mutating { record(request, context.principal, status: 500) }
            throw error
        }
    }

    /// Whether `request` is a node-agent's `POST /v1/nodes/{name}/heartbeat`.
    static func isHeartbeat(_ request: Request) -> Bool {
        guard request.method == .post else { return false }
        let parts = request.uri.path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 5 && parts[0].isEmpty && parts[1] == "v1" && parts[2] == "nodes" && parts[4] == "heartbeat"
    }

    private func record(_ request: Request, _ principal: Principal?, status: Int) {
        audit.notice(
            "audit",
            metadata: [
                "audit.method": "\(request.method.rawValue)",
                "audit.path": "\(request.uri.path)",
                "audit.tenant": "\(principal?.tenant ?? "-")",
                "audit.role": "\(principal?.role.rawValue ?? "anonymous")",
                "audit.token": "\(principal?.tokenID ?? "-")",
                "audit.status": "\(status)",
            ])
    }
}

/// Handles the rest of each request (every other middleware, the route, the store and etcd
/// calls) in a child task of the connection's task.
///
/// Swift's task allocator keeps every slab a task's async frames ever needed until the task
/// ends, and Hummingbird runs a connection in one task: a node-agent's connections (two
/// watches and its heartbeats) live for days, so each kept the deepest request it ever
/// served, about 45 KB (heaptrack, 1,000 hollow nodes: 150 KB per node in the api-server). In
/// a child task those frames are freed when the response is returned; the connection keeps
/// Hummingbird's frames and, for a watch, the streaming body's.
struct RequestTaskMiddleware: RouterMiddleware {
    typealias Context = APIContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try await withoutActuallyEscaping(next) { next in
            // The child ends before this returns (the `async let` is awaited), and this task
            // does nothing meanwhile: `next` is never run concurrently with its caller.
            nonisolated(unsafe) let next = next
            async let response = next(request, context)
            return try await response
        }
    }
}

/// Turns any error a route throws into our JSON error body, so clients never see a bare 500
/// page or an HTML error: store errors map to 404/409/503 naming their object
/// (``APIError/from(_:)``), so routes let them through; oversize bodies map to 413.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return try error.response(from: request, context: context)
        } catch let error as StoreError {
            let answer = APIError.from(error)
            if answer.status == .internalServerError {
                logger.error("request failed in the store", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try answer.response(from: request, context: context)
        } catch let error as HTTPError {
            let code: APIError.Code =
                error.status == .notFound ? .notFound : error.status == .contentTooLarge ? .tooLarge
                : error.status == .unauthorized ? .unauthorized : .badRequest
            let message = error.status == .notFound ? "no such route: \(request.method.rawValue) \(request.uri.path)" : (error.body ?? "\(error.status.reasonPhrase)")
            return try APIError(error.status, code, message).response(from: request, context: context)
        } catch let error as HTTPResponseError {
            let code: APIError.Code = error.status == .contentTooLarge ? .tooLarge : .badRequest
            let message = error.status == .contentTooLarge ? "the body is too large; the limit is \(context.maxUploadSize) bytes" : "\(error.status.reasonPhrase)"
            return try APIError(error.status, code, message).response(from: request, context: context)
        } catch {
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return try APIError(.internalServerError, .internalError, "internal error").response(from: request, context: context)
        }
    }
}
