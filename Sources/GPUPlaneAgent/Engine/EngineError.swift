/// The one error type of the container engine client.
///
/// Decide on an error by its ``code`` (and the fields beside it), never by its message:
/// `if error.code == .imageMissing { pull() }`.
public struct EngineError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a closed set of cases exposed as static members so adding one
    /// breaks no caller's `switch`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case unavailable, timeout, cancelled, notFound, imageMissing, nameConflict
            case invalidSpec, startFailed, engineRefused, decoding, unsupportedEngine
            case imageNotFound, registryUnauthorized, pullFailed
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The engine's socket could not be reached, or the connection broke.
        public static let unavailable = Code(.unavailable)
        /// The call's deadline passed.
        public static let timeout = Code(.timeout)
        /// The calling task was cancelled; the request was aborted.
        public static let cancelled = Code(.cancelled)
        /// No container has that name or id.
        public static let notFound = Code(.notFound)
        /// The image is not in the engine's store (nothing is pulled implicitly).
        public static let imageMissing = Code(.imageMissing)
        /// A pull found no such image: the registry has no such repository, tag or digest.
        public static let imageNotFound = Code(.imageNotFound)
        /// A pull was refused by the registry: the credential was wrong, or it wants one and
        /// none was given (a registry cannot tell an unknown private repository from a refusal).
        public static let registryUnauthorized = Code(.registryUnauthorized)
        /// A pull failed otherwise (the registry unreachable, TLS, a broken layer); see
        /// ``EngineError/message`` for the engine's words.
        public static let pullFailed = Code(.pullFailed)
        /// A container with that name exists already.
        public static let nameConflict = Code(.nameConflict)
        /// The spec was refused before anything was sent; see ``EngineError/field``.
        public static let invalidSpec = Code(.invalidSpec)
        /// The container exists but the engine could not start it (bad command, a GPU the
        /// host does not have); see ``EngineError/message`` for the engine's words.
        public static let startFailed = Code(.startFailed)
        /// The engine answered with a status the call did not expect; see
        /// ``EngineError/httpStatus`` and ``EngineError/body``.
        public static let engineRefused = Code(.engineRefused)
        /// The engine's answer could not be decoded; see ``EngineError/body``.
        public static let decoding = Code(.decoding)
        /// The engine on the socket is neither Docker nor Podman 4+, or too old.
        public static let unsupportedEngine = Code(.unsupportedEngine)

        /// A short, stable name, safe to use as a metric label.
        public var description: String { value.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// A human-readable explanation (for ``Code/engineRefused`` and ``Code/startFailed``, the
    /// engine's own message); for logs and events only.
    public let message: String
    /// For ``Code/invalidSpec``: the spec field at fault, e.g. `environment.NVIDIA_VISIBLE_DEVICES`.
    public var field: String?
    /// The HTTP status the engine answered with, when it answered.
    public var httpStatus: Int?
    /// The body of the engine's answer, when relevant.
    public var body: String?
    /// The container (name or id) or image the call was about.
    public var subject: String?

    /// Makes an error.
    public init(
        code: Code, message: String, field: String? = nil, httpStatus: Int? = nil, body: String? = nil,
        subject: String? = nil
    ) {
        self.code = code
        self.message = message
        self.field = field
        self.httpStatus = httpStatus
        self.body = body
        self.subject = subject
    }

    /// A spec that the client refuses to send.
    public static func invalidSpec(_ field: String, _ message: String) -> EngineError {
        EngineError(code: .invalidSpec, message: "\(field): \(message)", field: field)
    }

    public var description: String {
        var parts = ["EngineError.\(code): \(message)"]
        if let subject { parts.append("subject=\(subject)") }
        if let httpStatus { parts.append("http=\(httpStatus)") }
        if let body, code == .decoding || code == .engineRefused { parts.append("body=\(body.prefix(300))") }
        return parts.joined(separator: " ")
    }
}
