import CurlHTTP
import Foundation

/// The api-server over HTTP, for the CLI: every call has a timeout; reads are retried when
/// the server could not be reached, writes never (they may have landed).
public struct APIClient: Sendable {
    /// The base URL.
    public let base: String
    /// The bearer token, if any.
    public let token: String?
    /// PEM CA to verify an `https://` server with; nil: the system's CAs.
    public let caFile: String?
    private static let http = CurlHTTP.Client(name: "gpuplane-cli", maxConnections: 4)
    /// Three attempts, 200 ms then 400 ms apart; which requests may be sent again is decided
    /// per call (reads only when the server was not reached, writes never).
    static let retryPolicy = CurlHTTP.RetryPolicy.doubling(retries: 2, firstDelay: .milliseconds(200))

    /// One answer: status and body.
    public struct Answer: Sendable {
        /// The HTTP status.
        public var status: Int
        /// The body.
        public var body: Data

        /// The body as JSON (`.null` when it is not JSON).
        public var value: JSONValue { JSONValue.parse(body) ?? .null }
        /// The API's error (`{"error": {...}}`; `.null` when the body is not one).
        public var error: JSONValue { value["error"] }
    }

    /// Makes a client of `base` with `token`, verifying an `https://` server with `caFile`.
    public init(base: String, token: String?, caFile: String? = nil) {
        self.base = base
        self.token = token
        self.caFile = caFile
    }

    /// Sends one request; `contentType` goes with a body.
    /// - Throws: ``CLIError`` when no answer came.
    public func call(_ method: CurlHTTP.Method, _ path: String, body: Data? = nil, contentType: String = "application/json") async throws -> Answer {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        if body != nil { headers.append(CurlHTTP.Header("Content-Type", contentType)) }
        let request = CurlHTTP.Request(
            method: method, url: base + path, headers: headers, body: body, timeout: .seconds(30), tls: caFile.map { CurlHTTP.TLS(caFile: $0) })
        let idempotence: CurlHTTP.Idempotence = method == .get ? .onlyIfNotSent : .never
        let policy = Self.retryPolicy
        let response = try await policy.run(cancelled: { CancellationError() }) {
            (_: Int) async throws -> CurlHTTP.RetryPolicy.Outcome<CurlHTTP.Response, any Error> in
            switch await Self.http.performResult(request) {
            case .success(let response):
                return .final(.success(response))
            case .failure(let error):
                let failure = CLIError(
                    "cannot reach the api-server at \(base): \(error.message); check --server or $GPUPLANE_SERVER", isTransient: true)
                return policy.mayRetry(error, idempotence) ? .retryable(.failure(failure)) : .final(.failure(failure))
            }
        }
        return Answer(status: response.status, body: response.body)
    }

    /// Starts a `GET` whose body lasts (logs `-f`, watches): returns when the answer's head is
    /// in; a non-2xx answer is read whole and thrown. No overall deadline; the connection has 10 s.
    /// - Throws: ``CLIError`` when no answer came or the status is not 2xx.
    public func stream(_ path: String) async throws -> AsyncThrowingStream<Data, any Error> {
        var headers: [CurlHTTP.Header] = []
        if let token { headers.append(CurlHTTP.Header("Authorization", "Bearer \(token)")) }
        let request = CurlHTTP.Request(
            method: .get, url: base + path, headers: headers, timeout: nil, connectTimeout: .seconds(10),
            tls: caFile.map { CurlHTTP.TLS(caFile: $0) })
        let answer: CurlHTTP.StreamedResponse
        do {
            answer = try await Self.http.exchange(request)
        } catch {
            throw CLIError("cannot reach the api-server at \(base): \(error.message); check --server or $GPUPLANE_SERVER", isTransient: true)
        }
        guard (200..<300).contains(answer.status) else {
            var body = Data()
            for try await chunk in answer.body where body.count < 65_536 { body.append(chunk) }
            throw CLIError(answer: Answer(status: answer.status, body: body))
        }
        return answer.body
    }

    /// Sends one request and returns its JSON.
    /// - Throws: ``CLIError`` with the API's message when the status is not 2xx.
    public func json(_ method: CurlHTTP.Method, _ path: String, body: Data? = nil) async throws -> JSONValue {
        let answer = try await call(method, path, body: body)
        guard (200..<300).contains(answer.status) else { throw CLIError(answer: answer) }
        return answer.value
    }
}

/// A failure the CLI reports in one line and exits 1 on.
public struct CLIError: Error, CustomStringConvertible {
    /// The line printed.
    public let description: String
    /// Whether the same request may succeed when sent again: no answer came (the api-server
    /// unreachable), or it answered 503 (unavailable for now).
    public var isTransient = false

    /// An error saying `description`.
    public init(_ description: String, isTransient: Bool = false) {
        self.description = description
        self.isTransient = isTransient
    }

    /// The API's error for an answer: `error: <message> (HTTP <status>, field <field>)`.
    public init(answer: APIClient.Answer) {
        let error = answer.error
        let message = error["message"].string ?? String(decoding: answer.body.prefix(300), as: UTF8.self)
        var detail = "HTTP \(answer.status)"
        if let field = error["field"].string { detail += ", field \(field)" }
        if answer.status == 401 { detail += "; set --token, --token-file or $GPUPLANE_TOKEN" }
        description = "error: \(message) (\(detail))"
        isTransient = answer.status == 503
    }
}
