import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Logging
import StreamingJSON
import GPUPlaneSystem

/// The etcd v3 client: KV, transactions, leases, watches, elections and maintenance over
/// etcd's HTTP/JSON gateway, driven by libcurl.
public enum Etcd {}

extension Etcd {
    /// How to reach an etcd cluster.
    public struct Configuration: Sendable {
        /// Client certificates and the CA to trust (the CA that signed the members'
        /// certificates), for `https://` endpoints: ``CurlHTTP``'s one TLS configuration.
        public typealias TLS = CurlHTTP.TLS

        /// The members' client URLs, e.g. `http://127.0.0.1:2379`. Requests go to one member
        /// and move to the next when it fails.
        public var endpoints: [String]
        /// The deadline of one unary request to one member.
        public var requestTimeout: Duration
        /// The deadline of opening a connection.
        public var dialTimeout: Duration
        /// TLS files, for `https://` endpoints.
        public var tls: TLS?
        /// User and password for etcd's auth (`POST /v3/auth/authenticate`).
        public var credentials: (user: String, password: String)?
        /// How many times one call may be retried on another member (0: as many as endpoints × 2).
        public var maxRetries: Int
        /// The first pause between retries; it doubles up to one second, with jitter.
        public var retryBackoff: Duration
        /// A stream (watch, observe) quiet for this long gets its member probed; a member that
        /// does not answer the probe is left for another.
        public var streamIdleTimeout: Duration
        /// Where the client logs.
        public var logger: Logger

        /// Makes a configuration.
        public init(
            endpoints: [String], requestTimeout: Duration = .seconds(5), dialTimeout: Duration = .seconds(2),
            tls: TLS? = nil, credentials: (user: String, password: String)? = nil, maxRetries: Int = 0,
            retryBackoff: Duration = .milliseconds(50), streamIdleTimeout: Duration = .seconds(10),
            logger: Logger = Logger(label: "gpuplane.etcd")
        ) {
            self.endpoints = endpoints
            self.requestTimeout = requestTimeout
            self.dialTimeout = dialTimeout
            self.tls = tls
            self.credentials = credentials
            self.maxRetries = maxRetries
            self.retryBackoff = retryBackoff
            self.streamIdleTimeout = streamIdleTimeout
            self.logger = logger
        }
    }

    /// An etcd client. Thread-safe; share one per process and cluster.
    ///
    /// Every transfer runs on the client's own libcurl thread (never on Swift's cooperative
    /// pool) and reuses pooled connections. Cancelling the calling task aborts the transfer.
    /// Every method throws ``EtcdError``.
    public final class Client: Sendable {
        /// The configuration this client was made with.
        public let configuration: Configuration
        let http: CurlHTTP.Client
        let logger: Logger
        private let state: Locked<State>

        struct State {
            var preferred = 0
            var token: String?
        }

        /// Makes a client. Nothing is sent until the first call.
        /// - Throws: ``EtcdError/Code/invalidConfiguration`` when there is no endpoint.
        public init(_ configuration: Configuration) throws {
            guard !configuration.endpoints.isEmpty else {
                throw EtcdError(code: .invalidConfiguration, message: "no endpoints")
            }
            for e in configuration.endpoints where !(e.hasPrefix("http://") || e.hasPrefix("https://")) {
                throw EtcdError(code: .invalidConfiguration, message: "endpoint \(e) is not an http(s) URL")
            }
            self.configuration = configuration
            self.logger = configuration.logger
            self.http = CurlHTTP.Client(name: "etcd-curl")
            self.state = Locked(State())
        }

        /// Makes a client for `endpoints` with default settings.
        public convenience init(endpoints: [String]) throws {
            try self.init(Configuration(endpoints: endpoints))
        }

        deinit { http.shutdown() }

        /// Transfers and new connections so far; `connectionsOpened` far below `transfers`
        /// shows connection reuse.
        public var transportStatistics: TransportStatistics {
            let s = http.statistics
            return TransportStatistics(transfers: s.transfers, connectionsOpened: s.connectionsOpened)
        }

        /// The endpoint requests go to now.
        public var currentEndpoint: String { configuration.endpoints[currentEndpointIndex] }

        var currentEndpointIndex: Int { state.withLock { $0.preferred } }

        /// Leaves `index` for the next member, unless someone already did.
        func endpointFailed(_ index: Int) {
            let n = configuration.endpoints.count
            state.withLock { s in
                if s.preferred == index { s.preferred = (index + 1) % n }
            }
        }

        /// ``Configuration/maxRetries`` and ``Configuration/retryBackoff`` as ``CurlHTTP``'s
        /// retry policy: the pause doubles at most five times and up to one second, times a
        /// random 0.5…1.
        var retryPolicy: CurlHTTP.RetryPolicy {
            let retries = configuration.maxRetries > 0 ? configuration.maxRetries : configuration.endpoints.count * 2
            return .doubling(retries: retries, firstDelay: configuration.retryBackoff, maxDelay: .seconds(1), jitter: 0.5...1.0)
        }

