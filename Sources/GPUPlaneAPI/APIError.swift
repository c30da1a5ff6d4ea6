import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// An error answered to a client as `{"error": {"code", "message", "field", "line", "column"}}`,
/// with every finding in `details` when validation produced several.
public struct APIError: Error, HTTPResponseError, Sendable {
    /// A stable, machine-readable code.
    public struct Code: RawRepresentable, Hashable, Sendable, Codable {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        /// The body is not YAML/JSON, or a field has the wrong type.
        public static let badRequest = Code(rawValue: "bad_request")
        /// No valid bearer token.
        public static let unauthorized = Code(rawValue: "unauthorized")
        /// The plan or a quota does not allow it, or the role may not.
        public static let forbidden = Code(rawValue: "forbidden")
        /// No such object (or one the caller may not see).
        public static let notFound = Code(rawValue: "not_found")
        /// The path exists but not with this method (405, with `Allow`).
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        /// The object changed since the version given, or already exists.
        public static let conflict = Code(rawValue: "conflict")
        /// The body is larger than allowed.
        public static let tooLarge = Code(rawValue: "too_large")
        /// The manifest decoded but breaks a rule.
        public static let invalid = Code(rawValue: "invalid")
        /// A watch asked for a revision etcd has compacted.
        public static let gone = Code(rawValue: "gone")
        /// etcd is unreachable.
        public static let unavailable = Code(rawValue: "unavailable")
        /// A bug on our side.
        public static let internalError = Code(rawValue: "internal")
        /// The model server behind the inference gateway failed (502).
        public static let upstream = Code(rawValue: "upstream")
        /// The model server behind the inference gateway took too long (504).
        public static let upstreamTimeout = Code(rawValue: "upstream_timeout")
        /// Too many requests wait for the model already; retry later (429).
        public static let overloaded = Code(rawValue: "overloaded")
        /// Too many unknown tokens came from this address lately; retry later (429).
        public static let rateLimited = Code(rawValue: "rate_limited")
        /// The request asks for something the server does not do (501), e.g. a websocket
        /// upgrade through the application ingress.
        public static let notImplemented = Code(rawValue: "not_implemented")
        /// The request waited longer than its client's `Gpuplane-Timeout-Ms` before it was done
        /// (504): nothing was written (``RequestDeadline``).
        public static let deadlineExceeded = Code(rawValue: "deadline_exceeded")
    }

    /// The HTTP status.
    public var status: HTTPResponse.Status
    /// The machine-readable code.
    public var code: Code
    /// What went wrong and how to fix it.
    public var message: String
    /// The dotted path of the field concerned.
    public var field: String?
    /// Position in the body, for YAML/JSON findings.
    public var line: Int?
    /// Column in the body.
    public var column: Int?
    /// Every finding, when there are several.
    public var details: [Diagnostic]
    /// Seconds after which a retry may succeed (`Retry-After`), for 429 and 503.
    public var retryAfter: Int?
    /// The methods the path has (`Allow`), for 405.
    public var allow: String?

    /// Makes an error.
    public init(
        _ status: HTTPResponse.Status, _ code: Code, _ message: String, field: String? = nil,
        line: Int? = nil, column: Int? = nil, details: [Diagnostic] = []
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.line = line
        self.column = column
        self.details = details
    }

    /// The answer to a manifest with errors: the first error up front, all findings in details.
    /// Entitlement and quota refusals are 403; syntax and size problems 400/413; rule breaks 422.
    public static func rejected(_ diagnostics: [Diagnostic]) -> APIError {
        let errors = diagnostics.errors
        guard let first = errors.first else {
            return APIError(.unprocessableContent, .invalid, "the request is invalid", details: diagnostics)
        }
        let status: HTTPResponse.Status
        let code: Code
        switch first.code {
        case .documentTooLarge:
            (status, code) = (.contentTooLarge, .tooLarge)
        case .syntax, .tooDeep, .aliasExpansion, .invalidEncoding, .emptyDocument, .typeMismatch, .unknownDocument:
            (status, code) = (.badRequest, .badRequest)
        case _ where errors.contains { $0.code == .planEntitlement || $0.code == .gpuLimitExceeded }
            && errors.allSatisfy({ $0.code == .planEntitlement || $0.code == .gpuLimitExceeded }):
            (status, code) = (.forbidden, .forbidden)
        default:
            (status, code) = (.unprocessableContent, .invalid)
        }
        let message = errors.count == 1 ? first.message : "\(first.message) (and \(errors.count - 1) more in details)"
        return APIError(
            status, code, message, field: first.path.isEmpty ? nil : first.path, line: first.line,
            column: first.column, details: diagnostics)
    }

