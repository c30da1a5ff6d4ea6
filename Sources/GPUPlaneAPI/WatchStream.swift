import Foundation
import GPUPlaneCore
import GPUPlaneStore
import Hummingbird

/// One line of a watch stream.
struct WatchLine<R: Resource>: Encodable {
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
        var start: Int64
        var initial: [R] = []
        let cache = deps.watchCaches.cache(R.self)
        // Started before any list, so that the list's revision is inside the cache's window.
        let cacheStarted = (try? await cache.start()) != nil
        var subscription: WatchCacheSubscription<R>?
        if let text = request.query("resourceVersion"), !text.isEmpty, text != "0" {
            // etcd's revisions are positive Int64s; the largest cannot be resumed after (its
            // successor does not exist), so it is refused with the rest rather than overflowing.
            guard let version = Int64(text), version > 0, version < Int64.max else {
                throw APIError(
                    .badRequest, .badRequest,
                    "resourceVersion must be a whole number from 1 to \(Int64.max - 1) (the resourceVersion of a list or of the last line seen)",
                    field: "resourceVersion")
            }
            start = version + 1
            // The cache may still hold changes etcd compacted: those get etcd's 410, through a
            // watch of the caller's own, as before the cache (one range read per connection;
            // asked even past the cache's head, which may lag etcd's).
            if cacheStarted, version >= cache.floor, !(await cache.isCompacted(after: version)) {
                subscription = cache.subscribe(after: version, route: route)
            }
        } else {
            let list = try await deps.store.list(R.self, tenant: tenant)
            initial = list.items.filter(filter)
            start = list.revision + 1
            if cacheStarted { subscription = cache.subscribe(after: list.revision, route: route) }
        }
        let store = deps.store
        let bookmarkEvery = deps.bookmarkInterval
        let startRevision = start
        let first = initial
        let subscribed = subscription
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.cacheControl] = "no-cache"
        let body = ResponseBody { writer in
            func send(_ line: WatchLine<R>) async throws {
                var data = try GPUPlaneJSON.encode(line)
                data.append(0x0A)
                try await writer.write(ByteBuffer(bytes: data))
            }
            func error(_ code: Int, _ message: String) async throws {
                try await send(WatchLine(type: "ERROR", error: .init(code: code, message: message)))
            }
            for object in first {
                try await send(WatchLine(type: "ADDED", object: object, resourceVersion: object.metadata.resourceVersion))
            }
            var lastRevision = startRevision - 1

            /// Sends one batch's lines this caller may see. One transaction writes several
            /// objects at one revision (an apply, a scheduler pass, a batched commit), and etcd
            /// sends a revision's events in one batch. A line whose revision continues in the
            /// next line says revision - 1, so a client that resumes from it gets the rest of
            /// that revision again rather than never. Only lines this caller gets count: events
            /// it may not see are never sent, so they are not waited for either. `progress`:
            /// every change up to it was sent (etcd's progress notification, through the cache
            /// or not).
            func sendBatch(_ events: some Sequence<StoreWatchEvent<R>>, progress: Int64?) async throws {
                var lines: [(revision: Int64, line: WatchLine<R>)] = []
                for event in events where event.revision >= startRevision {
                    lastRevision = max(lastRevision, event.revision)
                    if let line = WatchStreamer.line(R.self, event, filter: filter) { lines.append((event.revision, line)) }
                }
                for (index, item) in lines.enumerated() {
                    var line = item.line
                    if index + 1 < lines.count, lines[index + 1].revision == item.revision {
                        line.resourceVersion = String(item.revision - 1)
                    }
                    try await send(line)
                }
                if let progress { lastRevision = max(lastRevision, progress) }
            }

            /// Follows the cache until the subscription ends; then tells the client to resume.
            func follow(_ subscription: WatchCacheSubscription<R>) async throws {
                let ticker = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(nanoseconds: UInt64(bookmarkEvery * 1_000_000_000))
                        subscription.tick()
                    }
                }
                defer {
                    ticker.cancel()
                    subscription.cancel()
                }
                for await item in subscription.items {
                    switch item {
                    case .tick:
                        try await send(WatchLine(type: "BOOKMARK", resourceVersion: String(lastRevision)))
                    case .batch(let events, let revision):
                        // The cache watches every tenant; a tenant's watch sees its own, and the
                        // others' changes only advance its bookmarks.
                        let mine = events.lazy.filter { tenant == nil || $0.tenant == tenant }.map(\.event)
                        try await sendBatch(mine, progress: revision)
                    }
                }
                switch subscription.ending {
                case .overflow(let limit):
                    try await error(503, "this watch fell \(limit) changes behind; reconnect with resourceVersion \(lastRevision)")
                case .gap, .stopped, nil:
                    try await error(503, "the store stream ended; reconnect with resourceVersion \(lastRevision)")
                }
            }

            /// Follows an etcd watch of this caller's own until it ends, or until it has caught
            /// up with the cache: then returns the cache's subscription to follow instead.
            func watchDirectly() async throws -> WatchCacheSubscription<R>? {
                let merged = AsyncStream<Item<R>>.makeStream()
                let from = lastRevision + 1
                let pump = Task {
                    do {
                        for try await batch in store.watch(R.self, tenant: tenant, from: from) {
                            merged.continuation.yield(.batch(batch))
                        }
                        merged.continuation.yield(.ended(nil))
                    } catch {
                        merged.continuation.yield(.ended(error))
                    }
                }
                let ticker = Task {
                    while !Task.isCancelled {
                        try? await Task.sleep(nanoseconds: UInt64(bookmarkEvery * 1_000_000_000))
                        merged.continuation.yield(.tick)
                    }
                }
                defer {
                    pump.cancel()
                    ticker.cancel()
                    merged.continuation.finish()
                }
                for await item in merged.stream {
                    switch item {
                    case .tick:
                        try await send(WatchLine(type: "BOOKMARK", resourceVersion: String(lastRevision)))
                    case .ended(let failure):
                        if let failure = failure as? StoreError, failure.code == .compacted {
                            try await error(410, "resourceVersion \(startRevision - 1) is too old (compacted); list again and watch from the list's resourceVersion")
                        } else if failure != nil {
                            try await error(503, "the store stream ended; reconnect with resourceVersion \(lastRevision)")
                        }
                        return nil
                    case .batch(let batch):
                        // A batch of replayed events carries etcd's current revision even when
                        // more replay follows, so only a progress notification's counts.
                        try await sendBatch(batch.events, progress: batch.isProgress ? batch.revision : nil)
                        // Whole revisions up to lastRevision are sent: the cache takes over
                        // once its window reaches back to here.
                        if lastRevision >= cache.floor, cache.floor >= 0, let handover = cache.subscribe(after: lastRevision, route: route) {
                            return handover
                        }
                    }
                }
                return nil
            }

            if let subscribed {
                try await follow(subscribed)
            } else if let handover = try await watchDirectly() {
                try await follow(handover)
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
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
