import Foundation
import GPUPlaneCore
import GPUPlaneStore
import GPUPlaneSystem
import Hummingbird
import Metrics
import ServiceLifecycle

/// One line of a watch stream.
struct WatchLine<R: Resource>: Encodable {
    /// The kind the line is about, on the lines of a node's watch of several kinds
    /// (``NodeWatchStreamer``); absent on a watch of one kind.
    var kind: String?
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    var type: String
    var object: R?
    var resourceVersion: String?
    var error: ErrorBody?

    struct ErrorBody: Encodable {
        var code: Int
        var message: String
    }
}

/// Streams the changes of one kind as newline-delimited JSON from a resourceVersion, resumable:
/// a client that reconnects with the last resourceVersion it saw misses nothing and sees nothing
/// twice. Objects are filtered per caller (tenant scoping, node scoping); an object that starts
/// or stops passing the filter is reported as ADDED or DELETED.
///
/// Changes come from the api-server's ``WatchCache`` of the kind (one etcd watch per kind and
/// process, shared by every client watch) when it covers the resourceVersion; otherwise from an
/// etcd watch of the caller's own, which hands over to the cache once it has caught up with it.
/// A resourceVersion etcd compacted is answered 410 either way, as etcd would; one the cache's
/// window no longer holds is not (etcd is asked). A caller that falls behind the cache by more
/// than ``WatchCacheLimits/subscriberBuffer`` batches gets the 503 line and resumes.
struct WatchStreamer: Sendable {
    let deps: APIDependencies

    func response<R: Resource>(
        _ type: R.Type, tenant: String?, request: Request, route: String? = nil,
        filter: @escaping @Sendable (R) -> Bool = { _ in true }
    ) async throws -> Response {
        let start = try await prepare(R.self, tenant: tenant, from: request.query("resourceVersion"), field: "resourceVersion", route: route, filter: filter)
        let body = ResponseBody { writer in try await start.run(writer: &writer) }
        return Response(status: .ok, headers: Self.headers, body: body)
    }

    /// A watch's response headers.
    static var headers: HTTPFields {
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.cacheControl] = "no-cache"
        return headers
    }

    /// How one kind's watch starts, worked out before the response's headers go out (a bad
    /// version is a 400 naming `field`; a list's failure is the request's).
    struct Start<R: Resource>: Sendable {
        let setup: WatchSession<R>.Setup
        let initial: [R]
        let subscription: WatchCacheSubscription<R>?
        let resumeAfter: Int64?

        /// Gives up a watch that will not run: its cache subscription, if it has one, ends.
        func cancel() { subscription?.cancel() }

        /// Streams the watch into `writer` until it ends.
        func run(writer: inout any ResponseBodyWriter) async throws {
            let watch = WatchSession(setup)
            if let resumeAfter {
                try await watch.resume(after: resumeAfter, writer: &writer)
            } else {
                try await watch.run(initial: initial, subscription: subscription, writer: &writer)
            }
        }
    }

    /// Validates `version` (the client's last resourceVersion; absent or 0: list first, the
    /// list's objects sent as ADDED lines) and readies the watch of `R`.
    /// With `sink`, every cache subscription of the watch delivers there (a node's watch of
    /// several kinds, read by one task).
    func prepare<R: Resource>(
        _ type: R.Type, tenant: String?, from version: String?, field: String, route: String?, kindTag: String? = nil,
        sink: WatchCacheSink<R>? = nil, filter: @escaping @Sendable (R) -> Bool
    ) async throws -> Start<R> {
        var start: Int64
        var initial: [R] = []
        var resumeAfter: Int64?
        let cache = deps.watchCaches.cache(R.self)
        var subscription: WatchCacheSubscription<R>?
        if let text = version, !text.isEmpty, text != "0" {
            // etcd's revisions are positive Int64s; the largest cannot be resumed after (its
            // successor does not exist), so it is refused with the rest rather than overflowing.
            guard let version = Int64(text), version > 0, version < Int64.max else {
                throw APIError(
                    .badRequest, .badRequest,
                    "\(field) must be a whole number from 1 to \(Int64.max - 1) (the resourceVersion of a list or of the last line seen)",
                    field: field)
            }
            start = version + 1
            // The cache is asked in the body, after a first BOOKMARK (see WatchSession.resume).
            resumeAfter = version
        } else {
            // Started before the list, so that the list's revision is inside the cache's window.
            let cacheStarted = (try? await cache.start()) != nil
            let list = try await deps.store.list(R.self, tenant: tenant)
            initial = list.items.filter(filter)
            start = list.revision + 1
            if cacheStarted { subscription = cache.subscribe(after: list.revision, route: route, into: sink) }
        }
        var setup = WatchSession<R>.Setup(
            store: deps.store, cache: cache, tenant: tenant, route: route, filter: filter,
            startRevision: start, bookmarkEvery: deps.bookmarkInterval, ticks: deps.bookmarkTicks)
        setup.kindTag = kindTag
        setup.sink = sink
        return Start(setup: setup, initial: initial, subscription: subscription, resumeAfter: resumeAfter)
    }

    enum Item<R: Resource>: Sendable {
        case batch(StoreWatchBatch<R>)
        case tick
        case ended((any Error)?)
    }

    static func line<R: Resource>(_ type: R.Type, _ event: StoreWatchEvent<R>, filter: (R) -> Bool) -> WatchLine<R>? {
        let old = event.previous
        let version = String(event.revision)
        switch event.change {
        case .delete:
            guard var object = old, filter(object) else { return nil }
            object.metadata.resourceVersion = version
            return WatchLine(type: "DELETED", object: object, resourceVersion: version)
        case .put:
            guard let new = event.object else { return nil }
            let wasIn = old.map(filter) ?? false
            let isIn = filter(new)
            switch (wasIn, isIn) {
            case (false, true): return WatchLine(type: "ADDED", object: new, resourceVersion: version)
            case (true, true): return WatchLine(type: "MODIFIED", object: new, resourceVersion: version)
            case (true, false):
                var gone = new
                gone.metadata.resourceVersion = version
                return WatchLine(type: "DELETED", object: gone, resourceVersion: version)
            case (false, false): return nil
            }
        }
    }
}

