#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch
import GPUPlaneSystem

extension Etcd {
    /// A granted lease.
    public struct LeaseGrant: Sendable, Hashable, Decodable {
        /// The header.
        public var header: ResponseHeader
        /// The lease id.
        public var id: Int64
        /// Its time to live, in seconds, as granted.
        public var ttl: Int64

        enum CodingKeys: String, CodingKey { case header, id = "ID", ttl = "TTL" }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            id = try c.wireInt64(.id)
            ttl = try c.wireInt64(.ttl)
        }
    }

    /// A lease's remaining time.
    public struct LeaseTimeToLive: Sendable, Hashable, Decodable {
        /// The header.
        public var header: ResponseHeader
        /// The lease id.
        public var id: Int64
        /// Seconds left.
        public var ttl: Int64
        /// The TTL it was granted with.
        public var grantedTTL: Int64
        /// The keys attached to it, when asked for.
        public var keys: [Data]

        enum CodingKeys: String, CodingKey { case header, id = "ID", ttl = "TTL", grantedTTL, keys }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            id = try c.wireInt64(.id)
            ttl = try c.wireInt64(.ttl)
            grantedTTL = try c.wireInt64(.grantedTTL)
            keys = try c.decodeIfPresent([Data].self, forKey: .keys) ?? []
        }
    }

    /// The answer to one renewal.
    public struct LeaseKeepAliveResponse: Sendable, Hashable, Decodable {
        /// The header.
        public var header: ResponseHeader
        /// The lease id.
        public var id: Int64
        /// The renewed time to live; 0 when the lease no longer exists.
        public var ttl: Int64

        enum CodingKeys: String, CodingKey { case header, id = "ID", ttl = "TTL" }
        /// Decodes the gateway's JSON.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            header = try c.decodeIfPresent(ResponseHeader.self, forKey: .header) ?? ResponseHeader()
            id = try c.wireInt64(.id)
            ttl = try c.wireInt64(.ttl)
        }
    }
}

private struct LeaseID: Encodable {
    var id: Int64
    var keys: Bool?
    enum CodingKeys: String, CodingKey { case id = "ID", keys }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(String(id), forKey: .id)
        try c.encodeIfPresent(keys, forKey: .keys)
    }
}

extension Etcd.Client {
    /// Grants a lease of `ttl` seconds (`id` 0: etcd picks the id). Maps to
    /// `POST /v3/lease/grant`. Retried only when the request never reached a member.
    public func grantLease(ttl: Int64, id: Int64 = 0) async throws -> Etcd.LeaseGrant {
        struct Body: Encodable {
            var ttl: String
            var id: String
            enum CodingKeys: String, CodingKey { case ttl = "TTL", id = "ID" }
        }
        return try await call("/v3/lease/grant", Body(ttl: String(ttl), id: String(id)), retry: .onlyIfNotSent)
    }

    /// Revokes a lease, deleting its keys. Maps to `POST /v3/lease/revoke`.
    /// - Throws: ``EtcdError/Code/leaseNotFound`` when it does not exist.
    public func revokeLease(_ id: Int64) async throws {
        do {
            _ = try await call("/v3/lease/revoke", LeaseID(id: id), retry: .onlyIfNotSent, as: HeaderOnlyResponse.self)
        } catch let error as EtcdError where error.grpcCode == GRPCStatus.notFound {
            throw EtcdError.leaseNotFound(id)
        }
    }

    /// A lease's remaining time. Maps to `POST /v3/kv/lease/timetolive` (3.4 serves it there
    /// and at `/v3/lease/timetolive`).
    /// - Throws: ``EtcdError/Code/leaseNotFound`` when it does not exist (etcd answers TTL -1).
    public func leaseTimeToLive(_ id: Int64, keys: Bool = false) async throws -> Etcd.LeaseTimeToLive {
        let answer: Etcd.LeaseTimeToLive = try await call(
            "/v3/kv/lease/timetolive", LeaseID(id: id, keys: keys ? true : nil), retry: .idempotent)
        if answer.ttl < 0 { throw EtcdError.leaseNotFound(id) }
        return answer
    }

