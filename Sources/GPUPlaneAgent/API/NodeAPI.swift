import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import Logging
import GPUPlaneSystem

/// The node-agent's client of the api-server: the only service the agent speaks to, always
/// with its node token.
///
/// ```swift
/// let api = NodeAPI.Client(.init(baseURL: "http://10.0.0.1:8080", token: token))
/// try await api.register(NodeRegistration(name: "gpu-7", labels: ["gpu-mode": "dedicated"], gpus: gpus))
/// for await change in api.workloadChanges(node: "gpu-7") { … }
/// ```
public enum NodeAPI {}

extension NodeAPI {
    /// How to reach the api-server.
    public struct Configuration: Sendable {
        /// The api-servers' base URLs, e.g. `http://10.0.0.1:8080` (no trailing path), in the
        /// order the client tries them: it stays with one until a call to it gets no answer (or
        /// 502/503/504), then moves to the next. The first is the client's own: it goes back to
        /// it once it answers again (``returnAfter``). ``ownFirst(_:node:)`` spreads a fleet.
        public var baseURLs: [String]
        /// The first api-server's base URL: the client's own.
        public var baseURL: String { baseURLs[0] }
        /// The node token, sent as `Authorization: Bearer …`.
        public var token: String
        /// The deadline of one unary call.
        public var requestTimeout: Duration
        /// The deadline of connecting.
        public var connectTimeout: Duration
        /// How many times an idempotent call is sent again after no answer or 502/503/504.
        public var maxRetries: Int
        /// The first pause between retries; it doubles each time.
        public var retryBackoff: Duration
        /// ``maxRetries`` and ``retryBackoff`` as ``CurlHTTP``'s retry policy: the pause
        /// doubles at most five times, each drawn from half to all of it (thousands of agents
        /// that lost the same api-server at once come back spread, not in waves); 502, 503 and
        /// 504 are retried, not before the answer's `Retry-After`.
        public var retryPolicy: CurlHTTP.RetryPolicy {
            .doubling(retries: maxRetries, firstDelay: retryBackoff, jitter: Self.retryJitter)
        }
        /// The factor each retry pause is multiplied by, drawn at random.
        public static let retryJitter: ClosedRange<Double> = 0.5...1.0
        /// A watch that sends nothing (not even a bookmark) for this long is dropped and
        /// resumed from its last resourceVersion.
        public var watchIdleTimeout: Duration
        /// The longest pause before a watch reconnects (the pause doubles from
        /// ``retryBackoff`` while reconnects fail).
        public var watchMaxBackoff: Duration
        /// How long after leaving its own api-server (the first of ``baseURLs``) the client
        /// first asks it `/healthz` (after half to all of it, drawn at random so a fleet does
        /// not ask in step); the client goes back to it when it answers 200, and asks again
        /// after twice as long while it does not, up to ``returnMaxDelay``. A client that has
        /// to leave again soon after going back (within twice the wait it came back after)
        /// waits twice as long the next time. Nil: the client stays wherever it moved.
        public var returnAfter: Duration?
        /// The longest wait between two of ``returnAfter``'s questions.
        public static let returnMaxDelay: Duration = .seconds(300)
        /// TLS files, for an `https` base URL.
        public var tls: CurlHTTP.TLS?
        /// Where the client logs.
        public var logger: Logger

        /// Makes a configuration: `baseURL` first, then `otherURLs` (other api-servers of the
        /// same control plane) when it stops answering.
        public init(
            baseURL: String, token: String, requestTimeout: Duration = .seconds(5),
            connectTimeout: Duration = .seconds(2), maxRetries: Int = 3, retryBackoff: Duration = .milliseconds(200),
            watchIdleTimeout: Duration = .seconds(45), watchMaxBackoff: Duration = .seconds(5),
            tls: CurlHTTP.TLS? = nil, logger: Logger = Logger(label: "gpuplane.agent.api"), otherURLs: [String] = [],
            returnAfter: Duration? = .seconds(30)
        ) {
            self.baseURLs = ([baseURL] + otherURLs).map { url in
                var base = url
                while base.hasSuffix("/") { base.removeLast() }
                return base
            }
            self.token = token
            self.requestTimeout = requestTimeout
            self.connectTimeout = connectTimeout
            self.maxRetries = maxRetries
            self.retryBackoff = retryBackoff
            self.watchIdleTimeout = watchIdleTimeout
            self.watchMaxBackoff = watchMaxBackoff
            self.tls = tls
            self.logger = logger
            self.returnAfter = returnAfter
        }

