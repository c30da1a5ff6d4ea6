import CurlHTTP
import Foundation
import GPUPlaneCore

/// A list of replicas and the resourceVersion to watch from.
public struct ReplicaList: Decodable, Sendable {
    /// The replicas bound to this node.
    public var items: [Replica]
    /// The store revision the list was read at.
    public var resourceVersion: String
}

/// One line of a replica watch.
public struct ReplicaWatchLine: Decodable, Sendable {
    /// The kinds of line.
    public enum Kind: String, Decodable, Sendable {
        /// A replica became bound to this node (or was listed).
        case added = "ADDED"
        /// A replica bound here changed.
        case modified = "MODIFIED"
        /// A replica was deleted or is no longer bound here.
        case deleted = "DELETED"
        /// Nothing changed up to ``ReplicaWatchLine/resourceVersion``.
        case bookmark = "BOOKMARK"
        /// The stream failed; see ``ReplicaWatchLine/error``.
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
    /// The replica, for ADDED, MODIFIED and DELETED.
    public var object: Replica?
    /// The revision this line brings the watcher to.
    public var resourceVersion: String?
    /// The failure, for ERROR.
    public var error: Failure?
}

/// What the resumable watch tells: a full list (at start, and after a 410), then changes.
public enum ReplicaChange: Sendable {
    /// Every replica bound to this node now; replaces whatever was known.
    case listed([Replica])
    /// A replica bound to this node was added or changed.
    case upserted(Replica)
    /// A replica is deleted or no longer bound to this node.
    case deleted(Replica)
}

extension NodeAPI.Client {
    /// The replicas bound to this node, across tenants. Maps to `GET /v1/replicas`.
    public func listReplicas() async throws(NodeAPIError) -> ReplicaList {
        try await call(.get, "/v1/replicas", as: ReplicaList.self)
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
        let path = "/v1/replicas?watch=true&resourceVersion=\(Self.segment(resourceVersion))"
        let (lines, continuation) = AsyncThrowingStream<ReplicaWatchLine, any Error>.makeStream()
        let state = EngineLock(WatchConnectionState())
        let decode: @Sendable (Data) -> Void = { line in
            do {
                continuation.yield(try GPUPlaneJSON.decoder().decode(ReplicaWatchLine.self, from: line))
            } catch {
                continuation.finish(throwing: NodeAPIError(
                    code: .decoding, message: "\(error)", body: String(decoding: line.prefix(2000), as: UTF8.self), path: path))
            }
        }
        let cancel = http.stream(
            request(.get, path, body: nil, timeout: nil),
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
        let (changes, continuation) = AsyncStream<ReplicaChange>.makeStream()
        let task = Task { [self] in await self.followReplicas(continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return changes
    }

    private func followReplicas(_ continuation: AsyncStream<ReplicaChange>.Continuation) async {
        var resourceVersion: String?
        var backoff = configuration.retryBackoff
        let maxBackoff = configuration.watchMaxBackoff
        func pause() async {
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, maxBackoff)
        }
        while !Task.isCancelled {
            guard let from = resourceVersion else {
                do {
                    let list = try await listReplicas()
                    continuation.yield(.listed(list.items))
                    resourceVersion = list.resourceVersion
                    backoff = configuration.retryBackoff
                } catch {
                    if error.code == .cancelled { break }
                    logger.warning("cannot list replicas; retrying", metadata: ["error": "\(error)"])
                    await pause()
                }
                continue
            }
            do {
                for try await line in watchReplicas(from: from) {
                    backoff = configuration.retryBackoff
                    switch line.type {
                    case .bookmark:
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .added, .modified:
                        if let replica = line.object { continuation.yield(.upserted(replica)) }
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .deleted:
                        if let replica = line.object { continuation.yield(.deleted(replica)) }
                        if let version = line.resourceVersion { resourceVersion = version }
                    case .error:
                        let failure = line.error
                        throw NodeAPIError(
                            code: failure?.code == 410 ? .gone : .unavailable, message: failure?.message ?? "watch error",
                            httpStatus: failure?.code, path: "/v1/replicas")
                    }
                }
                logger.debug("replica watch ended; resuming", metadata: ["resourceVersion": "\(resourceVersion ?? "")"])
            } catch let error as NodeAPIError where error.code == .gone {
                logger.notice("replica watch is too old; listing again", metadata: ["resourceVersion": "\(from)"])
                resourceVersion = nil
            } catch {
                if Task.isCancelled { break }
                logger.info("replica watch dropped; resuming", metadata: ["error": "\(error)", "resourceVersion": "\(resourceVersion ?? "")"])
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