/// One client's watch stream while it runs: which lines it gets and how far it is served.
///
/// A watch lives as long as its client (a node-agent's for days), and every suspended async
/// frame of it stays allocated meanwhile: lines are therefore built by synchronous,
/// non-inlined functions into one buffer per batch, so the frames that wait (on the cache, on
/// the client's socket) hold no decoded object or line. Built inline in the body's closure, the
/// frames of one replica watch took 37 KB (heaptrack, 1,000 hollow nodes).
final class WatchSession<R: Resource> {
    /// What a session is made from (sendable into the response body's closure).
    struct Setup: Sendable {
        let store: ResourceStore
        let cache: WatchCache<R>
        let tenant: String?
        let route: String?
        let filter: @Sendable (R) -> Bool
        /// The first revision the client has not seen.
        let startRevision: Int64
        let bookmarkEvery: Double
        /// The api-server's one clock for every watch's bookmarks.
        let ticks: BookmarkTicks
        /// Each line's `kind` (a watch of several kinds in one stream), or nil.
        var kindTag: String? = nil
        /// Where the watch's cache subscriptions deliver (a watch of several kinds read by one
        /// task); nil: each subscription's own stream.
        var sink: WatchCacheSink<R>? = nil
    }

    private let setup: Setup
    /// Every change up to this revision was sent (or is not the client's to see).
    private var lastRevision: Int64

    init(_ setup: Setup) {
        self.setup = setup
        self.lastRevision = setup.startRevision - 1
    }

    /// Resumes a watch after `version`: a BOOKMARK at `version` at once (nothing new, but the
    /// headers and a first line are out before etcd is asked anything, so a client does not
    /// take a slow start, with etcd busy, for a dead connection), then the cache's changes
    /// after it, or, when the cache cannot serve it or etcd compacted it, an etcd watch of its
    /// own (which answers 410 for a compacted one, as etcd does).
    func resume(after version: Int64, writer: inout any ResponseBodyWriter) async throws {
        try await writer.write(try bookmark(version))
        let subscription = await subscription(resumingAfter: version)
        try await run(initial: [], subscription: subscription, writer: &writer)
    }

    /// The cache's subscription for a watch resumed after `version`; nil when the cache cannot
    /// serve it, or etcd compacted it: the watch then watches etcd itself (which answers 410
    /// for a compacted one, as etcd does).
    ///
    /// Worked out in a task of its own, awaited: its frames (the cache's start and its checks,
    /// each an etcd read) are freed when it answers. In the body's task, the connection's, they
    /// stayed allocated for the watch's whole life: a fifth of an api-server's heap at 1,000
    /// nodes once (heaptrack), when they ran there inline, and still 2.6 KB of task-allocator
    /// slabs a node watch with each read in a child task; without them the stream's own later
    /// frames need 2 KB of new slabs, so a watch keeps about 0.6 KB less (docs/benchmarks.md,
    /// "Less kept a connection"). A connection closed meanwhile gets the subscription all the
    /// same, and the watch's end cancels it.
    func subscription(resumingAfter version: Int64) async -> WatchCacheSubscription<R>? {
        let setup = self.setup
        let answer = Task<WatchCacheSubscription<R>?, Never> { @Sendable in await resumedSubscription(setup, after: version) }
        return await answer.value
    }
    /// Sends `initial` as ADDED lines, then follows the cache's subscription, or an etcd watch of
    /// its own until the cache can take over; ends the body when either ends.
    func run(initial: [R], subscription: WatchCacheSubscription<R>?, writer: inout any ResponseBodyWriter) async throws {
        try await write(initial, writer: &writer)
        if let subscription {
            try await follow(subscription, writer: &writer)
        } else if let handover = try await watchDirectly(writer: &writer) {
            try await follow(handover, writer: &writer)
        }
        try await writer.finish(nil)
    }

