/// The one error type of ``CurlHTTP``.
///
/// Decide on an error by its ``code`` and the fields beside it, never by its message.
public struct CurlHTTPError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a closed set of cases exposed as static members so adding one
    /// breaks no caller's `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case couldNotConnect, timeout, cancelled, shutDown, transfer, httpStatus
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// No connection could be made (refused, no such socket, DNS, TLS handshake): the
        /// request provably never left, so even a non-idempotent one may be sent again.
        public static let couldNotConnect = Code(.couldNotConnect)
        /// The request's deadline passed.
        public static let timeout = Code(.timeout)
        /// The calling task was cancelled, or the stream was cancelled; the transfer was aborted.
        public static let cancelled = Code(.cancelled)
        /// The client was shut down before or while the transfer ran.
        public static let shutDown = Code(.shutDown)
        /// libcurl failed the transfer after it started (connection reset, bad answer); see
        /// ``CurlHTTPError/curlCode`` and ``CurlHTTPError/reachedServer``.
        public static let transfer = Code(.transfer)
        /// Only for streams: the server answered with a status other than 2xx; see
        /// ``CurlHTTPError/response``.
        public static let httpStatus = Code(.httpStatus)

        /// A short, stable name, safe to use as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A human-readable explanation (libcurl's); for logs only.
    public let message: String
    /// libcurl's `CURLcode`, when libcurl reported the failure.
    public var curlCode: Int?
    /// Whether any of the request may have reached the server. False only when it provably
    /// did not, so a non-idempotent request may be repeated.
    public var reachedServer: Bool
    /// For ``Code/httpStatus``: the answer, with its status, headers and body.
    public var response: CurlHTTP.Response?

    /// Makes an error.
    public init(
        code: Code, message: String, curlCode: Int? = nil, reachedServer: Bool,
        response: CurlHTTP.Response? = nil
    ) {
        self.code = code
        self.message = message
        self.curlCode = curlCode
        self.reachedServer = reachedServer
        self.response = response
    }

    /// The transfer was cancelled.
    public static let cancelled = CurlHTTPError(code: .cancelled, message: "cancelled", reachedServer: true)
    /// The client was shut down.
    public static let shutDown = CurlHTTPError(code: .shutDown, message: "client shut down", reachedServer: false)

    public var description: String {
        var parts = ["CurlHTTPError.\(code): \(message)"]
        if let curlCode { parts.append("curl=\(curlCode)") }
        if let response { parts.append("status=\(response.status)") }
        return parts.joined(separator: " ")
    }
}
