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
struct WatchStreamer: Sendable {
    let deps: APIDependencies

    func response<R: Resource>(
        _ type: R.Type, tenant: String?, request: Request, filter: @escaping @Sendable (R) -> Bool = { _ in true }
    ) async throws -> Response {
        var start: Int64
        var initial: [R] = []
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
        } else {
            let list = try await deps.store.list(R.self, tenant: tenant)
            initial = list.items.filter(filter)
            start = list.revision + 1
        }
        let store = deps.store
        let bookmarkEvery = deps.bookmarkInterval
        let startRevision = start
        let first = initial
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        headers[.cacheControl] = "no-cache"
        let body = ResponseBody { writer in
            func send(_ line: WatchLine<R>) async throws {
                var data = try GPUPlaneJSON.encode(line)
                data.append(0x0A)
                try await writer.write(ByteBuffer(bytes: data))
            }
            for object in first {
                try await send(WatchLine(type: "ADDED", object: object, resourceVersion: object.metadata.resourceVersion))
            }
            var lastRevision = startRevision - 1
            let merged = AsyncStream<Item<R>>.makeStream()
            let pump = Task {
                do {
                    for try await batch in store.watch(R.self, tenant: tenant, from: startRevision) {
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
                case .ended(let error):
                    if let error = error as? StoreError, error.code == .compacted {
                        try await send(WatchLine(type: "ERROR", error: .init(code: 410, message: "resourceVersion \(startRevision - 1) is too old (compacted); list again and watch from the list's resourceVersion")))
                    } else if error != nil {
                        try await send(WatchLine(type: "ERROR", error: .init(code: 503, message: "the store stream ended; reconnect with resourceVersion \(lastRevision)")))
                    }
                    try await writer.finish(nil)
                    return
                case .batch(let batch):
                    // One transaction writes several objects at one revision (an apply, a
                    // scheduler pass, a batched commit), and etcd sends a revision's events in one
                    // batch. A line whose revision continues in the next line says revision - 1,
                    // so a client that resumes from it gets the rest of that revision again
                    // rather than never.
                    // Only lines this caller gets count: events it may not see are never sent,
                    // so they are not waited for either.
                    var lines: [(revision: Int64, line: WatchLine<R>)] = []
                    for event in batch.events {
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
                    // An empty batch is etcd's progress notification: everything up to its
                    // header revision was sent. A batch of replayed events carries etcd's
                    // current revision even when more replay follows, so only its events count.
                    if batch.isProgress { lastRevision = max(lastRevision, batch.revision) }
                }
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