    /// Sends `initial` as ADDED lines, 256 a write.
    func write(_ initial: [R], writer: inout any ResponseBodyWriter) async throws {
        var index = 0
        while index < initial.count {
            let chunk = try added(initial, from: index, count: 256)
            index += 256
            try await writer.write(chunk)
        }
    }

    /// Follows the cache until the subscription ends; then tells the client to resume.
    private func follow(_ subscription: WatchCacheSubscription<R>, writer: inout any ResponseBodyWriter) async throws {
        WatchMetrics.fromCache.increment()
        defer { WatchMetrics.fromCache.decrement() }
        let ticker = ticking { subscription.tick() }
        defer {
            ticker.cancel()
            subscription.cancel()
        }
        // A graceful shutdown ends the subscription: the client is told to resume elsewhere.
        try await withGracefulShutdownHandler {
            for await item in subscription.items {
                if let lines = try cached(item) { try await writer.write(lines) }
            }
        } onGracefulShutdown: {
            subscription.cancel()
        }
        try await writer.write(Task.isShuttingDownGracefully ? try shuttingDown() : try ending(subscription.ending))
    }

    /// The ERROR line that ends every watch when the api-server shuts down gracefully: the
    /// client resumes at another api-server (this one no longer listens) and misses nothing.
    @inline(never)
    func shuttingDown() throws -> ByteBuffer {
        try error(503, "this api-server is shutting down; reconnect with resourceVersion \(lastRevision)")
    }

    /// The ERROR line that ends a watch whose cache subscription ended for `why`.
    @inline(never)
    func ending(_ why: WatchCacheEnding?) throws -> ByteBuffer {
        switch why {
        case .overflow(let limit):
            return try error(503, "this watch fell \(limit) changes behind; reconnect with resourceVersion \(lastRevision)")
        case .gap, .stopped, nil:
            return try error(503, "the store stream ended; reconnect with resourceVersion \(lastRevision)")
        }
    }

    /// Follows an etcd watch of this caller's own until it ends, or until it has caught up with
    /// the cache: then returns the cache's subscription to follow instead.
    private func watchDirectly(writer: inout any ResponseBodyWriter) async throws -> WatchCacheSubscription<R>? {
        WatchMetrics.fromEtcd.increment()
        defer { WatchMetrics.fromEtcd.decrement() }
        let merged = AsyncStream<WatchStreamer.Item<R>>.makeStream()
        let pump = watchEtcd { merged.continuation.yield($0) }
        let ticker = ticking { merged.continuation.yield(.tick) }
        defer {
            pump.cancel()
            ticker.cancel()
            merged.continuation.finish()
        }
        let ending = try await withGracefulShutdownHandler { () async throws -> DirectEnd in
            for await item in merged.stream {
                switch try direct(item) {
                case .send(let lines):
                    try await writer.write(lines)
                case .sendAndEnd(let lines):
                    if let lines { try await writer.write(lines) }
                    return .ended
                case .handOver(let lines, let subscription):
                    if let lines { try await writer.write(lines) }
                    return .handOver(subscription)
                case .nothing:
                    break
                }
            }
            return .interrupted
        } onGracefulShutdown: {
            merged.continuation.finish()
        }
        switch ending {
        case .handOver(let subscription): return subscription
        case .interrupted where Task.isShuttingDownGracefully: try await writer.write(try shuttingDown())
        case .ended, .interrupted: break
        }
        return nil
    }

    /// How ``watchDirectly(writer:)``'s own etcd watch ended.
    private enum DirectEnd {
        /// Its last line written (an ERROR, or none when etcd ended it).
        case ended
        /// Caught up: the cache's subscription takes over.
        case handOver(WatchCacheSubscription<R>)
        /// Stopped from outside (the api-server's graceful shutdown) with no line of its own.
        case interrupted
    }