        /// `urls` turned so that `node`'s own api-server comes first and the others follow in
        /// their order: a stable hash of the node's name (FNV-1a, the same on every host and
        /// run) picks it, so the agents of a fleet that all list the same api-servers spread
        /// evenly over them, whatever the order of the list.
        public static func ownFirst(_ urls: [String], node: String) -> [String] {
            guard urls.count > 1 else { return urls }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in node.utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
            let first = Int(hash % UInt64(urls.count))
            return Array(urls[first...] + urls[..<first])
        }
    }

    /// An api-server client. Thread-safe; share one per process.
    ///
    /// Every unary call has a deadline (``Configuration/requestTimeout``) and runs on the
    /// client's own libcurl thread, never blocking Swift's cooperative pool. Idempotent calls
    /// (every call of this client: registration refreshes, heartbeats renew, statuses replace)
    /// are retried with doubling pauses. With several api-servers (``Configuration/baseURLs``)
    /// every call and watch goes to the current one; a call that it leaves unanswered after its
    /// retries (or answers 502/503/504) moves the client to the next and is sent there, and a
    /// watch that fails reconnects to the next. Every method throws ``NodeAPIError``.
    public final class Client: Sendable {
        /// The configuration this client was made with.
        public let configuration: Configuration
        let http: CurlHTTP.Client
        let logger: Logger
        private let ownsHTTP: Bool
        /// Where calls go, and the way back to the client's own api-server.
        private let place = Locked(Place())

        /// Which api-server calls go to, and the way back to the first (the client's own).
        private struct Place {
            /// The index in ``Configuration/baseURLs`` of the api-server calls go to.
            var current = 0
            /// Asks the own api-server whether it answers, while the client is elsewhere.
            var returning: Task<Void, Never>?
            /// When the client last went back, and after how long a wait.
            var returned: (at: ContinuousClock.Instant, after: Duration)?
        }

        /// Makes a client. Nothing is sent until the first call. Requests go through `http`
        /// when given (the caller keeps it and shuts it down), else through a transport of the
        /// client's own.
        public init(_ configuration: Configuration, http: CurlHTTP.Client? = nil) {
            self.configuration = configuration
            self.logger = configuration.logger
            self.http = http ?? CurlHTTP.Client(name: "agent-api-curl", maxConnections: 4)
            self.ownsHTTP = http == nil
        }

        deinit {
            place.withLock { $0.returning?.cancel() }
            if ownsHTTP { http.shutdown() }
        }

        /// Stops the client's own transport; later calls fail with
        /// ``NodeAPIError/Code/cancelled``. A shared transport is left to its owner.
        public func shutdown() {
            place.withLock { $0.returning?.cancel() }
            if ownsHTTP { http.shutdown() }
        }

        // MARK: Requests

        /// The index of the api-server calls go to now.
        var currentEndpoint: Int { place.withLock { $0.current } }

        /// The base URL calls go to now.
        public var currentBaseURL: String { configuration.baseURLs[currentEndpoint] }