    /// Renews a lease once. Maps to `POST /v3/lease/keepalive` with a single request; the
    /// member answers once and closes the stream.
    /// - Throws: ``EtcdError/Code/leaseNotFound`` when it does not exist (etcd answers TTL 0).
    public func keepAliveOnce(_ id: Int64) async throws -> Etcd.LeaseKeepAliveResponse {
        let response = try await send("/v3/lease/keepalive", try encode(LeaseID(id: id)), retry: .idempotent)
        return try Self.keepAliveAnswer(response.body, id: id)
    }

    /// The renewal in a keep-alive stream's body (its first line).
    static func keepAliveAnswer(_ body: Data, id: Int64) throws -> Etcd.LeaseKeepAliveResponse {
        var splitter = LineSplitter()
        var lines = body.withUnsafeBytes { splitter.append($0) }
        if let rest = splitter.flush() { lines.append(rest) }
        guard let first = lines.first else { throw EtcdError.decoding("empty keepalive answer", body: "") }
        let line: StreamLine<Etcd.LeaseKeepAliveResponse>
        do {
            line = try JSONDecoder().decode(StreamLine<Etcd.LeaseKeepAliveResponse>.self, from: first)
        } catch {
            throw EtcdError.decoding("\(error)", body: String(decoding: first.prefix(2000), as: UTF8.self))
        }
        if let e = line.error {
            throw Self.gatewayError(
                grpcCode: e.grpcCode ?? GRPCStatus.unknown, message: e.message ?? "", status: e.httpCode,
                body: String(decoding: first, as: UTF8.self))
        }
        guard let result = line.result, result.ttl > 0 else { throw EtcdError.leaseNotFound(id) }
        return result
    }

    /// Keeps a lease alive until the consumer stops iterating (or drops the sequence),
    /// renewing every `ttl / 3` seconds (`POST /v3/lease/keepalive`) and yielding each renewal.
    ///
    /// The renewals run on a thread of their own and go through the HTTP client's own thread,
    /// never waiting for Swift's cooperative pool: CPU-bound or blocking work there cannot
    /// delay them past the lease's TTL (a leader's lease lapsing under load). Only handing
    /// renewals to the consumer needs the pool.
    ///
    /// Failed renewals are retried (on other members) every `ttl / 6`; the sequence throws
    /// ``EtcdError/Code/leaseNotFound`` when etcd says the lease is gone, or when no renewal
    /// succeeded before the last granted TTL ran out: either way the lease must be taken as lost.
    public func keepAlive(_ id: Int64, ttl: Int64) -> AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error>.makeStream()
        let keeper = LeaseKeeper(client: self, id: id, ttl: ttl, continuation: continuation)
        continuation.onTermination = { _ in keeper.stop() }
        keeper.start()
        return stream
    }
}

/// The thread behind ``Etcd/Client/keepAlive(_:ttl:)``.
final class LeaseKeeper: @unchecked Sendable {
    private let client: Etcd.Client
    private let id: Int64
    private let ttl: Int64
    private let continuation: AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error>.Continuation
    private let condition = ConditionLock()
    private var stopped = false  // guarded by condition
    private var abort: (@Sendable () -> Void)?  // guarded by condition

    init(client: Etcd.Client, id: Int64, ttl: Int64, continuation: AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error>.Continuation) {
        self.client = client
        self.id = id
        self.ttl = ttl
        self.continuation = continuation
    }

    func start() {
        SystemThread.start(name: "etcd-keepalive") { [self] in self.run() }
    }

    /// Ends the loop: aborts a renewal in flight and wakes a pause.
    func stop() {
        condition.lock()
        stopped = true
        let abort = self.abort
        condition.broadcast()
        condition.unlock()
        abort?()
    }

