/// The one error type of ``NodeAPI``.
///
/// Decide on an error by its ``code`` (and ``httpStatus``), never by its message.
public struct NodeAPIError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as static members so adding a code breaks no caller's `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case unavailable, timeout, cancelled, unauthorized, forbidden, notFound, conflict, gone
            case rejected, decoding, encoding
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The api-server could not be reached, or answered 502/503/504 after every retry.
        public static let unavailable = Code(.unavailable)
        /// The call's deadline passed.
        public static let timeout = Code(.timeout)
        /// The calling task was cancelled, or the client shut down.
        public static let cancelled = Code(.cancelled)
        /// 401: the node token is missing or unknown.
        public static let unauthorized = Code(.unauthorized)
        /// 403: the token may not do this (it speaks for another node).
        public static let forbidden = Code(.forbidden)
        /// 404: no such object, or (for replicas) not bound to this node.
        public static let notFound = Code(.notFound)
        /// 409: the object kept changing.
        public static let conflict = Code(.conflict)
        /// 410, or a watch `ERROR` with code 410: the resourceVersion is compacted; list again.
        public static let gone = Code(.gone)
        /// Any other non-2xx answer; see ``NodeAPIError/httpStatus`` and ``NodeAPIError/body``.
        public static let rejected = Code(.rejected)
        /// A 2xx answer that is not the JSON expected.
        public static let decoding = Code(.decoding)
        /// A request body that could not be encoded.
        public static let encoding = Code(.encoding)

        /// A short, stable name, safe as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// Words for a log.
    public let message: String
    /// The HTTP status, when an answer came.
    public var httpStatus: Int?
    /// The start of the answer's body, when one came.
    public var body: String?
    /// The path called.
    public var path: String?

    /// Makes an error.
    public init(code: Code, message: String, httpStatus: Int? = nil, body: String? = nil, path: String? = nil) {
        self.code = code
        self.message = message
        self.httpStatus = httpStatus
        self.body = body
        self.path = path
    }

    public var description: String {
        var text = "NodeAPIError.\(code)"
        if let path { text += " \(path)" }
        if let httpStatus { text += " HTTP \(httpStatus)" }
        return text + ": " + message
    }
}
