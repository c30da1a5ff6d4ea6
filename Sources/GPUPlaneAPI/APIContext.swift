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

    // The handler is an async function whose frame is allocated for every request (every
    // node's beat each second): the work around `next` lives in the non-async helpers below,
    // each kept out of line, so that frame holds little more than the request and context
    // (4,768 bytes when it was written inline; docs/benchmarks.md, "Frames a request
    // allocates").
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard Self.needsToken(request) else { return try await next(request, context) }
        var context = context
        let mutating = Self.isMutating(request)
        do {
            try refuseIfLimited(context)
            context.principal = try await authenticate(request, context)
            let response = try await next(request, context)
            if mutating { recordAnswer(request, context.principal, response.status.code) }
            return response
        } catch {
            if mutating { record(request, context.principal, status: Self.status(of: error)) }
            throw error
        }
    }

    /// Whether `request` needs a token: not the public paths, the inference URLs (they carry
    /// their own key: pods send no token) or application URLs (public, like any web
    /// application's, see ``AppIngress``).
    @inline(never)
    static func needsToken(_ request: Request) -> Bool {
        let path = request.uri.path
        if publicPaths.contains(path) || DashboardRoutes.publicPaths.contains(path) { return false }
        return !path.hasPrefix(InferenceEndpoint.pathPrefix) && !path.hasPrefix(AppIngress.pathPrefix)
    }

    /// Whether `request` changes the cluster and so gets an audit line. Inference calls through
    /// /v1/openai/ are data, not changes to the cluster.
    @inline(never)
    static func isMutating(_ request: Request) -> Bool {
        request.method != .get && request.method != .head && !request.uri.path.hasPrefix("/v1/openai/")
    }

    /// Throws 429 when the caller's source guessed too many tokens lately.
    @inline(never)
    func refuseIfLimited(_ context: Context) throws {
        guard let limiter else { return }
        let source = context.remoteAddress ?? "unknown"
        guard let wait = limiter.wait(source) else { return }
        var error = APIError(
            .tooManyRequests, .rateLimited,
            "too many unknown tokens from \(source) in the last \(limiter.window.components.seconds) s; try again in \(wait.wholeSecondsRoundedUp) s")
        error.retryAfter = Int(wait.wholeSecondsRoundedUp)
        throw error
    }

    /// The caller of `request`; a token sent and refused counts against its source.
    func authenticate(_ request: Request, _ context: Context) async throws -> Principal {
        do {
            return try await authenticator.authenticate(request.headers[.authorization])
        } catch let error as APIError where error.status == .unauthorized && request.headers[.authorization] != nil {
            limiter?.recordFailure(context.remoteAddress ?? "unknown")
            throw error
        }
    }

    /// Records a mutating request's answer, except a heartbeat that renewed a lease: it
    /// changes nothing an auditor asks about (and comes every second from every node); a
    /// refused one is still recorded.
    @inline(never)
    func recordAnswer(_ request: Request, _ principal: Principal?, _ status: Int) {
        if NodeRoutes.isHeartbeat(method: request.method, path: request.uri.path[...]) && status < 300 { return }
        record(request, principal, status: status)
    }

    /// The status a thrown error is answered with (by ``ErrorMiddleware``), for the audit line.
    @inline(never)
    static func status(of error: any Error) -> Int {
        switch error {
        case let error as APIError: error.status.code
        case let error as StoreError: APIError.from(error).status.code
        case let error as HTTPResponseError: error.status.code
        default: 500
        }
    }

    @inline(never)
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

/// Turns any error a route throws into our JSON error body, so clients never see a bare 500
/// page or an HTML error: store errors map to 404/409/503 naming their object
/// (``APIError/from(_:)``), so routes let them through; oversize bodies map to 413.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return try answer(error, to: request, context: context)
        }
    }

    /// The JSON error answer to `error` (out of line: the handler's frame is allocated for
    /// every request, and this switch's temporaries made it 4,336 bytes).
    @inline(never)
    func answer(_ error: any Error, to request: Request, context: Context) throws -> Response {
        switch error {
        case let error as APIError:
            if error.code == .deadlineExceeded { APIServerMetrics.abandoned.increment() }
            return try error.response(from: request, context: context)
        case let error as StoreError:
            let answer = APIError.from(error)
            if answer.code == .deadlineExceeded { APIServerMetrics.abandoned.increment() }
            if answer.status == .internalServerError {
                logger.error("request failed in the store", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            }
            return try answer.response(from: request, context: context)
        case let error as HTTPError:
            let code: APIError.Code =
                error.status == .notFound ? .notFound : error.status == .contentTooLarge ? .tooLarge
                : error.status == .unauthorized ? .unauthorized : .badRequest
            let message = error.status == .notFound ? "no such route: \(request.method.rawValue) \(request.uri.path)" : (error.body ?? "\(error.status.reasonPhrase)")
            return try APIError(error.status, code, message).response(from: request, context: context)
        case let error as HTTPResponseError:
            let code: APIError.Code = error.status == .contentTooLarge ? .tooLarge : .badRequest
            let message = error.status == .contentTooLarge ? "the body is too large; the limit is \(context.maxUploadSize) bytes" : "\(error.status.reasonPhrase)"
            return try APIError(error.status, code, message).response(from: request, context: context)
        default:
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return try APIError(.internalServerError, .internalError, "internal error").response(from: request, context: context)
        }
    }
}
