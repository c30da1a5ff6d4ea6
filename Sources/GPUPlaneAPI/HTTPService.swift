import Foundation
import GPUPlaneSystem
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The api-server's HTTP server as a service: Hummingbird's server, connections and router, run
/// with less kept in each connection's task than `Hummingbird.Application` keeps.
///
/// Swift's task allocator keeps every slab a task's async frames ever needed until the task
/// ends, and Hummingbird runs a connection in one task: a node-agent's connections (its watch
/// and its calls) live for days. `Application` answers each request in that task through a
/// closure that makes a request logger, enters `withLogger` (a task-local) and calls the
/// responder, and those frames' slabs (about 2 KB, heaptrack) stayed with every connection that
/// had served a request; the router and the routes below them, some 45 KB at their deepest,
/// stayed too until they moved to a child task. Here the connection's task
/// hands each request to a child task, which makes the context and answers it, and then writes
/// the answer (a watch's streamed body is written from the connection's task, as before).
/// Every answer carries `Date` and `Server`, as `Application`'s did.
struct HTTPService<Responder: HTTPResponder>: Service where Responder.Context == APIContext {
    let responder: Responder
    let server: HTTPServerBuilder
    let configuration: ServerConfiguration
    let onServerRunning: @Sendable (any Channel) async -> Void
    let logger: Logger

    func run() async throws {
        let responder = self.responder
        let logger = self.logger
        let name = configuration.serverName
        let server = try self.server.buildServer(
            configuration: configuration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
        ) { request, writer, channel in
            var response = try await Self.respond(to: request, channel: channel, responder: responder, logger: logger)
            response.headers[.date] = HTTPDate.now()
            if let name { response.headers[.server] = name }
            do {
                try await writer.write(response: response.head, body: response.body)
            } catch is HTTPParserError {
                // The connection's loop answers an HTTPParserError with a 400; one thrown while
                // this answer is written must not get a second answer after it.
                throw ResponseWriteError()
            }
        } onServerRunning: { channel in
            await onServerRunning(channel)
        }
        try await server.run()
    }

    /// The responder's answer to `request`, made in a child task: its frames (the context,
    /// the router, every middleware and route, the store's calls) are freed when it answers.
    /// A group of one, not `async let`: the `async let` kept its child's storage in the
    /// caller's frame (1,216 bytes a request against 656). (An unstructured task awaited under
    /// a cancellation handler kept as much of the connection's task: one slab.)
    private static func respond(to request: Request, channel: any Channel, responder: Responder, logger: Logger) async throws -> Response {
        try await withThrowingTaskGroup(of: Response.self) { group in
            group.addTask {
                let context = APIContext(source: .init(channel: channel, logger: logger))
                do {
                    return try await responder.respond(to: request, context: context)
                } catch let error as HTTPParserError {
                    throw error
                } catch {
                    // Routes answer their errors through ErrorMiddleware; what still gets here
                    // (a middleware's own failure) is a bare 500, as Hummingbird answers it.
                    logger.debug("unanswered error", metadata: ["error.type": "\(type(of: error))"])
                    return Response(status: .internalServerError, body: .init())
                }
            }
            // One child, always added: it answers or throws.
            guard let response = try await group.next() else { throw CancellationError() }
            return response
        }
    }
}

/// An answer's head or body could not be written because the request could not be parsed:
/// the connection closes without a second answer.
struct ResponseWriteError: Error {}

/// The `Date` header's value (RFC 9110's IMF-fixdate), made once a second and shared.
enum HTTPDate {
    private static let cache = Locked<(second: Int, text: String)>((-1, ""))

    /// Now, as `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func now() -> String {
        var seconds = time(nil)
        return cache.withLock { cache in
            if cache.second == seconds { return cache.text }
            var parts = tm()
            gmtime_r(&seconds, &parts)
            cache = (seconds, format(parts))
            return cache.text
        }
    }

    /// `parts` (UTC) as an IMF-fixdate.
    static func format(_ parts: tm) -> String {
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let day = days[Int(parts.tm_wday) % 7]
        let month = months[Int(parts.tm_mon) % 12]
        return "\(day), \(two(parts.tm_mday)) \(month) \(parts.tm_year + 1900) \(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
