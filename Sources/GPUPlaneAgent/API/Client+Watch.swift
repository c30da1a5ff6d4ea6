import CurlHTTP
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneCore
import GPUPlaneSystem

/// A list of one kind and the resourceVersion to watch from.
public struct WatchableList<R: Resource>: Decodable, Sendable {
    /// The objects this node may see.
    public var items: [R]
    /// The store revision the list was read at.
    public var resourceVersion: String
}

/// The replicas bound to this node.
public typealias ReplicaList = WatchableList<Replica>

/// One line of a watch.
public struct ResourceWatchLine<R: Resource>: Decodable, Sendable {
    /// The kinds of line.
    public enum Kind: String, Decodable, Sendable {
        /// An object became visible to this node (or was listed).
        case added = "ADDED"
        /// An object visible here changed.
        case modified = "MODIFIED"
        /// An object was deleted or is no longer visible here.
        case deleted = "DELETED"
        /// Nothing changed up to ``ResourceWatchLine/resourceVersion``.
        case bookmark = "BOOKMARK"
        /// The stream failed; see ``ResourceWatchLine/error``.
        case error = "ERROR"
    }
    /// The api-server's error on an `ERROR` line.
    public struct Failure: Decodable, Sendable {
        /// An HTTP-like code: 410 means the resourceVersion is compacted.
        public var code: Int
        /// Words.
        public var message: String
    }
    /// What the line says.
    public var type: Kind
    /// The object, for ADDED, MODIFIED and DELETED.
    public var object: R?
    /// The revision this line brings the watcher to.
    public var resourceVersion: String?
    /// The failure, for ERROR.
    public var error: Failure?
}

/// One line of a replica watch.
public typealias ReplicaWatchLine = ResourceWatchLine<Replica>

/// What a resumable watch tells: a full list (at start, and after a 410), then changes.
public enum ResourceChange<R: Resource>: Sendable {
    /// Every object this node may see now; replaces whatever was known.
    case listed([R])
    /// An object was added or changed.
    case upserted(R)
    /// An object is deleted or no longer visible to this node.
    case deleted(R)
}

/// What the replica watch tells.
public typealias ReplicaChange = ResourceChange<Replica>

/// What the model-server watch tells.
public typealias ModelServerChange = ResourceChange<ModelServer>

/// What a node's watch of everything bound to it tells (``NodeAPI/Client/workloadChanges(node:)``).
public enum WorkloadChange: Sendable {
    /// A change of the node's replicas.
    case replicas(ReplicaChange)
    /// A change of the node's model servers.
    case modelServers(ModelServerChange)
}

/// One line of a node's watch (`GET /v1/nodes/{name}/watch`): a line of one kind's watch,
/// told apart by its `kind`.
public enum NodeWatchLine: Decodable, Sendable {
    /// A replicas line.
    case replicas(ResourceWatchLine<Replica>)
    /// A model servers line.
    case modelServers(ResourceWatchLine<ModelServer>)
    /// A line of a kind this agent does not know (a newer api-server's): skipped.
    case other

    private enum Keys: String, CodingKey { case kind }

    public init(from decoder: any Decoder) throws {
        switch try decoder.container(keyedBy: Keys.self).decodeIfPresent(String.self, forKey: .kind) {
        case ResourceKind.replica.rawValue: self = .replicas(try ResourceWatchLine<Replica>(from: decoder))
        case ResourceKind.modelServer.rawValue: self = .modelServers(try ResourceWatchLine<ModelServer>(from: decoder))
        default: self = .other
        }
    }
}

extension NodeAPI.Client {
    /// The replicas bound to this node, across tenants. Maps to `GET /v1/replicas`.
    public func listReplicas() async throws(NodeAPIError) -> ReplicaList {
        try await call(.get, "/v1/replicas", as: ReplicaList.self)
    }