        /// The pause after `failures` failures (streams reconnecting).
        func backoff(_ failures: Int) async throws {
            do {
                try await retryPolicy.sleep(after: failures)
            } catch {
                throw EtcdError.cancelled
            }
        }

        func makeRequest(
            endpoint: String, path: String, body: Data, stream: Bool, timeout: Duration? = nil,
            authenticated: Bool = true
        ) -> HTTPRequest {
            var headers = [CurlHTTP.Header("Content-Type", "application/json")]
            if authenticated, let token = state.withLock({ $0.token }) {
                headers.append(CurlHTTP.Header("Authorization", token))
            }
            if stream { headers.append(CurlHTTP.Header("Grpc-Metadata-hasleader", "true")) }
            return HTTPRequest(
                method: .post, url: endpoint + path, headers: headers, body: body,
                timeout: stream ? nil : (timeout ?? configuration.requestTimeout),
                connectTimeout: configuration.dialTimeout,
                tls: configuration.tls)
        }

        /// Runs one transfer on the client's libcurl thread; cancelling the task aborts it.
        func perform(_ request: HTTPRequest) async -> TransferOutcome {
            TransferOutcome(await http.performResult(request))
        }

        /// Sends `body` to `path`, moving to the next member and retrying as `retry` allows, and
        /// decodes the answer.
        func call<Body: Encodable, Response: Decodable>(
            _ path: String, _ body: Body, retry: CurlHTTP.Idempotence, timeout: Duration? = nil,
            as type: Response.Type = Response.self
        ) async throws -> Response {
            let data = try encode(body)
            let response = try await send(path, data, retry: retry, timeout: timeout)
            return try decode(type, from: response.body)
        }

        func encode<Body: Encodable>(_ body: Body) throws -> Data {
            do {
                return try StreamingJSONEncoder.encode(body)
            } catch {
                throw EtcdError(code: .invalidConfiguration, message: "cannot encode request: \(error)")
            }
        }

        func decode<Response: Decodable>(_ type: Response.Type, from data: Data) throws -> Response {
            do {
                return try StreamingJSONDecoder.decode(type, from: data)
            } catch {
                throw EtcdError.decoding("\(error)", body: String(decoding: data.prefix(2000), as: UTF8.self))
            }
        }

        /// Every unary call: sent to the preferred member and, as ``retryPolicy`` allows for
        /// `retry`, again to the next one after a failure without an answer or an answer that
        /// another member might not give (``isRetriable(_:)``). An expired auth token is
        /// renewed once, within the attempt.
        func send(_ path: String, _ body: Data, retry: CurlHTTP.Idempotence, timeout: Duration? = nil) async throws -> HTTPResponse {
            let policy = retryPolicy
            var reauthenticated = false
            return try await policy.run(cancelled: { EtcdError.cancelled }) {
                (_: Int) async throws -> CurlHTTP.RetryPolicy.Outcome<HTTPResponse, any Error> in
                while true {
                    if Task.isCancelled { throw EtcdError.cancelled }
                    if configuration.credentials != nil, state.withLock({ $0.token }) == nil {
                        try await authenticate()
                    }
                    let index = currentEndpointIndex
                    let endpoint = configuration.endpoints[index]
                    let request = makeRequest(endpoint: endpoint, path: path, body: body, stream: false, timeout: timeout)
                    switch await http.performResult(request) {
                    case .failure(let failure) where failure.code == .cancelled:
                        throw EtcdError.cancelled
                    case .failure(let failure):
                        var error =
                            failure.code == .timeout ? EtcdError.timeout(failure.message, endpoint: endpoint)
                            : EtcdError.unavailable(failure.message, endpoint: endpoint)
                        error.endpoint = endpoint
                        endpointFailed(index)
                        guard policy.mayRetry(failure, retry) else { return .final(.failure(error)) }
                        logger.debug(
                            "etcd request failed, trying next member",
                            metadata: ["path": "\(path)", "endpoint": "\(endpoint)", "error": "\(failure.message)"])
                        return .retryable(.failure(error))
                    case .success(let response):
                        if response.status == 200 { return .final(.success(response)) }
                        var error = Self.gatewayError(response)
                        error.endpoint = endpoint
                        if error.code == .unauthenticated, configuration.credentials != nil, !reauthenticated {
                            reauthenticated = true
                            state.withLock { $0.token = nil }
                            continue
                        }
                        guard Self.isRetriable(error), retry == .idempotent else { return .final(.failure(error)) }
                        endpointFailed(index)
                        return .retryable(.failure(error))
                    }
                }
            }
        }

