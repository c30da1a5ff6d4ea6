import GPUPlaneService
import GPUPlaneSystem
import HTTPTypes
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import StreamingJSON

/// A daemon's own HTTP(S) listener: `GET /metrics` (``MetricsExporter``), `GET /healthz`, and
/// whatever routes the daemon adds through ``Route``. The node-agent serves container logs on
/// it; the scheduler only its metrics. Built on HummingbirdCore without a router or Foundation,
/// so the node-agent's footprint stays small.
///
/// Run it as a `Service` under the daemon's `ServiceGroup`: a graceful shutdown stops it.
public struct DaemonListener: Service {
    /// One request as a route sees it.
    public struct Request: Sendable {
        /// The method.
        public var method: HTTPRequest.Method
        /// The path without the query, e.g. `/v1/logs/acme/api-0`.
        public var path: String
        /// The request target exactly as sent: path and query (what signatures cover).
        public var target: String
        /// The query's parameters (the last value of each name), percent-decoded.
        public var query: [String: String]
        /// The headers.
        public var headers: HTTPFields
    }

    /// An answer: a status, its content type and a body written as it comes.
    public struct Answer: Sendable {
        /// The status.
        public var status: HTTPResponse.Status
        /// The `Content-Type`.
        public var contentType: String
        /// The body (HummingbirdCore's: a closure that writes chunks as they come).
        public var body: ResponseBody

        /// An answer.
        public init(status: HTTPResponse.Status, contentType: String, body: ResponseBody) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }

        /// An answer with `text` as its whole body.
        public static func text(_ status: HTTPResponse.Status, _ text: String, contentType: String = "text/plain; charset=utf-8") -> Answer {
            Answer(status: status, contentType: contentType, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }

        /// An error answer: `{"error":{"code":…,"message":…}}` like the api-server's.
        public static func error(_ status: HTTPResponse.Status, code: String, _ message: String) -> Answer {
            struct Body: Encodable {
                struct Detail: Encodable { var code, message: String }
                var error: Detail
            }
            let bytes = (try? StreamingJSONEncoder.encodeBytes(Body(error: .init(code: code, message: message)))) ?? Array("{}".utf8)
            return Answer(status: status, contentType: "application/json", body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes + [0x0A])))
        }
    }

    /// A route: answers the requests it takes, nil for the rest.
    public typealias Route = @Sendable (Request) async -> Answer?

    /// The configuration keys of a daemon's listener; `defaultPort` 0 means off unless set.
    public static func keys(defaultAddress: String, defaultPort: Int, what: String) -> [ConfigurationKey] {
        [
            ConfigurationKey("listen", .string, default: defaultAddress, help: "address \(what) listens on"),
            ConfigurationKey("port", .int, default: String(defaultPort), help: "port \(what) listens on (0: none)"),
        ] + ServerTLS.keys
    }

    private let host: String
    private let port: Int
    private let tls: ServerTLS?
    private let routes: [Route]
    private let logger: Logger
    private let onBound: @Sendable (Int) -> Void

    /// A listener on `host:port` (0: a free port, reported to `onBound`), HTTPS when `tls` is
    /// given, with `routes` tried in order after `/metrics` and `/healthz`.
    public init(
        host: String, port: Int, tls: ServerTLS?, routes: [Route] = [], logger: Logger,
        onBound: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.routes = routes
        self.logger = logger
        self.onBound = onBound
    }

    /// Serves until a graceful shutdown.
    public func run() async throws {
        let routes = self.routes
        let logger = self.logger
        let responder: HTTPChannelHandler.Responder = { request, responseWriter, _ in
            let answer = await Self.answer(request, routes: routes)
            var head = HTTPResponse(status: answer.status)
            head.headerFields[.contentType] = answer.contentType
            head.headerFields[.cacheControl] = "no-store"
            do {
                try await responseWriter.write(response: head, body: answer.body)
            } catch {
                logger.debug("a listener answer ended early", metadata: ["error": "\(error)"])
                throw error
            }
        }
        let builder: HTTPServerBuilder = try tls.map { try .tls(.http1(), tlsConfiguration: $0.configuration) } ?? .http1()
        let group = MultiThreadedEventLoopGroup.singleton
        let bound = onBound
        let started = Locked(false)
        let server = try builder.buildServer(
            configuration: ServerConfiguration(address: .hostname(host, port: port)), eventLoopGroup: group, logger: logger,
            responder: responder,
            onServerRunning: { channel in
                started.withLock { $0 = true }
                if let port = channel.localAddress?.port { bound(port) }
            })
        do {
            try await server.run()
        } catch where !started.withLock({ $0 }) {
            // The port is taken or the address is not this host's: the daemon's real work goes
            // on without its listener, and says so.
            logger.error(
                "the listener could not start; the daemon runs without it (no /metrics, no container logs): set listen and port",
                metadata: ["address": "\(host):\(port)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
    }

    static func answer(_ request: HummingbirdCore.Request, routes: [Route]) async -> Answer {
        let target = request.head.path ?? "/"
        let path = String(target.prefix { $0 != "?" })
        var query: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { query[String(name)] = String(value) }
        let request = Request(method: request.method, path: path, target: target, query: query, headers: request.headers)
        switch (request.method, path) {
        case (.get, "/metrics"):
            return Answer(
                status: .ok, contentType: MetricsExporter.contentType, body: ResponseBody(byteBuffer: ByteBuffer(bytes: MetricsExporter.renderBytes())))
        case (.get, "/healthz"):
            return .text(.ok, "ok\n")
        default:
            for route in routes {
                if let answer = await route(request) { return answer }
            }
            return .error(.notFound, code: "not_found", "no route \(request.method) \(path) on this listener")
        }
    }
}