    /// The model servers bound to this node. Maps to `GET /v1/modelservers`.
    public func listModelServers() async throws(NodeAPIError) -> WatchableList<ModelServer> {
        try await call(.get, "/v1/modelservers", as: WatchableList<ModelServer>.self)
    }

    /// Reports a model server's container and readiness. Maps to
    /// `PUT /v1/modelservers/{name}/status`.
    /// - Throws: ``NodeAPIError/Code/notFound`` when the server is gone or no longer bound here.
    @discardableResult
    public func reportStatus(modelServer name: String, _ report: ModelServer.Report) async throws(NodeAPIError) -> ModelServer {
        let path = "/v1/modelservers/\(Self.segment(name))/status"
        return try await call(.put, path, body: try Self.encode(report, path: path), as: ModelServer.self)
    }

    /// Reports a replica's status. Maps to `PUT /v1/replicas/{tenant}/{name}/status`.
    /// - Throws: ``NodeAPIError/Code/notFound`` when the replica is gone or no longer bound here.
    @discardableResult
    public func reportStatus(replica tenant: String, _ name: String, _ status: ReplicaStatus) async throws(NodeAPIError) -> Replica {
        let path = "/v1/replicas/\(Self.segment(tenant))/\(Self.segment(name))/status"
        return try await call(.put, path, body: try Self.encode(status, path: path), as: Replica.self)
    }

    /// One watch connection from `resourceVersion` (exclusive): its lines as they arrive. The
    /// sequence ends when the server ends the stream or the client's calls go to another
    /// api-server (see ``NodeAPI/Configuration/returnAfter``), and throws ``NodeAPIError`` otherwise
    /// (``NodeAPIError/Code/timeout`` when nothing, not even a bookmark, came for
    /// ``NodeAPI/Configuration/watchIdleTimeout``). Ending the iteration aborts the request.
    /// Maps to `GET /v1/replicas?watch=true&resourceVersion=N`.
    public func watchReplicas(from resourceVersion: String) -> AsyncThrowingStream<ReplicaWatchLine, any Error> {
        watch(Replica.self, "/v1/replicas", from: resourceVersion)
    }

    /// One watch connection of `collection` (`/v1/replicas`, `/v1/modelservers`) from
    /// `resourceVersion` (exclusive); see ``watchReplicas(from:)``.
    public func watch<R: Resource>(
        _ type: R.Type, _ collection: String, from resourceVersion: String
    ) -> AsyncThrowingStream<ResourceWatchLine<R>, any Error> {
        watch(R.self, collection, from: resourceVersion, endpoint: currentEndpoint)
    }

    /// ``watch(_:_:from:)`` on the api-server at `endpoint` in ``NodeAPI/Configuration/baseURLs``.
    func watch<R: Resource>(
        _ type: R.Type, _ collection: String, from resourceVersion: String, endpoint: Int
    ) -> AsyncThrowingStream<ResourceWatchLine<R>, any Error> {
        stream(ResourceWatchLine<R>.self, "\(collection)?watch=true&resourceVersion=\(Self.segment(resourceVersion))", endpoint: endpoint)
    }

    /// One connection of this node's watch (`GET /v1/nodes/{name}/watch`), each kind from its
    /// version (exclusive); see ``watchReplicas(from:)``.
    func watchNode(_ node: String, replicasFrom replicaVersion: String, modelServersFrom serverVersion: String, endpoint: Int)
        -> AsyncThrowingStream<NodeWatchLine, any Error>
    {
        let path = "/v1/nodes/\(Self.segment(node))/watch?replicaVersion=\(Self.segment(replicaVersion))&modelServerVersion=\(Self.segment(serverVersion))"
        return stream(NodeWatchLine.self, path, endpoint: endpoint)
    }

