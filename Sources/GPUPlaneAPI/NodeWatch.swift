import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import NIOCore
import ServiceLifecycle

/// A node's watch of everything bound to it, the replicas and the model servers, in one stream:
/// `GET /v1/nodes/{name}/watch?replicaVersion=R&modelServerVersion=M`. Each line is a line of
/// the kind's own watch (`/v1/replicas?watch=true`, `/v1/modelservers?watch=true`, same
/// filtering, bookmarks and errors) with `"kind": "replicas"` or `"modelservers"` added; each
/// kind resumes from its own version. The stream ends when either kind's does (an ERROR line
/// of that kind says why), and the client reconnects with both.
///
/// One connection a node instead of one a kind: an api-server's memory at rest is mostly per
/// connection (Hummingbird's connection task, NIO's channel and pipeline, buffers: some 30 KB
/// each; docs/benchmarks.md), and every node holds its watches for its life. For the same
/// reason one task serves both kinds, the connection's own: the kinds' cache subscriptions
/// deliver into one ``NodeWatchInbox`` (a task a kind, with a merge between, held some 9 KB a
/// node more at rest).
struct NodeWatchStreamer: Sendable {
    let deps: APIDependencies

    /// The node's watch; `node`: the caller's node (or the one an admin names).
    func response(node: String, request: Request) async throws -> Response {
        let streamer = WatchStreamer(deps: deps)
        let inbox = NodeWatchInbox(buffer: 2 * deps.watchCaches.cache(Replica.self).limits.subscriberBuffer)
        let replicas = try await streamer.prepare(
            Replica.self, tenant: nil, from: request.query("replicaVersion"), field: "replicaVersion", route: node,
            kindTag: ResourceKind.replica.rawValue, sink: inbox.sink(NodeWatchInbox.Item.replicas), filter: { $0.binding?.node == node })
        let servers: WatchStreamer.Start<ModelServer>
        do {
            servers = try await streamer.prepare(
                ModelServer.self, tenant: nil, from: request.query("modelServerVersion"), field: "modelServerVersion", route: node,
                kindTag: ResourceKind.modelServer.rawValue, sink: inbox.sink(NodeWatchInbox.Item.modelServers),
                filter: { $0.binding?.node == node })
        } catch {
            // No stream: the replicas' cache subscription (a list without a version) goes too.
            replicas.cancel()
            throw error
        }
        let ticks = (deps.bookmarkTicks, deps.bookmarkInterval)
        let body = ResponseBody { writer in
            try await Self.stream(
                NodeWatchKind(replicas, inbox: inbox, etcd: NodeWatchInbox.Item.replicasFromEtcd),
                NodeWatchKind(servers, inbox: inbox, etcd: NodeWatchInbox.Item.modelServersFromEtcd),
                inbox: inbox, ticks: ticks, writer: &writer)
        }
        return Response(status: .ok, headers: WatchStreamer.headers, body: body)
    }

    /// Both kinds' lines, read from one inbox by this one task (the connection's): each kind
    /// opens (its list, or a BOOKMARK at its version), then every item of either kind is
    /// turned into lines and written before the next is read, so the client's pace is each
    /// kind's. The first kind to end ends the stream (its ERROR line says why).
    private static func stream(
        _ replicas: NodeWatchKind<Replica>, _ servers: NodeWatchKind<ModelServer>, inbox: NodeWatchInbox,
        ticks: (BookmarkTicks, Double), writer: inout any ResponseBodyWriter
    ) async throws {
        let ticker = ticks.0.add(every: ticks.1) { inbox.yield(.tick) }
        defer {
            ticker.cancel()
            replicas.close()
            servers.close()
            inbox.finish()
        }
        // A graceful shutdown finishes the inbox: both kinds tell the client to resume elsewhere.
        var kindEnded = false
        try await withGracefulShutdownHandler {
            try await replicas.open(writer: &writer)
            try await servers.open(writer: &writer)
            loop: for await item in inbox.items {
                let step: NodeWatchStep
                switch item {
                case .tick:
                    replicas.tick()
                    servers.tick()
                    continue
                case .replicas(let item): step = try replicas.lines(item)
                case .modelServers(let item): step = try servers.lines(item)
                case .replicasFromEtcd(let item): step = try replicas.lines(item)
                case .modelServersFromEtcd(let item): step = try servers.lines(item)
                }
                if let lines = step.lines { try await writer.write(lines) }
                if step.ended {
                    kindEnded = true
                    break loop
                }
            }
        } onGracefulShutdown: {
            inbox.finish()
        }
        if !kindEnded, Task.isShuttingDownGracefully {
            try await writer.write(try replicas.shuttingDownLine())
            try await writer.write(try servers.shuttingDownLine())
        } else {
            // The inbox finished: a kind's cache subscription ended (its ERROR line says why).
            for line in [try replicas.endingLine(), try servers.endingLine()] {
                if let line { try await writer.write(line) }
            }
        }
        try await writer.finish(nil)
    }
}

/// What one item of a node's watch gives: lines to write, and whether its kind's stream ended.
private struct NodeWatchStep {
    var lines: ByteBuffer?
    var ended = false
}

