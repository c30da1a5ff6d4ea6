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
    /// sequence ends when the server ends the stream and throws ``NodeAPIError`` otherwise
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
        let path = "\(collection)?watch=true&resourceVersion=\(Self.segment(resourceVersion))"
        let (lines, continuation) = AsyncThrowingStream<ResourceWatchLine<R>, any Error>.makeStream()
        let state = Locked(WatchConnectionState())
        let decode: @Sendable (Data) -> Void = { line in
            do {
                continuation.yield(try GPUPlaneJSON.decode(ResourceWatchLine<R>.self, from: line))
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
                let idle = state.withLock { $0.idledOut }
                switch result {
                case .success:
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
        let idleTimeout = configuration.watchIdleTimeout
        let checker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: idleTimeout / 4)
                let idle = state.withLock { state -> Bool in
                    guard ContinuousClock.now - state.lastData > idleTimeout else { return false }
                    state.idledOut = true
                    return true
                }
                if idle {
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
        let task = Task { [self] in await self.follow(R.self, collection, continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return changes
    }

    private func follow<R: Resource>(
        _ type: R.Type, _ collection: String, _ continuation: AsyncStream<ResourceChange<R>>.Continuation
    ) async {
        var resourceVersion: String?
        // Doubling from retryBackoff to watchMaxBackoff, jittered like every retry of the agent:
        // the watches of a fleet that lost the same api-server reconnect spread, not in one wave.
        let reconnects = CurlHTTP.RetryPolicy(
            attempts: .max, firstDelay: configuration.retryBackoff, maxDelay: configuration.watchMaxBackoff,
            jitter: NodeAPI.Configuration.retryJitter)
        var failures = 0
        func pause() async {
            try? await Task.sleep(for: reconnects.delay(after: failures))
            failures += 1
        }
        while !Task.isCancelled {
            guard let from = resourceVersion else {
                do {
                    let list = try await call(.get, collection, as: WatchableList<R>.self)
                    continuation.yield(.listed(list.items))
                    resourceVersion = list.resourceVersion
                    failures = 0
                } catch {
                    if error.code == .cancelled { break }
                    logger.warning("cannot list \(R.kind.rawValue); retrying", metadata: ["error": "\(error)"])
                    await pause()
                }
                continue
            }
            let endpoint = currentEndpoint
            do {
                for try await line in watch(R.self, collection, from: from, endpoint: endpoint) {
                    failures = 0
                    switch line.type {
                    case .bookmark:
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .added, .modified:
                        if let object = line.object { continuation.yield(.upserted(object)) }
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .deleted:
                        if let object = line.object { continuation.yield(.deleted(object)) }
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .error:
                        let failure = line.error
                        throw NodeAPIError(
                            code: failure?.code == 410 ? .gone : .unavailable, message: failure?.message ?? "watch error",
                            httpStatus: failure?.code, path: collection)
                    }
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
                await pause()
            }
        }
        continuation.finish()
    }
}

/// What one watch connection's callbacks share.
struct WatchConnectionState {
    var splitter = JSONLineSplitter()
    var lastData = ContinuousClock.now
    var idledOut = false
}