    /// The ndjson lines of one streaming GET of `path`, decoded as they arrive.
    private func stream<Line: Decodable & Sendable>(_ type: Line.Type, _ path: String, endpoint: Int) -> AsyncThrowingStream<Line, any Error> {
        let (lines, continuation) = AsyncThrowingStream<Line, any Error>.makeStream()
        let state = Locked(WatchConnectionState())
        let decode: @Sendable (Data) -> Void = { line in
            do {
                continuation.yield(try GPUPlaneJSON.decode(Line.self, from: line))
            } catch {
                continuation.finish(throwing: NodeAPIError(
                    code: .decoding, message: "\(error)", body: String(decoding: line.prefix(2000), as: UTF8.self), path: path))
            }
        }
        let cancel = http.stream(
            request(.get, path, body: nil, timeout: nil, endpoint: endpoint),
            onData: { bytes in
                let complete = state.withLock { state -> [Data] in
                    state.lastData = .now
                    return state.splitter.append(bytes)
                }
                complete.forEach(decode)
            },
            completion: { result in
                state.withLock { $0.splitter.flush() }.map(decode)
                let (idle, moved) = state.withLock { ($0.idledOut, $0.moved) }
                switch result {
                case .success:
                    continuation.finish()
                case .failure where moved:
                    // Calls went to another api-server: the caller resumes there.
                    continuation.finish()
                case .failure where idle:
                    continuation.finish(throwing: NodeAPIError(code: .timeout, message: "the watch sent nothing; reconnecting", path: path))
                case .failure(let error) where error.code == .httpStatus:
                    if let response = error.response {
                        continuation.finish(throwing: Self.failure(response, path: path))
                    } else {
                        continuation.finish(throwing: Self.transportError(error, path: path))
                    }
                case .failure(let error):
                    continuation.finish(throwing: Self.transportError(error, path: path))
                }
            })
        // Every quarter of the idle timeout: a watch that sent nothing for that long is dropped
        // (it throws ``NodeAPIError/Code/timeout``), and one on an api-server calls no longer go
        // to (the client moved on, or back to its own) ends, so that the node's connections
        // follow its calls (an api-server's memory is mostly per connection).
        let idleTimeout = configuration.watchIdleTimeout
        let checker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: idleTimeout / 4)
                let elsewhere = self.map { $0.currentEndpoint != endpoint } ?? false
                let end = state.withLock { state -> Bool in
                    if ContinuousClock.now - state.lastData > idleTimeout {
                        state.idledOut = true
                    } else if elsewhere {
                        state.moved = true
                    }
                    return state.idledOut || state.moved
                }
                if end {
                    cancel()
                    return
                }
            }
        }
        continuation.onTermination = { _ in
            checker.cancel()
            cancel()
        }
        return lines
    }

    /// The replicas bound to this node, kept current for as long as the sequence is iterated:
    /// first ``ReplicaChange/listed(_:)``, then each change. A dropped watch resumes from the
    /// last resourceVersion it saw (bookmarks included), so nothing is missed or repeated; a
    /// 410 (compacted) lists again; failures are retried with doubling pauses up to
    /// ``NodeAPI/Configuration/watchMaxBackoff``. Ends only when iteration ends.
    public func replicaChanges() -> AsyncStream<ReplicaChange> {
        changes(Replica.self, "/v1/replicas")
    }

    /// The model servers bound to this node, kept current like ``replicaChanges()``.
    public func modelServerChanges() -> AsyncStream<ModelServerChange> {
        changes(ModelServer.self, "/v1/modelservers")
    }

    /// The objects of `collection` this node may see, kept current; see ``replicaChanges()``.
    public func changes<R: Resource>(_ type: R.Type, _ collection: String) -> AsyncStream<ResourceChange<R>> {
        let (changes, continuation) = AsyncStream<ResourceChange<R>>.makeStream()
        let task = Task { [self] in
            await self.follow(R.self, collection) { continuation.yield($0) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return changes
    }

    /// The pauses between a watch's reconnections: doubling from retryBackoff to
    /// watchMaxBackoff, jittered like every retry of the agent, so the watches of a fleet that
    /// lost the same api-server reconnect spread, not in one wave.
    fileprivate var reconnectPolicy: CurlHTTP.RetryPolicy {
        CurlHTTP.RetryPolicy(
            attempts: .max, firstDelay: configuration.retryBackoff, maxDelay: configuration.watchMaxBackoff,
            jitter: NodeAPI.Configuration.retryJitter)
    }

    /// Follows `collection` until cancelled; see ``replicaChanges()``.
    private func follow<R: Resource>(_ type: R.Type, _ collection: String, _ yield: (ResourceChange<R>) -> Void) async {
        var resourceVersion: String?
        var reconnects = WatchReconnects(policy: reconnectPolicy)
        while !Task.isCancelled {
            guard let from = resourceVersion else {
                do {
                    let list = try await call(.get, collection, as: WatchableList<R>.self)
                    yield(.listed(list.items))
                    resourceVersion = list.resourceVersion
                    reconnects.reset()
                } catch {
                    if error.code == .cancelled { break }
                    logger.warning("cannot list \(R.kind.rawValue); retrying", metadata: ["error": "\(error)"])
                    await reconnects.pause()
                }
                continue
            }
            let endpoint = currentEndpoint
            do {
                for try await line in watch(R.self, collection, from: from, endpoint: endpoint) {
                    reconnects.reset()
                    try Self.take(line, &resourceVersion, path: collection, yield)
                }
                logger.debug("\(R.kind.rawValue) watch ended; resuming", metadata: ["resourceVersion": "\(resourceVersion ?? "")"])
            } catch let error as NodeAPIError where error.code == .gone {
                logger.notice("\(R.kind.rawValue) watch is too old; listing again", metadata: ["resourceVersion": "\(from)"])
                resourceVersion = nil
            } catch {
                if Task.isCancelled { break }
                logger.info("\(R.kind.rawValue) watch dropped; resuming", metadata: ["error": "\(error)", "resourceVersion": "\(resourceVersion ?? "")"])
                // Resumed on the next api-server when this one did not answer: the versions are
                // etcd's, the same on every api-server.
                if let error = error as? NodeAPIError, error.code == .unavailable { endpointFailed(endpoint) }
                await reconnects.pause()
            }
        }
    }
}

extension NodeAPI.Client {
    /// One line of a kind's watch: its change yielded, `version` moved to it.
    /// - Throws: for an ERROR line: ``NodeAPIError/Code/gone`` for a 410 (list again),
    ///   ``NodeAPIError/Code/unavailable`` otherwise (reconnect).
    fileprivate static func take<R: Resource>(
        _ line: ResourceWatchLine<R>, _ version: inout String?, path: String, _ yield: (ResourceChange<R>) -> Void
    ) throws(NodeAPIError) {
        switch line.type {
        case .bookmark:
            break
        case .added, .modified:
            if let object = line.object { yield(.upserted(object)) }
        case .deleted:
            if let object = line.object { yield(.deleted(object)) }
        case .error:
            let failure = line.error
            throw NodeAPIError(
                code: failure?.code == 410 ? .gone : .unavailable, message: failure?.message ?? "watch error",
                httpStatus: failure?.code, path: path)
        }
        if let next = line.resourceVersion { version = next }
    }

    /// ``take(_:_:path:_:)``, its ERROR returned (nil: none); for a 410 `version` is
    /// forgotten, so that the kind is listed again.
    private static func takeOrForget<R: Resource>(
        _ line: ResourceWatchLine<R>, _ version: inout String?, path: String, _ yield: (ResourceChange<R>) -> Void
    ) -> NodeAPIError? {
        do {
            try take(line, &version, path: path, yield)
            return nil
        } catch {
            if error.code == .gone { version = nil }
            return error
        }
    }

    /// Everything bound to `node`, its replicas and its model servers, kept current for as long
    /// as the sequence is iterated, over one connection (`GET /v1/nodes/{name}/watch`): an
    /// api-server's memory is mostly per connection, and a fleet's nodes hold theirs for
    /// life. Each kind is first ``ResourceChange/listed(_:)`` (`GET /v1/replicas`,
    /// `GET /v1/modelservers`), then changed, as ``replicaChanges()`` and
    /// ``modelServerChanges()`` tell them; a dropped stream resumes each kind from its own
    /// last version, a 410 lists that kind again. The api-servers must have the route: they
    /// are upgraded before the agents (docs/operations.md).
    public func workloadChanges(node: String) -> AsyncStream<WorkloadChange> {
        let (changes, continuation) = AsyncStream<WorkloadChange>.makeStream()
        let task = Task { [self] in
            await self.followNode(node) { continuation.yield($0) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return changes
    }

    private func followNode(_ node: String, _ yield: (WorkloadChange) -> Void) async {
        var replicaVersion: String?
        var serverVersion: String?
        var reconnects = WatchReconnects(policy: reconnectPolicy)
        while !Task.isCancelled {
            do {
                if replicaVersion == nil {
                    let list = try await call(.get, "/v1/replicas", as: WatchableList<Replica>.self)
                    yield(.replicas(.listed(list.items)))
                    replicaVersion = list.resourceVersion
                }
                if serverVersion == nil {
                    let list = try await call(.get, "/v1/modelservers", as: WatchableList<ModelServer>.self)
                    yield(.modelServers(.listed(list.items)))
                    serverVersion = list.resourceVersion
                }
            } catch {
                if error.code == .cancelled || Task.isCancelled { break }
                logger.warning("cannot list the node's workloads; retrying", metadata: ["error": "\(error)"])
                await reconnects.pause()
                continue
            }
            guard let replicasFrom = replicaVersion, let serversFrom = serverVersion else { continue }
            let endpoint = currentEndpoint
            do {
                lines: for try await line in watchNode(node, replicasFrom: replicasFrom, modelServersFrom: serversFrom, endpoint: endpoint) {
                    reconnects.reset()
                    // One kind's ERROR ends the stream: a compacted kind (410) is listed again and
                    // the other resumes; any other is a dropped watch.
                    let failure: NodeAPIError? =
                        switch line {
                        case .replicas(let line): Self.takeOrForget(line, &replicaVersion, path: "/v1/replicas") { yield(.replicas($0)) }
                        case .modelServers(let line): Self.takeOrForget(line, &serverVersion, path: "/v1/modelservers") { yield(.modelServers($0)) }
                        case .other: nil
                        }
                    if let failure {
                        if failure.code == .gone {
                            logger.notice("a kind of the node watch is too old; listing it again", metadata: ["error": "\(failure)"])
                            break lines
                        }
                        throw failure
                    }
                }
                logger.debug("node watch ended; resuming", metadata: ["replicaVersion": "\(replicaVersion ?? "")", "modelServerVersion": "\(serverVersion ?? "")"])
            } catch {
                if Task.isCancelled { break }
                logger.info("node watch dropped; resuming", metadata: ["error": "\(error)", "replicaVersion": "\(replicaVersion ?? "")"])
                // Resumed on the next api-server when this one did not answer: the versions are
                // etcd's, the same on every api-server.
                if let error = error as? NodeAPIError, error.code == .unavailable { endpointFailed(endpoint) }
                await reconnects.pause()
            }
        }
    }
}

/// A watch's reconnections: each pause longer than the last (up to `watch-max-backoff`),
/// until a line comes through again.
struct WatchReconnects {
    let policy: CurlHTTP.RetryPolicy
    private var failures = 0

    init(policy: CurlHTTP.RetryPolicy) { self.policy = policy }

    /// Waits out the next pause.
    mutating func pause() async {
        try? await Task.sleep(for: policy.delay(after: failures))
        failures += 1
    }

    /// The watch works again: the next pause is the first.
    mutating func reset() { failures = 0 }
}

/// What one watch connection's callbacks share.
struct WatchConnectionState {
    var splitter = JSONLineSplitter()
    var lastData = ContinuousClock.now
    var idledOut = false
    /// Ended because calls go to another api-server now.
    var moved = false
}
