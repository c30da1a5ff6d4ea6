#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import GPUPlaneSystem

extension Etcd {
    /// One change seen by a watch.
    public struct WatchEvent: Sendable, Hashable, Decodable {
        /// A write or a deletion.
        public enum EventType: String, Sendable, Hashable {
            /// The key was created or changed.
            case put = "PUT"
            /// The key was deleted (or its lease expired).
            case delete = "DELETE"
        }
        /// What happened.
        public var type: EventType
        /// The key after the change; for a delete, the key with `modRevision` = the deletion's
        /// revision and an empty value.
        public var kv: KeyValue
        /// The key before the change, when the watch asked for it and it existed.
        public var prevKV: KeyValue?

        /// Makes an event (mostly for tests).
        public init(type: EventType, kv: KeyValue, prevKV: KeyValue? = nil) {
            self.type = type
            self.kv = kv
            self.prevKV = prevKV
        }

        /// The revision of the change.
        public var revision: Int64 { kv.modRevision }

        enum CodingKeys: String, CodingKey { case type, kv, prevKV = "prev_kv" }
        /// Decodes the gateway's JSON (PUT, the zero value, is left out).
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let raw = try c.decodeIfPresent(String.self, forKey: .type) ?? "PUT"
            type = raw == "DELETE" || raw == "1" ? .delete : .put
            kv = try c.decodeIfPresent(KeyValue.self, forKey: .kv) ?? KeyValue(key: Data())
            prevKV = try c.decodeIfPresent(KeyValue.self, forKey: .prevKV)
        }
    }

    /// A batch of events from a watch, in revision order, or a progress notification.
    public struct WatchResponse: Sendable, Hashable {
        /// The header; `header.revision` is the store's revision when the batch was sent.
        public var header: ResponseHeader
        /// The events, strictly after every event of earlier batches; empty for a progress
        /// notification.
        public var events: [WatchEvent]
        /// Whether this is a progress notification: every change up to `header.revision` has
        /// been delivered.
        public var isProgressNotify: Bool { events.isEmpty }

        /// Makes a response (mostly for tests).
        public init(header: ResponseHeader, events: [WatchEvent]) {
            self.header = header
            self.events = events
        }
    }

    /// What a watch follows.
    public struct WatchOptions: Sendable, Hashable {
        /// The key, prefix or range.
        public var range: KeyRange
        /// The first revision to deliver; 0 for "changes after now".
        public var startRevision: Int64
        /// Ask for each event's previous key-value.
        public var prevKV: Bool
        /// Ask etcd for periodic progress notifications and deliver them as empty batches.
        public var progressNotify: Bool

        /// Makes watch options.
        public init(_ range: KeyRange, startRevision: Int64 = 0, prevKV: Bool = false, progressNotify: Bool = false) {
            self.range = range
            self.startRevision = startRevision
            self.prevKV = prevKV
            self.progressNotify = progressNotify
        }
    }
}

/// The body of `POST /v3/watch`.
private struct WatchCreate: Encodable {
    struct Create: Encodable {
        var key: Data
        var rangeEnd: Data?
        var startRevision: String?
        var progressNotify: Bool?
        var prevKV: Bool?
        enum CodingKeys: String, CodingKey {
            case key, rangeEnd = "range_end", startRevision = "start_revision"
            case progressNotify = "progress_notify", prevKV = "prev_kv"
        }
    }
    var createRequest: Create
    enum CodingKeys: String, CodingKey { case createRequest = "create_request" }
}

/// One `result` of the watch stream.
private struct WatchResult: Decodable {
    var header: Etcd.ResponseHeader
    var created: Bool
    var canceled: Bool
    var compactRevision: Int64
    var cancelReason: String?
    var events: [Etcd.WatchEvent]

    enum CodingKeys: String, CodingKey {
        case header, created, canceled, compactRevision = "compact_revision", cancelReason = "cancel_reason", events
    }
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        header = try c.decodeIfPresent(Etcd.ResponseHeader.self, forKey: .header) ?? Etcd.ResponseHeader()
        created = try c.decodeIfPresent(Bool.self, forKey: .created) ?? false
        canceled = try c.decodeIfPresent(Bool.self, forKey: .canceled) ?? false
        compactRevision = try c.wireInt64(.compactRevision)
        cancelReason = try c.decodeIfPresent(String.self, forKey: .cancelReason)
        events = try c.decodeIfPresent([Etcd.WatchEvent].self, forKey: .events) ?? []
    }
}