    private var isStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopped
    }

    /// Sleeps `duration` unless stopped first; false when stopped.
    private func pause(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        condition.lock()
        defer { condition.unlock() }
        while !stopped {
            let left = deadline - ContinuousClock.now
            if left <= .zero || !condition.wait(timeout: left) { break }
        }
        return !stopped
    }

    private func run() {
        var expiresAt = ContinuousClock.now + .seconds(ttl)
        var currentTTL = ttl
        while !isStopped {
            switch renewOnce(currentTTL: currentTTL, expiresAt: expiresAt) {
            case .success(let renewed):
                currentTTL = renewed.ttl
                expiresAt = ContinuousClock.now + .seconds(renewed.ttl)
                if case .terminated = continuation.yield(renewed) { return }
                if !pause(.milliseconds(max(100, currentTTL * 1000 / 3))) { continuation.finish(); return }
            case .failure(let error) where error.code == .leaseNotFound:
                continuation.finish(throwing: error)
                return
            case .failure(let error) where error.code == .cancelled:
                continuation.finish()
                return
            case .failure(let error):
                if ContinuousClock.now >= expiresAt {
                    var lost = EtcdError.leaseNotFound(id)
                    lost.endpoint = error.endpoint
                    continuation.finish(throwing: lost)
                    return
                }
                client.logger.debug("lease renewal failed; retrying", metadata: ["lease": "\(id)", "error": "\(error)"])
                if !pause(.milliseconds(max(50, currentTTL * 1000 / 6))) { continuation.finish(); return }
            }
        }
        continuation.finish()
    }

    /// One renewal on the member the client prefers, waiting on this thread for the HTTP
    /// client's callback. A member that fails is left for the next one.
    ///
    /// With several members a renewal may take a third of the TTL, so that another member can
    /// still be tried before the lease expires. With one member there is no other to try:
    /// aborting a slow renewal (a loaded member applying a backlog) and sending it again only
    /// loses the work the member had done, so the renewal may take until the lease expires.
    private func renewOnce(currentTTL: Int64, expiresAt: ContinuousClock.Instant) -> Result<Etcd.LeaseKeepAliveResponse, EtcdError> {
        let index = client.currentEndpointIndex
        let endpoint = client.configuration.endpoints[index]
        let body: Data
        do {
            body = try JSONEncoder().encode(LeaseID(id: id))
        } catch {
            return .failure(EtcdError(code: .invalidConfiguration, message: "cannot encode request: \(error)"))
        }
        let third = Duration.milliseconds(max(500, currentTTL * 1000 / 3))
        let limit =
            client.configuration.endpoints.count > 1 ? third : max(third, expiresAt - ContinuousClock.now)
        let timeout = min(client.configuration.requestTimeout, limit)
        let request = client.makeRequest(endpoint: endpoint, path: "/v3/lease/keepalive", body: body, stream: false, timeout: timeout)
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        let abort = client.http.perform(request) { result in
            outcome.set(TransferOutcome(result))
            done.signal()
        }
        condition.lock()
        if stopped {
            condition.unlock()
            abort()
        } else {
            self.abort = abort
            condition.unlock()
        }
        done.wait()
        condition.lock()
        self.abort = nil
        condition.unlock()
        switch outcome.get() {
        case .cancelled, nil:
            return .failure(.cancelled)
        case .failed(let message, _, let timedOut):
            client.endpointFailed(index)
            var error = timedOut ? EtcdError.timeout(message, endpoint: endpoint) : EtcdError.unavailable(message, endpoint: endpoint)
            error.endpoint = endpoint
            return .failure(error)
        case .completed(let response):
            guard response.status == 200 else {
                var error = Etcd.Client.gatewayError(response)
                error.endpoint = endpoint
                if error.code == .unauthenticated {
                    // Token expired: fetch a new one in the background; the next try uses it.
                    let client = self.client
                    Task { try? await client.refreshToken() }
                } else if error.code == .unavailable {
                    client.endpointFailed(index)
                }
                return .failure(error)
            }
            do {
                return .success(try Etcd.Client.keepAliveAnswer(response.body, id: id))
            } catch let error as EtcdError {
                return .failure(error)
            } catch {
                return .failure(EtcdError.decoding("\(error)", body: ""))
            }
        }
    }
}

/// A transfer's outcome handed from the HTTP client's thread to a waiting thread.
private final class OutcomeBox: @unchecked Sendable {
    private let lock = Lock()
    private var value: TransferOutcome?
    func set(_ outcome: TransferOutcome) { lock.withLock { value = outcome } }
    func get() -> TransferOutcome? { lock.withLock { value } }
}