    /// Watches etcd from the first revision not yet sent, handing each batch (and the end) to
    /// `yield`, until cancelled.
    func watchEtcd(_ yield: @escaping @Sendable (WatchStreamer.Item<R>) -> Void) -> Task<Void, Never> {
        let (store, tenant, from) = (setup.store, setup.tenant, lastRevision + 1)
        return Task {
            do {
                for try await batch in store.watch(R.self, tenant: tenant, from: from) {
                    yield(.batch(batch))
                }
                yield(.ended(nil))
            } catch {
                yield(.ended(error))
            }
        }
    }

    /// Calls `tick` every bookmark interval until cancelled, on the api-server's shared clock.
    private func ticking(_ tick: @escaping @Sendable () -> Void) -> BookmarkTicks.Registration {
        setup.ticks.add(every: setup.bookmarkEvery, tick)
    }

    /// What ``watchDirectly(writer:)`` does with one item of its own etcd watch.
    enum DirectStep {
        case nothing
        case send(ByteBuffer)
        case sendAndEnd(ByteBuffer?)
        case handOver(ByteBuffer?, WatchCacheSubscription<R>)
    }

    @inline(never)
    func direct(_ item: WatchStreamer.Item<R>) throws -> DirectStep {
        switch item {
        case .tick:
            return .send(try bookmark(lastRevision))
        case .ended(let failure):
            if let failure = failure as? StoreError, failure.code == .compacted {
                return .sendAndEnd(try error(410, "resourceVersion \(setup.startRevision - 1) is too old (compacted); list again and watch from the list's resourceVersion"))
            } else if failure != nil {
                return .sendAndEnd(try error(503, "the store stream ended; reconnect with resourceVersion \(lastRevision)"))
            }
            return .sendAndEnd(nil)
        case .batch(let batch):
            // A batch of replayed events carries etcd's current revision even when more
            // replay follows, so only a progress notification's counts.
            let lines = try self.lines(batch.events, progress: batch.isProgress ? batch.revision : nil)
            // Whole revisions up to lastRevision are sent: the cache takes over once its
            // window reaches back to here.
            let cache = setup.cache
            if lastRevision >= cache.floor, cache.floor >= 0, let handover = cache.subscribe(after: lastRevision, route: setup.route, into: setup.sink) {
                return .handOver(lines, handover)
            }
            return lines.map { .send($0) } ?? .nothing
        }
    }

    /// The lines for one item of the cache: a bookmark, or the batch's changes this caller sees.
    @inline(never)
    func cached(_ item: WatchCacheItem<R>) throws -> ByteBuffer? {
        switch item {
        case .tick:
            return try bookmark(lastRevision)
        case .batch(let events, let revision):
            // The cache watches every tenant; a tenant's watch sees its own, and the others'
            // changes only advance its bookmarks.
            let tenant = setup.tenant
            let mine = events.lazy.filter { tenant == nil || $0.tenant == tenant }.map(\.event)
            return try lines(mine, progress: revision)
        }
    }

    /// The lines of one batch this caller may see, in one buffer (nil: none). One transaction
    /// writes several objects at one revision (an apply, a scheduler pass, a batched commit),
    /// and etcd sends a revision's events in one batch. A line whose revision continues in the
    /// next line says revision - 1, so a client that resumes from it gets the rest of that
    /// revision again rather than never. Only lines this caller gets count: events it may not
    /// see are never sent, so they are not waited for either. `progress`: every change up to
    /// it was sent (etcd's progress notification, through the cache or not).
    @inline(never)
    private func lines(_ events: some Sequence<StoreWatchEvent<R>>, progress: Int64?) throws -> ByteBuffer? {
        var selected: [(revision: Int64, line: WatchLine<R>)] = []
        for event in events where event.revision >= setup.startRevision {
            lastRevision = max(lastRevision, event.revision)
            if let line = WatchStreamer.line(R.self, event, filter: setup.filter) { selected.append((event.revision, line)) }
        }
        if let progress { lastRevision = max(lastRevision, progress) }
        guard !selected.isEmpty else { return nil }
        for index in selected.indices.dropLast() where selected[index + 1].revision == selected[index].revision {
            selected[index].line.resourceVersion = String(selected[index].revision - 1)
        }
        return try encoded(selected.map(\.line))
    }

    /// `count` objects of `objects` from `from` as ADDED lines.
    @inline(never)
    private func added(_ objects: [R], from: Int, count: Int) throws -> ByteBuffer {
        try encoded(objects[from..<min(objects.count, from + count)].map {
            WatchLine(type: "ADDED", object: $0, resourceVersion: $0.metadata.resourceVersion)
        })
    }

