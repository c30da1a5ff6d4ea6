import GPUPlaneCore
import GPUPlaneSystem
import Hummingbird
import NIOCore

/// A node's watch of everything bound to it, the replicas and the model servers, in one stream:
/// `GET /v1/nodes/{name}/watch?replicaVersion=R&modelServerVersion=M`. Each line is a line of
/// the kind's own watch (`/v1/replicas?watch=true`, `/v1/modelservers?watch=true`, same
/// filtering, bookmarks and errors) with `"kind": "replicas"` or `"modelservers"` added; each
/// kind resumes from its own version. The stream ends when either kind's does (an ERROR line
/// of that kind says why), and the client reconnects with both.
///
/// One connection a node instead of one a kind: an api-server's memory at rest is mostly per
/// connection (Hummingbird's connection task, NIO's channel and pipeline, buffers: some 30 KB
/// each; docs/benchmarks.md), and every node holds its watches for its life.
struct NodeWatchStreamer: Sendable {
    let deps: APIDependencies

    /// The node's watch; `node`: the caller's node (or the one an admin names).
    func response(node: String, request: Request) async throws -> Response {
        let streamer = WatchStreamer(deps: deps)
        let replicas = try await streamer.prepare(
            Replica.self, tenant: nil, from: request.query("replicaVersion"), field: "replicaVersion", route: node,
            kindTag: ResourceKind.replica.rawValue, filter: { $0.binding?.node == node })
        let servers: WatchStreamer.Start<ModelServer>
        do {
            servers = try await streamer.prepare(
                ModelServer.self, tenant: nil, from: request.query("modelServerVersion"), field: "modelServerVersion", route: node,
                kindTag: ResourceKind.modelServer.rawValue, filter: { $0.binding?.node == node })
        } catch {
            // No stream: the replicas' cache subscription (a list without a version) goes too.
            replicas.cancel()
            throw error
        }
        let body = ResponseBody { writer in
            let merged = MergedLines()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await merged.feed { try await replicas.run(writer: &$0) } }
                group.addTask { try await merged.feed { try await servers.run(writer: &$0) } }
                // The first kind to end ends the stream; the other's session is cancelled.
                try await merged.drain(into: &writer)
                group.cancelAll()
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: WatchStreamer.headers, body: body)
    }
}

/// The lines of several watch sessions, written to one response in the order they come: each
/// session's write waits until its buffer is out (the client's pace is each session's, as on a
/// watch of its own); the first session to finish ends the stream.
final class MergedLines: Sendable {
    private struct Item: Sendable {
        let buffer: ByteBuffer
        let written: CheckedContinuation<Void, any Error>
    }
    private let items: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation

    init() {
        (items, continuation) = AsyncStream<Item>.makeStream()
    }

    /// Runs one session with a writer into this stream; its end (or failure) ends the stream.
    func feed(_ session: (inout any ResponseBodyWriter) async throws -> Void) async throws {
        var writer: any ResponseBodyWriter = Side(lines: self)
        defer { continuation.finish() }
        try await session(&writer)
    }

    /// Writes every buffer to `writer` until a session ends; buffers that come after are refused.
    func drain(into writer: inout any ResponseBodyWriter) async throws {
        var failure: (any Error)?
        for await item in items {
            if let failure {
                item.written.resume(throwing: failure)
                continue
            }
            do {
                try await writer.write(item.buffer)
                item.written.resume()
            } catch {
                failure = error
                item.written.resume(throwing: error)
                continuation.finish()
            }
        }
        if let failure { throw failure }
    }

    fileprivate func send(_ buffer: ByteBuffer) async throws {
        try await withCheckedThrowingContinuation { (written: CheckedContinuation<Void, any Error>) in
            if case .terminated = continuation.yield(Item(buffer: buffer, written: written)) {
                written.resume(throwing: CancellationError())
            }
        }
    }

    fileprivate func finish() { continuation.finish() }

    /// One session's writer.
    private struct Side: ResponseBodyWriter {
        let lines: MergedLines

        mutating func write(_ buffer: ByteBuffer) async throws { try await lines.send(buffer) }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws { lines.finish() }
    }
}