    /// The answer to a store failure, naming the object it is about from the error's key and
    /// kind ("application web not found"): what ``ErrorMiddleware`` answers to a
    /// ``StoreError`` a route lets through.
    public static func from(_ error: StoreError) -> APIError {
        from(error, what: subject(of: error))
    }

    /// What a store failure is about, in words: `<kind> <name>` from its object's key
    /// (replicas as `<tenant>/<name>`, as their routes name them), the kind alone without a
    /// key, and "an object of this request" when it names no object (a condition of the
    /// transaction, which has a key but no kind).
    static func subject(of error: StoreError) -> String {
        if let kind = error.kind, let key = error.key, let object = KeySpace.object(ofKey: key), object.kind == kind {
            let noun = noun(object.kind)
            return object.kind == .replica ? "\(noun) \(object.tenant)/\(object.name)" : "\(noun) \(object.name)"
        }
        if let kind = error.kind { return noun(kind) }
        return "an object of this request"
    }

    /// A kind's name in messages, singular.
    static func noun(_ kind: ResourceKind) -> String {
        switch kind {
        case .application: return "application"
        case .deployment: return "deployment"
        case .replica: return "replica"
        case .modelServer: return "model server"
        case .node: return "node"
        case .catalogModel: return "catalog model"
        case .machineType: return "machine type"
        case .tenant: return "tenant"
        case .usageRecord: return "usage record"
        case .event: return "event"
        case .secret: return "secret"
        }
    }

    /// The answer to a store failure, naming the object concerned as `what`.
    public static func from(_ error: StoreError, what: String) -> APIError {
        switch error.code {
        case .notFound: return APIError(.notFound, .notFound, "\(what) not found")
        case .alreadyExists: return APIError(.conflict, .conflict, "\(what) already exists")
        case .conflict:
            return APIError(
                .conflict, .conflict,
                "\(what) was changed by someone else (now at resourceVersion \(error.currentVersion ?? "?")); read it again and retry")
        case .preconditionFailed:
            let why = error.failedCondition.map { " (\($0))" } ?? ""
            return APIError(.conflict, .conflict, "\(what) changed while the request ran\(why); retry")
        case .unavailable: return APIError(.serviceUnavailable, .unavailable, "the store is unavailable; retry")
        case .compacted:
            return APIError(.gone, .gone, "the changes of \(what) asked for are compacted away; list again and watch from the list's resourceVersion")
        // The store refuses a request it cannot serve as given (a malformed version, say): the
        // routes check what clients send first, so this is a backstop, but the client's all
        // the same, never a 500.
        case .invalid:
            return APIError(.badRequest, .badRequest, "the request on \(what) cannot be served as given; check its resourceVersion and fields")
        case .deadlineExceeded: return RequestDeadline.passed
        default: return APIError(.internalServerError, .internalError, "store error: \(error.code)")
        }
    }

    struct Body: Encodable {
        struct Inner: Encodable {
            var code: String
            var message: String
            var field: String?
            var line: Int?
            var column: Int?
        }
        var error: Inner
        var details: [Diagnostic]?
    }

    /// The JSON body.
    public var body: Data {
        let body = Body(
            error: .init(code: code.rawValue, message: message, field: field, line: line, column: column),
            details: details.isEmpty ? nil : details)
        return (try? GPUPlaneJSON.encode(body)) ?? Data(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if let allow { headers[.allow] = allow }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
