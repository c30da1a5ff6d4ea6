import GPUPlaneSystem
import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// How long a client may take, and how many connections one address may hold, before the
/// api-server closes on it. Without these, sockets that send a request line and never the
/// blank line after the headers (slowloris) would pile up until the process ran out of file
/// descriptors and answered no one, `/healthz` included.
public struct ConnectionLimits: Sendable, Hashable {
    /// From a new connection to its first complete request head.
    public var headerTimeout: Duration
    /// The longest pause between two parts of a request body.
    public var bodyTimeout: Duration
    /// From the end of a response to the next complete request head on a kept-alive
    /// connection.
    public var keepAliveTimeout: Duration
    /// Open connections one remote address may hold at once; 0 for no limit. Long watches
    /// count, so this sits well above what one node-agent or CLI opens.
    public var maxConnectionsPerSource: Int

    /// Makes limits.
    public init(
        headerTimeout: Duration = .seconds(10), bodyTimeout: Duration = .seconds(30),
        keepAliveTimeout: Duration = .seconds(60), maxConnectionsPerSource: Int = 512
    ) {
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.keepAliveTimeout = keepAliveTimeout
        self.maxConnectionsPerSource = maxConnectionsPerSource
    }
}

/// Open connections per remote address, shared by every connection of one server.
final class SourceConnectionCounter: Sendable {
    private let counts = Locked([String: Int]())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Counts a new connection from `source`; false (and not counted) when the source holds
    /// its limit already.
    func admit(_ source: String) -> Bool {
        counts.withLock { counts in
            let current = counts[source, default: 0]
            if limit > 0 && current >= limit { return false }
            counts[source] = current + 1
            return true
        }
    }

    /// Forgets a connection ``admit(_:)`` counted.
    func release(_ source: String) {
        counts.withLock { counts in
            let left = (counts[source] ?? 1) - 1
            counts[source] = left > 0 ? left : nil
        }
    }

    /// Connections held by `source` now.
    func count(_ source: String) -> Int { counts.withLock { $0[source] ?? 0 } }
}

/// How an api-server's connections size the buffers they read into: first 512 bytes, at most
/// 64 KB. NIO keeps a connection's receive buffer for the connection's life and reuses it, so
/// its first size is paid by every idle connection: NIO's default of 2 KB was about an eighth
/// of what an idle keep-alive connection cost (heaptrack; docs/benchmarks.md, "Less kept a
/// connection"). A request head (a heartbeat's, a watch's) fits in 512 bytes; a larger
/// request fills the buffer, and the allocator doubles the next one, as it would from 2 KB.
let connectionReceiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)

/// Sits after the HTTP decoder of every connection: closes a connection whose request head
/// (or body, or next request) does not arrive in time, and one from an address that holds
/// too many already. A response being written (a watch, a streamed completion) has no limit.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let limits: ConnectionLimits
    private let counter: SourceConnectionCounter
    private var source: String?
    private var started = false
    /// Whether this connection was refused (its address holds its limit): closed as soon as
    /// the channel can be, which inside the pipeline's set-up it may not be yet.
    private var refused = false
    /// When the connection is closed unless it is armed again or disarmed first; nil: no limit.
    private var deadline: NIODeadline?
    /// The one scheduled check, and when it fires. Arming for a later deadline leaves it be
    /// (when it fires it looks again at ``deadline``), so a busy keep-alive connection
    /// schedules about one check per timeout instead of two timers and two cancellations per
    /// request: a heartbeat every second on each of thousands of connections.
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    /// A request whose head arrived and whose end has not.
    private var readingRequest = false
    /// Requests read whose response has not ended.
    private var responsesOwed = 0

    init(limits: ConnectionLimits, counter: SourceConnectionCounter) {
        self.limits = limits
        self.counter = counter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Each connection keeps the buffer its reads go into for its whole life (NIO pools it),
        // sized by this allocator's first guess: 2 KB by default, 512 bytes here.
        try? context.channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: connectionReceiveAllocator)
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        if refused {
            // Closed on the event loop's next turn: a close requested while the connection is
            // being accepted is carried out only when the loop next wakes, which for an idle
            // loop may be seconds away.
            context.eventLoop.assumeIsolated().execute { context.close(promise: nil) }
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused {
            context.close(promise: nil)
            return
        }
        switch unwrapInboundIn(data) {
        case .head:
            readingRequest = true
            arm(context, after: limits.bodyTimeout)
        case .body:
            arm(context, after: limits.bodyTimeout)
        case .end:
            readingRequest = false
            responsesOwed += 1
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            responsesOwed = max(responsesOwed - 1, 0)
            if responsesOwed == 0 && !readingRequest { arm(context, after: limits.keepAliveTimeout) }
        }
        context.write(data, promise: promise)
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        if counter.limit > 0 {
            let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
            guard counter.admit(address) else {
                // Inside the pipeline's set-up the channel cannot be closed yet: it is closed
                // when it becomes active.
                refused = true
                return
            }
            source = address
        }
        arm(context, after: limits.headerTimeout)
    }

    private func finish() {
        cancelTimer()
        if let source {
            counter.release(source)
            self.source = nil
        }
    }

    private func arm(_ context: ChannelHandlerContext, after delay: Duration) {
        let when = context.eventLoop.now + .nanoseconds(delay.wholeNanoseconds)
        deadline = when
        if let timer, timer.at <= when { return }
        schedule(context, at: when)
    }

    private func schedule(_ context: ChannelHandlerContext, at when: NIODeadline) {
        timer?.task.cancel()
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: when) { [self] in
            self.timer = nil
            guard let deadline = self.deadline else { return }
            if deadline <= context.eventLoop.now {
                self.deadline = nil
                context.close(promise: nil)
            } else {
                self.schedule(context, at: deadline)
            }
        }
        timer = (task, when)
    }

    /// Lifts the limit; the scheduled check, if any, finds nothing to do (or the next limit).
    private func disarm() {
        deadline = nil
    }

    /// Cancels the scheduled check: the connection is gone.
    private func cancelTimer() {
        deadline = nil
        timer?.task.cancel()
        timer = nil
    }
}