        /// Moves to the api-server after `index`, unless another call moved already. Leaving
        /// the client's own api-server starts asking it whether it answers again.
        func endpointFailed(_ index: Int) {
            let count = configuration.baseURLs.count
            guard count > 1 else { return }
            let moved = place.withLock { place -> Bool in
                guard place.current == index else { return false }
                place.current = (index + 1) % count
                if place.current != 0, place.returning == nil, let base = configuration.returnAfter {
                    // Back soon after the last return and leaving again: wait twice as long.
                    let first =
                        if let last = place.returned, ContinuousClock.now - last.at < last.after * 2 {
                            max(base, min(last.after * 2, Configuration.returnMaxDelay))
                        } else {
                            base
                        }
                    place.returning = returning(firstAfter: first)
                }
                return true
            }
            if moved {
                logger.notice(
                    "api-server not answering; moving to the next",
                    metadata: ["from": "\(configuration.baseURLs[index])", "to": "\(configuration.baseURLs[(index + 1) % count])"])
            }
        }

        /// Asks the own api-server whether it answers (``returnHome(waited:)``) after `first`,
        /// then after doubling waits, each drawn from half to all of it, until the asking is over.
        private func returning(firstAfter first: Duration) -> Task<Void, Never> {
            Task { [weak self] in
                var wait = first
                var waited = Duration.zero
                while !Task.isCancelled {
                    let pause = wait * Double.random(in: Configuration.retryJitter)
                    try? await Task.sleep(for: pause)
                    waited += pause
                    // Held only while asking: a client dropped meanwhile stops this.
                    guard let self, !Task.isCancelled, await !self.returnHome(waited: waited) else { return }
                    wait = min(wait * 2, Configuration.returnMaxDelay)
                }
            }
        }

        /// Asks the own api-server `/healthz` and moves calls back to it when it answers 200
        /// (after `waited` away). True when the asking is over: back, or back anyway (the
        /// client's moves came round to it).
        private func returnHome(waited: Duration) async -> Bool {
            let away = place.withLock { place -> Bool in
                guard place.current != 0 else {
                    place.returning = nil
                    return false
                }
                return true
            }
            guard away else { return true }
            let probe = CurlHTTP.Request(
                method: .get, url: configuration.baseURLs[0] + "/healthz", headers: [CurlHTTP.Header("Accept", "application/json")],
                body: nil, timeout: min(configuration.requestTimeout, .seconds(2)), connectTimeout: configuration.connectTimeout,
                tls: configuration.tls)
            guard case .success(let answer) = await http.performResult(probe), answer.status == 200 else { return false }
            // One step with the move, so a failure right after it starts asking anew.
            let from = place.withLock { place -> Int? in
                place.returning = nil
                guard place.current != 0 else { return nil }
                defer { place.current = 0 }
                place.returned = (ContinuousClock.now, waited)
                return place.current
            }
            if let from {
                logger.notice(
                    "own api-server answers again; moving back to it",
                    metadata: ["from": "\(configuration.baseURLs[from])", "to": "\(configuration.baseURLs[0])"])
            }
            return true
        }

        /// A request to the api-server at `endpoint` (the current one when nil). One with a
        /// `timeout` tells the api-server how long it waits (`Gpuplane-Timeout-Ms`), so a copy
        /// the client gave up on is not worked on there (the api-server's `RequestDeadline`).
        func request(_ method: CurlHTTP.Method, _ pathAndQuery: String, body: Data?, timeout: Duration?, endpoint: Int? = nil) -> CurlHTTP.Request {
            var headers = [CurlHTTP.Header("Authorization", "Bearer \(configuration.token)"), CurlHTTP.Header("Accept", "application/json")]
            if body != nil { headers.append(CurlHTTP.Header("Content-Type", "application/json")) }
            if let timeout { headers.append(CurlHTTP.Header(RequestTimeoutHeader.name, RequestTimeoutHeader.value(timeout))) }
            return CurlHTTP.Request(
                method: method, url: configuration.baseURLs[endpoint ?? currentEndpoint] + pathAndQuery, headers: headers, body: body,
                timeout: timeout, connectTimeout: configuration.connectTimeout, tls: configuration.tls)
        }