/// Everything a node's watch reads, of both kinds, in one stream: the cache's items (its
/// subscriptions deliver here through a ``WatchCacheSink``), the items of a kind's own etcd
/// watch while the cache cannot serve that kind, and the bookmark clock's ticks. A full
/// buffer drops the item, and a cache subscription that lost one ends (the client resumes).
final class NodeWatchInbox: Sendable {
    enum Item: Sendable {
        case tick
        case replicas(WatchCacheItem<Replica>)
        case modelServers(WatchCacheItem<ModelServer>)
        case replicasFromEtcd(WatchStreamer.Item<Replica>)
        case modelServersFromEtcd(WatchStreamer.Item<ModelServer>)
    }

    let items: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation

    init(buffer: Int) {
        (items, continuation) = AsyncStream<Item>.makeStream(bufferingPolicy: .bufferingOldest(max(4, buffer)))
    }

    /// A sink for a cache subscription of `R`: its items arrive wrapped by `wrap`; its end
    /// finishes the inbox (whatever is buffered is still read).
    func sink<R: Resource>(_ wrap: @escaping @Sendable (WatchCacheItem<R>) -> Item) -> WatchCacheSink<R> {
        let continuation = continuation
        return WatchCacheSink(
            deliver: { item in
                if case .dropped = continuation.yield(wrap(item)) { return false }
                return true
            },
            finish: { continuation.finish() })
    }

    func yield(_ item: Item) { continuation.yield(item) }

    func finish() { continuation.finish() }
}

/// One kind of a node's watch, read from its ``NodeWatchInbox``: the kind's session (its
/// filter, its last revision, its lines), and where its changes come from, the cache or,
/// until the cache can take over, an etcd watch of its own. Used by the inbox's one reader
/// only.
private final class NodeWatchKind<R: Resource> {
    private let session: WatchSession<R>
    private let start: WatchStreamer.Start<R>
    private let inbox: NodeWatchInbox
    private let etcdItem: @Sendable (WatchStreamer.Item<R>) -> NodeWatchInbox.Item
    private var subscription: WatchCacheSubscription<R>?
    private var etcdWatch: Task<Void, Never>?

    /// `start`: prepared with a sink into `inbox` (every cache subscription of the kind
    /// delivers there).
    init(_ start: WatchStreamer.Start<R>, inbox: NodeWatchInbox, etcd: @escaping @Sendable (WatchStreamer.Item<R>) -> NodeWatchInbox.Item) {
        self.session = WatchSession(start.setup)
        self.start = start
        self.inbox = inbox
        self.etcdItem = etcd
    }

    /// Writes the kind's opening (its list's objects, or a BOOKMARK at its version) and starts
    /// its feed: the cache's subscription, or its own etcd watch.
    func open(writer: inout any ResponseBodyWriter) async throws {
        if let version = start.resumeAfter {
            try await writer.write(try session.bookmark(version))
            subscription = await session.subscription(resumingAfter: version)
        } else {
            try await session.write(start.initial, writer: &writer)
            subscription = start.subscription
        }
        if subscription != nil {
            WatchMetrics.fromCache.increment()
        } else {
            WatchMetrics.fromEtcd.increment()
            let (inbox, etcdItem) = (inbox, etcdItem)
            etcdWatch = session.watchEtcd { inbox.yield(etcdItem($0)) }
        }
    }

    /// The lines of one of the cache's items.
    func lines(_ item: WatchCacheItem<R>) throws -> NodeWatchStep {
        NodeWatchStep(lines: try session.cached(item))
    }

    /// The lines of one item of the kind's own etcd watch; on a hand-over the cache feeds it
    /// from then on (items of the old watch still in the inbox are skipped).
    func lines(_ item: WatchStreamer.Item<R>) throws -> NodeWatchStep {
        guard etcdWatch != nil else { return NodeWatchStep() }
        switch try session.direct(item) {
        case .nothing:
            return NodeWatchStep()
        case .send(let lines):
            return NodeWatchStep(lines: lines)
        case .sendAndEnd(let lines):
            return NodeWatchStep(lines: lines, ended: true)
        case .handOver(let lines, let handover):
            etcdWatch?.cancel()
            etcdWatch = nil
            subscription = handover
            WatchMetrics.fromEtcd.decrement()
            WatchMetrics.fromCache.increment()
            return NodeWatchStep(lines: lines)
        }
    }

    /// A bookmark's turn: the cache queues the kind's progress and a tick behind its changes;
    /// its own etcd watch gets a BOOKMARK at its last revision.
    func tick() {
        if let subscription {
            subscription.tick()
        } else if etcdWatch != nil {
            inbox.yield(etcdItem(.tick))
        }
    }

    /// The ERROR line of a kind whose cache subscription ended; nil when it did not.
    func endingLine() throws -> ByteBuffer? {
        guard let ending = subscription?.ending else { return nil }
        return try session.ending(ending)
    }

    /// The kind's ERROR line when the api-server shuts down gracefully (resume elsewhere).
    func shuttingDownLine() throws -> ByteBuffer {
        try session.shuttingDown()
    }

    /// Stops the kind's feed.
    func close() {
        if let subscription {
            subscription.cancel()
            WatchMetrics.fromCache.decrement()
        } else if let etcdWatch {
            etcdWatch.cancel()
            WatchMetrics.fromEtcd.decrement()
        }
        subscription = nil
        etcdWatch = nil
    }
}
