#if canImport(Glibc)
import Glibc
#endif
import GPUPlaneSystem
import Hummingbird
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// When a node's heartbeat reached this host, which can be seconds before this api-server reads
/// it: a burst of connections (thousands of nodes moving here from an api-server that died)
/// waits in the listener's accept queue and then in the event loops and the task pool, and a
/// beat read late is not a node's silence (``HeartbeatTracker`` judges by when beats arrived,
/// and allows for how late it reads them).
///
/// ``BeatArrivalHandler`` stamps the instant on each heartbeat's request head as the event loop
/// reads it, from the kernel's count of how long ago the connection's last bytes arrived
/// (`TCP_INFO`'s `tcpi_last_data_recv`, in milliseconds): an agent sends one beat at a time
/// and waits for its answer, so those bytes are the beat's. The stamp travels in a request
/// field only this api-server's own pipeline writes: the one a client sends is dropped.
///
/// A request that says how long its client waits (``RequestDeadline``) is stamped the same way:
/// its deadline counts from when it reached this host.
enum BeatArrival {
    /// The request field carrying the stamp: nanoseconds since ``origin``.
    static let field = HTTPField.Name.literal("gpuplane-arrived-ns")
    /// The instant the stamps count from (the first use in this process).
    static let origin = ContinuousClock.now

    /// The instant `request` (a heartbeat, or one with a deadline) reached this host, when its
    /// head was stamped.
    static func instant(of request: Request) -> ContinuousClock.Instant? {
        guard let text = request.headers[field], let nanoseconds = Int64(text) else { return nil }
        return origin + .nanoseconds(nanoseconds)
    }

    /// Whether `head` is a node's heartbeat (``NodeRoutes/isHeartbeat(method:path:)``).
    static func isHeartbeat(_ head: HTTPRequest) -> Bool {
        guard let path = head.path else { return false }
        return NodeRoutes.isHeartbeat(method: head.method, path: path.prefix { $0 != "?" })
    }

    /// The stamp for bytes that arrived `waited` before now.
    static func stamp(waited: Duration) -> String {
        String((ContinuousClock.now - waited - origin).wholeNanoseconds)
    }
}

/// Sits after the HTTP decoder of every connection: stamps the head of each heartbeat, and of
/// each request with a ``RequestDeadline``, with when its bytes reached this host
/// (``BeatArrival``), and drops the field from any other request.
final class BeatArrivalHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let stamped = BeatArrival.isHeartbeat(head) || head.headerFields[RequestDeadline.header] != nil
        guard stamped || head.headerFields[BeatArrival.field] != nil else {
            context.fireChannelRead(data)
            return
        }
        head.headerFields[BeatArrival.field] = nil
        if stamped, let waited = Self.sinceLastBytes(context.channel) {
            head.headerFields[BeatArrival.field] = BeatArrival.stamp(waited: waited)
        }
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    /// How long ago the last bytes reached the connection's socket, by the kernel; nil where
    /// it does not say (not TCP, not Linux).
    static func sinceLastBytes(_ channel: any Channel) -> Duration? {
        #if os(Linux)
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        var since: Duration?
        // On the channel's own event loop the option is read at once and the future is
        // complete when it returns: the callback runs before `whenSuccess` returns.
        provider.getTCPInfo().assumeIsolated().whenSuccess { info in
            since = .milliseconds(Int64(info.tcpi_last_data_recv))
        }
        return since
        #else
        return nil
        #endif
    }
}

extension HTTPField.Name {
    /// The field name `name`, a constant of this code's own (letters, digits and `-`, always
    /// valid): what HTTPTypes' failable initialiser makes of it.
    static func literal(_ name: String) -> HTTPField.Name {
        guard let field = HTTPField.Name(name) else { preconditionFailure("'\(name)' is not an HTTP field name") }
        return field
    }
}