extension Etcd.Client {
    /// Watches a key, prefix or range. Maps to `POST /v3/watch` (a `create_request`, then a
    /// stream of `{"result": …}` lines).
    ///
    /// The sequence never loses, repeats or reorders an event: when the stream drops or its
    /// member fails, the watch reconnects (to the next member when needed) from the last
    /// delivered revision + 1, and drops anything at or below a revision it already delivered.
    /// Progress notifications advance the resume revision. The sequence ends by throwing
    /// ``EtcdError`` with code ``EtcdError/Code/compacted`` (and `compactRevision`) when the
    /// revision it must resume from was compacted: list again and watch from the list's revision.
    /// It ends without error when the consuming task is cancelled or stops iterating.
    public func watch(_ options: Etcd.WatchOptions) -> AsyncThrowingStream<Etcd.WatchResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Etcd.WatchResponse, any Error>.makeStream()
        let task = Task { [self] in
            await self.runWatch(options, continuation)
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Watches `range` from `startRevision` (0: from now). See ``watch(_:)-(Etcd.WatchOptions)``.
    public func watch(
        _ range: Etcd.KeyRange, startRevision: Int64 = 0, prevKV: Bool = false, progressNotify: Bool = false
    ) -> AsyncThrowingStream<Etcd.WatchResponse, any Error> {
        watch(Etcd.WatchOptions(range, startRevision: startRevision, prevKV: prevKV, progressNotify: progressNotify))
    }

    private func runWatch(
        _ options: Etcd.WatchOptions, _ continuation: AsyncThrowingStream<Etcd.WatchResponse, any Error>.Continuation
    ) async {
        // Every event at or below `delivered` has been handed to the caller. Locked: a quiet
        // stream's check (another task) compares the keys' latest write with it.
        let delivered = Locked<Int64>(options.startRevision > 0 ? options.startRevision - 1 : -1)
        var failures = 0
        while !Task.isCancelled {
            let index = currentEndpointIndex
            let endpoint = configuration.endpoints[index]
            let resume = delivered.withLock { $0 }
            let create = WatchCreate(
                createRequest: .init(
                    key: options.range.key, rangeEnd: options.range.rangeEnd,
                    startRevision: resume >= 0 ? String(resume + 1) : nil,
                    progressNotify: options.progressNotify ? true : nil, prevKV: options.prevKV ? true : nil))
            let body: Data
            do { body = try encode(create) } catch {
                continuation.finish(throwing: error)
                return
            }
            let stream = openLineStream(endpoint: endpoint, path: "/v3/watch", body: body)
            var terminal: (any Error)?
            var finished = false
            // A quiet stream owes nothing when no key of its range was written after what it
            // delivered (deletions do not show: a stream that owes only those waits for a write).
            let quietCheck: @Sendable () async -> QuietStream = { [self] in
                let since = delivered.withLock { $0 }
                guard since >= 0 else { return .upToDate }  // not created yet: the request's own timeout
                return await keysChanged(options.range, after: since, at: endpoint)
            }
            let ended = await consume(stream, endpoint: endpoint, quietCheck: quietCheck) { line in
                let decoded: StreamLine<WatchResult>
                do { decoded = try decode(StreamLine<WatchResult>.self, from: line) } catch {
                    terminal = error
                    return false
                }
                if let e = decoded.error {
                    let error = Self.gatewayError(
                        grpcCode: e.grpcCode ?? GRPCStatus.unknown, message: e.message ?? "", status: e.httpCode,
                        body: String(decoding: line, as: UTF8.self))
                    if !Self.isRetriable(error) { terminal = error }
                    return false
                }
                guard let result = decoded.result else { return true }
                if result.compactRevision > 0 {
                    terminal = EtcdError.compacted(result.compactRevision)
                    return false
                }
                if result.canceled {
                    // Cancelled for another reason (e.g. the member lost its leader): reconnect.
                    logger.info("etcd watch cancelled by member", metadata: ["reason": "\(result.cancelReason ?? "")"])
                    return false
                }
                if result.created {
                    failures = 0
                    // A watch from "now" starts after the revision the member had when it was created.
                    delivered.withLock { if $0 < 0 { $0 = result.header.revision } }
                    return true
                }
                if result.events.isEmpty {
                    // Progress notification: every change up to header.revision was sent.
                    delivered.withLock { $0 = max($0, result.header.revision) }
                    if options.progressNotify,
                        case .terminated = continuation.yield(Etcd.WatchResponse(header: result.header, events: []))
                    {
                        finished = true
                        return false
                    }
                    return true
                }
                var kept: [Etcd.WatchEvent] = []
                kept.reserveCapacity(result.events.count)
                let before = delivered.withLock { $0 }
                var floor = before
                for event in result.events where event.kv.modRevision > before && event.kv.modRevision >= floor {
                    kept.append(event)
                    floor = event.kv.modRevision
                }
                if kept.count != result.events.count {
                    logger.debug("etcd watch dropped replayed events", metadata: ["dropped": "\(result.events.count - kept.count)"])
                }
                guard !kept.isEmpty else { return true }
                delivered.withLock { $0 = floor }
                if case .terminated = continuation.yield(Etcd.WatchResponse(header: result.header, events: kept)) {
                    finished = true
                    return false
                }
                return true
            }
            if finished || Task.isCancelled {
                continuation.finish()
                return
            }
            if let terminal {
                continuation.finish(throwing: terminal)
                return
            }
            if let ended = ended as? EtcdError, ended.code != .cancelled, !Self.isRetriable(ended) {
                continuation.finish(throwing: ended)
                return
            }
            endpointFailed(index)
            do { try await backoff(min(failures, 5)) } catch {
                continuation.finish()
                return
            }
            failures += 1
            logger.debug("etcd watch reconnecting", metadata: ["from": "\(endpoint)", "resume": "\(delivered.withLock { $0 } + 1)"])
        }
        continuation.finish()
    }
}