        /// Sends one idempotent call, again as ``Configuration/retryPolicy`` allows (after no
        /// answer or 502/503/504), and returns a 2xx answer; any other answer throws. When the
        /// retries are spent, the call goes to the next api-server (each one once).
        func send(_ method: CurlHTTP.Method, _ path: String, body: Data? = nil) async throws(NodeAPIError) -> CurlHTTP.Response {
            var failure: NodeAPIError
            var tried = 0
            repeat {
                let endpoint = currentEndpoint
                let request = request(method, path, body: body, timeout: configuration.requestTimeout, endpoint: endpoint)
                let result = await http.performResult(request, retrying: configuration.retryPolicy, idempotence: .idempotent) {
                    attempt, outcome in
                    let failure = Self.failure(outcome, path: path)
                    logger.debug(
                        "api-server call failed; retrying", metadata: ["path": "\(path)", "attempt": "\(attempt + 1)", "error": "\(failure)"])
                }
                if case .success(let response) = result, response.isSuccess { return response }
                failure = Self.failure(result, path: path)
                guard failure.code == .unavailable || failure.code == .timeout else { throw failure }
                endpointFailed(endpoint)
                tried += 1
            } while tried < configuration.baseURLs.count
            throw failure
        }

        /// ``send(_:_:body:)`` decoding the answer as `type`.
        func call<T: Decodable>(_ method: CurlHTTP.Method, _ path: String, body: Data? = nil, as type: T.Type) async throws(NodeAPIError) -> T {
            let response = try await send(method, path, body: body)
            return try Self.decode(type, response.body, status: response.status, path: path)
        }

        static func decode<T: Decodable>(_ type: T.Type, _ data: Data, status: Int?, path: String) throws(NodeAPIError) -> T {
            do {
                return try GPUPlaneJSON.decode(type, from: data)
            } catch {
                throw NodeAPIError(
                    code: .decoding, message: "\(error)", httpStatus: status, body: String(decoding: data.prefix(2000), as: UTF8.self),
                    path: path)
            }
        }

        static func encode<T: Encodable>(_ value: T, path: String) throws(NodeAPIError) -> Data {
            do {
                return try GPUPlaneJSON.encode(value)
            } catch {
                throw NodeAPIError(code: .encoding, message: "\(error)", path: path)
            }
        }

        /// The error for a non-2xx answer, with the api-server's message.
        static func failure(_ response: CurlHTTP.Response, path: String) -> NodeAPIError {
            let code: NodeAPIError.Code =
                switch response.status {
                case 401: .unauthorized
                case 403: .forbidden
                case 404: .notFound
                case 409: .conflict
                case 410: .gone
                case 502, 503, 504: .unavailable
                default: .rejected
                }
            let wire = try? JSONDecoder().decode(WireAPIError.self, from: response.body)
            return NodeAPIError(
                code: code, message: wire?.error.message ?? "HTTP \(response.status)", httpStatus: response.status,
                body: String(decoding: response.body.prefix(2000), as: UTF8.self), path: path)
        }

        /// The error for an exchange that did not succeed: a non-2xx answer or none.
        static func failure(_ outcome: Result<CurlHTTP.Response, CurlHTTPError>, path: String) -> NodeAPIError {
            switch outcome {
            case .success(let response): failure(response, path: path)
            case .failure(let error): transportError(error, path: path)
            }
        }

        static func transportError(_ error: CurlHTTPError, path: String) -> NodeAPIError {
            let code: NodeAPIError.Code =
                switch error.code {
                case .cancelled, .shutDown: .cancelled
                case .timeout: .timeout
                default: .unavailable
                }
            return NodeAPIError(code: code, message: error.message, path: path)
        }

        /// A path segment made safe for a URL.
        static func segment(_ text: String) -> String {
            text.percentEncoded()
        }
    }
}

/// The api-server's error body: `{"error": {"code", "message", …}}`.
struct WireAPIError: Decodable {
    struct Body: Decodable {
        var code: String?
        var message: String?
    }
    var error: Body
}