    /// A BOOKMARK line: every change up to `revision` was sent.
    @inline(never)
    func bookmark(_ revision: Int64) throws -> ByteBuffer {
        try encoded([WatchLine<R>(type: "BOOKMARK", resourceVersion: String(revision))])
    }

    /// An ERROR line.
    @inline(never)
    private func error(_ code: Int, _ message: String) throws -> ByteBuffer {
        try encoded([WatchLine<R>(type: "ERROR", error: .init(code: code, message: message))])
    }

    /// Lines as newline-delimited JSON, each with the session's `kindTag` as its `kind`.
    @inline(never)
    private func encoded(_ lines: some Sequence<WatchLine<R>>) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        for var line in lines {
            line.kind = setup.kindTag
            buffer.writeBytes(try GPUPlaneJSON.encode(line))
            buffer.writeInteger(UInt8(0x0A))
        }
        return buffer
    }
}

/// The subscription ``WatchSession/subscription(resumingAfter:)`` asks for, in its own task.
private func resumedSubscription<R: Resource>(_ setup: WatchSession<R>.Setup, after version: Int64) async -> WatchCacheSubscription<R>? {
    let cache = setup.cache
    // The cache may still hold changes etcd compacted: those get etcd's 410, through a
    // watch of the caller's own (a range read, shared by the watches resumed at once;
    // asked even past the cache's head, which may lag etcd's).
    guard (try? await cache.start()) != nil, !(await cache.isCompacted(after: version)) else { return nil }
    if version >= cache.floor {
        return cache.subscribe(after: version, route: setup.route, into: setup.sink)
    } else if let quiet = await cache.quietThrough(after: version) {
        // Nothing of the kind changed between the client's version and the cache's
        // floor (an api-server that started since, say): the cache serves it too.
        return cache.subscribe(after: quiet, route: setup.route, into: setup.sink)
    }
    return nil
}

/// The watches this api-server serves right now, by where their changes come from: its shared
/// watch cache, or an etcd watch of their own (a client behind the cache's window, or one the
/// cache could not take yet). At scale the second should stay near zero: each is an etcd watcher.
enum WatchMetrics {
    static let fromCache = Meter(label: "gpuplane_api_watches", dimensions: [("served", "cache")])
    static let fromEtcd = Meter(label: "gpuplane_api_watches", dimensions: [("served", "etcd")])

    /// Makes both series exist (at 0) before the first watch of each kind.
    static func register() {
        fromCache.increment(by: 0)
        fromEtcd.increment(by: 0)
    }
}

/// The clock of every watch's bookmarks in one api-server: one task per bookmark interval (one,
/// unless tests set another) calls every registered watch's tick, rather than a task and a
/// sleep timer per watch, each kept for the watch's life (two per node: some KB each at rest).
/// A watch registered between two ticks gets its first one sooner than a whole interval after
/// it started, never later.
final class BookmarkTicks: Sendable {
    private struct Clock {
        var task: Task<Void, Never>?
        var ticks: [UInt64: @Sendable () -> Void] = [:]
    }
    private let state = Locked((next: UInt64(0), clocks: [Double: Clock]()))

    /// Stops a watch's ticks.
    struct Registration: Sendable {
        fileprivate let ticks: BookmarkTicks
        fileprivate let every: Double
        fileprivate let id: UInt64
        /// No more ticks; the interval's task ends with its last watch.
        func cancel() { ticks.remove(every: every, id: id) }
    }

    /// How many intervals have a running clock (tests).
    var intervals: Int { state.withLock { $0.clocks.count } }

    /// Calls `tick` every `every` seconds until the registration is cancelled.
    func add(every: Double, _ tick: @escaping @Sendable () -> Void) -> Registration {
        state.withLock { s in
            let id = s.next
            s.next += 1
            s.clocks[every, default: Clock()].ticks[id] = tick
            if s.clocks[every]?.task == nil {
                s.clocks[every]?.task = Task.detached { [self] in await run(every: every) }
            }
            return Registration(ticks: self, every: every, id: id)
        }
    }

    private func remove(every: Double, id: UInt64) {
        let idle = state.withLock { s -> Task<Void, Never>? in
            s.clocks[every]?.ticks[id] = nil
            guard let clock = s.clocks[every], clock.ticks.isEmpty else { return nil }
            s.clocks[every] = nil
            return clock.task
        }
        idle?.cancel()
    }

    private func run(every: Double) async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: UInt64(max(0.001, every) * 1_000_000_000))
            if Task.isCancelled { return }
            let ticks = state.withLock { s in s.clocks[every].map { Array($0.ticks.values) } ?? [] }
            for tick in ticks { tick() }
        }
    }
}
