/// The one error type of the etcd client.
///
/// Decide on an error by its ``code`` (and the structured fields next to it), never by its
/// message: `if error.code == .compacted { relist() }`.
public struct EtcdError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a closed set of cases exposed as static members so adding one
    /// breaks no caller's `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case unavailable, timeout, cancelled, compacted, futureRevision, http, decoding
            case leaseNotFound, grpc, notLeader, invalidConfiguration, unauthenticated
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// No member could be reached (connection refused, reset, DNS, TLS), or every
        /// member answered "unavailable".
        public static let unavailable = Code(.unavailable)
        /// The request's deadline passed.
        public static let timeout = Code(.timeout)
        /// The calling task was cancelled; the transfer was aborted.
        public static let cancelled = Code(.cancelled)
        /// The requested revision was compacted away; see ``EtcdError/compactRevision``.
        public static let compacted = Code(.compacted)
        /// The requested revision is newer than the store's.
        public static let futureRevision = Code(.futureRevision)
        /// The gateway answered with an unexpected HTTP status; see ``EtcdError/httpStatus``
        /// and ``EtcdError/body``.
        public static let http = Code(.http)
        /// The gateway's answer could not be decoded; see ``EtcdError/body``.
        public static let decoding = Code(.decoding)
        /// The lease does not exist (never granted, revoked or expired).
        public static let leaseNotFound = Code(.leaseNotFound)
        /// etcd answered with a gRPC error; see ``EtcdError/grpcCode``.
        public static let grpc = Code(.grpc)
        /// An election call was made with a leader key that no longer holds leadership.
        public static let notLeader = Code(.notLeader)
        /// The client's configuration is unusable (no endpoints, bad URL, unreadable TLS file).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// Authentication failed (wrong user or password, or auth is required).
        public static let unauthenticated = Code(.unauthenticated)

        /// A short, stable name, safe to use as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A human-readable explanation; for logs only.
    public let message: String
    /// The HTTP status the gateway answered with, when it answered.
    public var httpStatus: Int?
    /// The body of the gateway's answer, when relevant (errors, undecodable bodies).
    public var body: String?
    /// The gRPC status code etcd reported, when it reported one.
    public var grpcCode: Int?
    /// For ``Code/compacted``: the revision the store was compacted at, when known.
    public var compactRevision: Int64?
    /// The member endpoint the failing request went to, when one was chosen.
    public var endpoint: String?

    /// Makes an error; prefer the static constructors.
    public init(
        code: Code, message: String, httpStatus: Int? = nil, body: String? = nil,
        grpcCode: Int? = nil, compactRevision: Int64? = nil, endpoint: String? = nil
    ) {
        self.code = code
        self.message = message
        self.httpStatus = httpStatus
        self.body = body
        self.grpcCode = grpcCode
        self.compactRevision = compactRevision
        self.endpoint = endpoint
    }

    /// No member could be reached.
    public static func unavailable(_ message: String, endpoint: String? = nil) -> EtcdError {
        EtcdError(code: .unavailable, message: message, endpoint: endpoint)
    }
    /// A deadline passed.
    public static func timeout(_ message: String, endpoint: String? = nil) -> EtcdError {
        EtcdError(code: .timeout, message: message, endpoint: endpoint)
    }
    /// The task was cancelled.
    public static let cancelled = EtcdError(code: .cancelled, message: "cancelled")
    /// The revision was compacted; `revision` is the compaction revision when known.
    public static func compacted(_ revision: Int64?) -> EtcdError {
        EtcdError(
            code: .compacted, message: "revision compacted at \(revision.map(String.init) ?? "?")",
            compactRevision: revision)
    }
    /// An unexpected HTTP status.
    public static func http(_ status: Int, body: String) -> EtcdError {
        EtcdError(code: .http, message: "HTTP \(status)", httpStatus: status, body: body)
    }
    /// An undecodable answer.
    public static func decoding(_ message: String, body: String) -> EtcdError {
        EtcdError(code: .decoding, message: message, body: body)
    }
    /// The lease does not exist.
    public static func leaseNotFound(_ id: Int64) -> EtcdError {
        EtcdError(code: .leaseNotFound, message: "lease \(id) not found")
    }
    /// A gRPC error from etcd.
    public static func grpc(_ code: Int, message: String) -> EtcdError {
        EtcdError(code: .grpc, message: message, grpcCode: code)
    }

    public var description: String {
        var parts = ["EtcdError.\(code): \(message)"]
        if let httpStatus { parts.append("http=\(httpStatus)") }
        if let grpcCode { parts.append("grpc=\(grpcCode)") }
        if let endpoint { parts.append("endpoint=\(endpoint)") }
        if let body, code == .decoding || code == .http { parts.append("body=\(body.prefix(300))") }
        return parts.joined(separator: " ")
    }
}

/// gRPC status codes etcd uses, as the gateway reports them in `"code"`.
enum GRPCStatus {
    static let cancelled = 1
    static let unknown = 2
    static let invalidArgument = 3
    static let deadlineExceeded = 4
    static let notFound = 5
    static let failedPrecondition = 9
    static let outOfRange = 11
    static let unavailable = 14
    static let unauthenticated = 16
}
