import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import GPUPlaneSystem

/// A client for the container engine on a GPU host: Docker's Engine API or Podman's libpod
/// API, over the engine's unix socket.
///
/// ```swift
/// let engine = ContainerEngine.Client(.init(socketPath: "/run/podman/podman.sock"))
/// let id = try await engine.create(spec)
/// try await engine.start(id)
/// ```
public enum ContainerEngine {
    /// The label on every container this client creates.
    public static let managedLabel = (key: "gpuplane.io/managed", value: "true")
    /// The label naming the replica a container runs.
    public static let replicaLabelKey = "gpuplane.io/replica"

    /// The path prefix of Docker's API (1.41: Docker 20.10 and later, Podman 3 and later).
    static let compatPrefix = "/v1.41"
    /// The path prefix of Podman's libpod API.
    static let libpodPrefix = "/v4.0.0/libpod"
}

extension ContainerEngine {
    /// How to reach the engine.
    public struct Configuration: Sendable {
        /// The engine's unix socket, e.g. `/run/podman/podman.sock` or `/var/run/docker.sock`.
        public var socketPath: String
        /// The deadline of one call (a stop adds its grace period to it).
        public var requestTimeout: Duration
        /// The deadline of connecting to the socket.
        public var connectTimeout: Duration
        /// How many times an idempotent call is retried after the engine could not be reached
        /// or answered 502/503/504.
        public var maxRetries: Int
        /// The first pause between retries; it doubles each time.
        public var retryBackoff: Duration
        /// ``maxRetries`` and ``retryBackoff`` as ``CurlHTTP``'s retry policy: the pause
        /// doubles at most five times, without jitter; 502, 503 and 504 are retried.
        public var retryPolicy: CurlHTTP.RetryPolicy { .doubling(retries: maxRetries, firstDelay: retryBackoff) }
        /// The CDI kind of GPUs on Podman: a GPU of index `i` is the CDI device `<kind>=<i>`.
        public var cdiGPUKind: String
        /// Where the client logs.
        public var logger: Logger

        /// Makes a configuration.
        public init(
            socketPath: String, requestTimeout: Duration = .seconds(30), connectTimeout: Duration = .seconds(2),
            maxRetries: Int = 3, retryBackoff: Duration = .milliseconds(100), cdiGPUKind: String = "nvidia.com/gpu",
            logger: Logger = Logger(label: "gpuplane.engine")
        ) {
            self.socketPath = socketPath
            self.requestTimeout = requestTimeout
            self.connectTimeout = connectTimeout
            self.maxRetries = maxRetries
            self.retryBackoff = retryBackoff
            self.cdiGPUKind = cdiGPUKind
            self.logger = logger
        }
    }

    /// A container engine client. Thread-safe; share one per process.
    ///
    /// Every call has a deadline and runs on the client's own libcurl thread. The engine's
    /// kind is detected on first use (``engine()``) and remembered. Every method throws
    /// ``EngineError``.
    public final class Client: Sendable {
        /// The configuration this client was made with.
        public let configuration: Configuration
        let http: CurlHTTP.Client
        let logger: Logger
        private let detected = Locked<EngineInfo?>(nil)
        private let ownsHTTP: Bool

        /// Makes a client. Nothing is sent until the first call. Requests go through `http`
        /// when given (the caller keeps it and shuts it down), else through a transport of the
        /// client's own.
        public init(_ configuration: Configuration, http: CurlHTTP.Client? = nil) {
            self.configuration = configuration
            self.logger = configuration.logger
            self.http = http ?? CurlHTTP.Client(name: "engine-curl", maxConnections: 8)
            self.ownsHTTP = http == nil
        }

        /// Makes a client for the engine on `socketPath` with default settings.
        public convenience init(socketPath: String) {
            self.init(Configuration(socketPath: socketPath))
        }

        deinit { if ownsHTTP { http.shutdown() } }

        /// The engine on the socket, detected with `GET /version` on first use.
        public func engine() async throws(EngineError) -> EngineInfo {
            if let info = detected.withLock({ $0 }) { return info }
            let info = try await detectEngine()
            detected.withLock { $0 = info }
            return info
        }

        // MARK: Requests