        /// Whether another member might serve what this one refused.
        static func isRetriable(_ error: EtcdError) -> Bool {
            if error.code == .unavailable || error.code == .timeout { return true }
            if let status = error.httpStatus, [502, 503, 504].contains(status) { return true }
            if let g = error.grpcCode, g == GRPCStatus.unavailable || g == GRPCStatus.deadlineExceeded { return true }
            return false
        }

        /// Turns a non-200 gateway answer (`{"error","message","code"}`) into an error.
        static func gatewayError(_ response: HTTPResponse) -> EtcdError {
            let text = String(decoding: response.body.prefix(4000), as: UTF8.self)
            guard let wire = try? JSONDecoder().decode(GatewayError.self, from: response.body), let code = wire.code
            else { return EtcdError.http(response.status, body: text) }
            return gatewayError(grpcCode: code, message: wire.message ?? wire.error ?? "", status: response.status, body: text)
        }

        static func gatewayError(grpcCode code: Int, message: String, status: Int?, body: String?) -> EtcdError {
            let mapped: EtcdError.Code
            switch code {
            case GRPCStatus.unavailable: mapped = .unavailable
            case GRPCStatus.deadlineExceeded: mapped = .timeout
            case GRPCStatus.unauthenticated: mapped = .unauthenticated
            // The one NotFound the KV, lease and election calls answer (etcd's rpctypes):
            // "requested lease not found", a write under a lease that expired.
            case GRPCStatus.notFound: mapped = .leaseNotFound
            default: mapped = .grpc
            }
            return EtcdError(code: mapped, message: message, httpStatus: status, body: body, grpcCode: code)
        }

        /// Drops the auth token and fetches a new one (after the gateway said it expired).
        func refreshToken() async throws {
            guard configuration.credentials != nil else { return }
            state.withLock { $0.token = nil }
            try await authenticate()
        }

        private func authenticate() async throws {
            guard let credentials = configuration.credentials else { return }
            struct Request: Encodable { var name: String; var password: String }
            struct Response: Decodable { var token: String? }
            let body = try encode(Request(name: credentials.user, password: credentials.password))
            // Every failure without an answer is retried: authenticating changes nothing.
            try await retryPolicy.run(cancelled: { EtcdError.cancelled }) {
                (_: Int) async throws -> CurlHTTP.RetryPolicy.Outcome<Void, any Error> in
                let index = currentEndpointIndex
                let endpoint = configuration.endpoints[index]
                let request = makeRequest(
                    endpoint: endpoint, path: "/v3/auth/authenticate", body: body, stream: false, authenticated: false)
                switch await perform(request) {
                case .cancelled:
                    throw EtcdError.cancelled
                case .failed(let message, _, let timedOut):
                    endpointFailed(index)
                    let error: EtcdError = timedOut ? .timeout(message, endpoint: endpoint) : .unavailable(message, endpoint: endpoint)
                    return .retryable(.failure(error))
                case .completed(let response):
                    if response.status == 200 {
                        let token = try decode(Response.self, from: response.body).token
                        guard let token, !token.isEmpty else {
                            throw EtcdError(code: .unauthenticated, message: "auth is not enabled on the cluster")
                        }
                        state.withLock { $0.token = token }
                        return .final(.success(()))
                    }
                    var error = Self.gatewayError(response)
                    guard Self.isRetriable(error) else {
                        error = EtcdError(
                            code: .unauthenticated, message: error.message, httpStatus: error.httpStatus,
                            body: error.body, grpcCode: error.grpcCode, endpoint: endpoint)
                        throw error
                    }
                    endpointFailed(index)
                    return .retryable(.failure(error))
                }
            }
        }
    }
}

typealias HTTPRequest = CurlHTTP.Request
typealias HTTPResponse = CurlHTTP.Response

/// How a transfer ended, as the retry loops see it.
enum TransferOutcome: Sendable {
    case completed(HTTPResponse)
    /// No answer. `reachedServer` is false only when the request provably never left (no
    /// connection could be made), so even a non-idempotent request may be sent again.
    case failed(message: String, reachedServer: Bool, timedOut: Bool)
    case cancelled

    init(_ result: Result<HTTPResponse, CurlHTTPError>) {
        switch result {
        case .success(let response):
            self = .completed(response)
        case .failure(let error) where error.code == .cancelled:
            self = .cancelled
        case .failure(let error):
            self = .failed(message: error.message, reachedServer: error.reachedServer, timedOut: error.code == .timeout)
        }
    }
}

/// Counters of a client's transport, for tests and benchmarks.
public struct TransportStatistics: Sendable, Hashable {
    /// Transfers that finished (successfully or not).
    public var transfers: Int
    /// New TCP connections libcurl had to open (the rest reused a pooled connection).
    public var connectionsOpened: Int
}

/// The gateway's error body.
struct GatewayError: Decodable {
    var error: String?
    var message: String?
    var code: Int?
}