        /// Sends one request to the engine, again as ``Configuration/retryPolicy`` allows for
        /// `retry` (idempotent: reads, and writes that converge such as start, stop, remove;
        /// only if not sent: create), and returns the answer whatever its status. `onLostAnswer` is
        /// called for each attempt sent again after getting no answer: that attempt may have
        /// taken effect (a remove that timed out may have removed).
        func send(
            _ method: CurlHTTP.Method, _ path: String, query: [(String, String)] = [], body: Data? = nil,
            timeout: Duration? = nil, retry: CurlHTTP.Idempotence,
            onLostAnswer: () -> Void = {}
        ) async throws(EngineError) -> CurlHTTP.Response {
            var headers: [CurlHTTP.Header] = []
            if body != nil { headers.append(CurlHTTP.Header("Content-Type", "application/json")) }
            let request = CurlHTTP.Request(
                method: method, url: "http://localhost" + path + Self.queryString(query), headers: headers,
                body: body, timeout: timeout ?? configuration.requestTimeout,
                connectTimeout: configuration.connectTimeout, unixSocketPath: configuration.socketPath)
            let result = await http.performResult(request, retrying: configuration.retryPolicy, idempotence: retry) {
                attempt, outcome in
                let failure: EngineError =
                    switch outcome {
                    case .success(let response): Self.refused(response, subject: path)
                    case .failure(let error): Self.transportError(error, path: path)
                    }
                // No answer (a timeout, a dropped connection): the engine may have done it.
                if case .failure = outcome { onLostAnswer() }
                logger.debug(
                    "engine request failed; retrying", metadata: ["path": "\(path)", "attempt": "\(attempt + 1)", "error": "\(failure)"])
            }
            switch result {
            case .success(let response): return response
            case .failure(let error): throw Self.transportError(error, path: path)
            }
        }

        /// `send` for calls that answer JSON on success (`expecting`), decoding it.
        func call<Response: Decodable>(
            _ method: CurlHTTP.Method, _ path: String, query: [(String, String)] = [], body: Data? = nil,
            timeout: Duration? = nil, retry: CurlHTTP.Idempotence, expecting: Set<Int> = [200], subject: String? = nil,
            as type: Response.Type = Response.self
        ) async throws(EngineError) -> Response {
            let response = try await send(method, path, query: query, body: body, timeout: timeout, retry: retry)
            if response.status == 404 {
                throw EngineError(
                    code: .notFound, message: Self.engineMessage(response), httpStatus: 404,
                    body: Self.bodyText(response), subject: subject ?? path)
            }
            guard expecting.contains(response.status) else { throw Self.refused(response, subject: subject ?? path) }
            return try Self.decode(type, from: response)
        }

        static func decode<T: Decodable>(_ type: T.Type, from response: CurlHTTP.Response) throws(EngineError) -> T {
            do {
                return try JSONDecoder().decode(type, from: response.body)
            } catch {
                throw EngineError(
                    code: .decoding, message: "\(error)", httpStatus: response.status, body: bodyText(response))
            }
        }

        static func encode<T: Encodable>(_ value: T) throws(EngineError) -> Data {
            do {
                return try JSONEncoder().encode(value)
            } catch {
                throw EngineError(code: .invalidSpec, message: "cannot encode request: \(error)")
            }
        }

        /// An unexpected status, with the engine's message.
        static func refused(_ response: CurlHTTP.Response, subject: String?) -> EngineError {
            EngineError(
                code: .engineRefused, message: "HTTP \(response.status): \(engineMessage(response))",
                httpStatus: response.status, body: bodyText(response), subject: subject)
        }

        /// The `message` of an engine's error body (both engines send one), or the body.
        static func engineMessage(_ response: CurlHTTP.Response) -> String {
            if let wire = try? JSONDecoder().decode(WireMessage.self, from: response.body), let message = wire.message {
                return message
            }
            return bodyText(response)
        }

        static func bodyText(_ response: CurlHTTP.Response) -> String {
            String(decoding: response.body.prefix(4000), as: UTF8.self)
        }

        static func transportError(_ error: CurlHTTPError, path: String) -> EngineError {
            let code: EngineError.Code =
                error.code == .cancelled ? .cancelled : error.code == .timeout ? .timeout : .unavailable
            return EngineError(code: code, message: error.message, subject: path)
        }

        /// A query string with every value percent-encoded.
        static func queryString(_ items: [(String, String)]) -> String {
            guard !items.isEmpty else { return "" }
            return "?" + items.map { "\(escape($0.0))=\(escape($0.1))" }.joined(separator: "&")
        }

        /// A path segment (container name or id, image reference) made safe for a URL.
        static func segment(_ text: String) -> String {
            text.percentEncoded(keeping: "-._~:@/")
        }

        static func escape(_ text: String) -> String {
            text.percentEncoded()
        }

        /// A `filters` query value: `{"label":["k=v",…]}`.
        static func labelFilters(_ labels: [String: String], extra: [String: [String]] = [:]) throws(EngineError) -> String {
            var filters = extra
            if !labels.isEmpty {
                filters["label"] = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            }
            return String(decoding: try encode(filters), as: UTF8.self)
        }
    }
}

