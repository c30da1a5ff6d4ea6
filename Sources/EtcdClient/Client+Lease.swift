import Foundation

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
        var splitter = LineSplitter()
        var lines = response.body.withUnsafeBytes { splitter.append($0) }
        if let rest = splitter.flush() { lines.append(rest) }
        guard let first = lines.first else { throw EtcdError.decoding("empty keepalive answer", body: "") }
        let line = try decode(StreamLine<Etcd.LeaseKeepAliveResponse>.self, from: first)
        if let e = line.error {
            throw Self.gatewayError(
                grpcCode: e.grpcCode ?? GRPCStatus.unknown, message: e.message ?? "", status: e.httpCode,
                body: String(decoding: first, as: UTF8.self))
        }
        guard let result = line.result, result.ttl > 0 else { throw EtcdError.leaseNotFound(id) }
        return result
    }

    /// Keeps a lease alive until the consumer stops iterating or its task is cancelled,
    /// renewing every `ttl / 3` seconds (`POST /v3/lease/keepalive`) and yielding each renewal.
    ///
    /// Failed renewals are retried (on other members) every `ttl / 6`; the sequence throws
    /// ``EtcdError/Code/leaseNotFound`` when etcd says the lease is gone, or when no renewal
    /// succeeded before the last granted TTL ran out: either way the lease must be taken as lost.
    public func keepAlive(_ id: Int64, ttl: Int64) -> AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error> {
        let (stream, continuation) = AsyncThrowingStream<Etcd.LeaseKeepAliveResponse, any Error>.makeStream()
        let task = Task { [self] in
            var expiresAt = ContinuousClock.now + .seconds(ttl)
            var currentTTL = ttl
            while !Task.isCancelled {
                do {
                    let renewed = try await keepAliveOnce(id)
                    currentTTL = renewed.ttl
                    expiresAt = ContinuousClock.now + .seconds(renewed.ttl)
                    if case .terminated = continuation.yield(renewed) { return }
                    try await Task.sleep(for: .milliseconds(max(100, currentTTL * 1000 / 3)))
                } catch let error as EtcdError where error.code == .leaseNotFound {
                    continuation.finish(throwing: error)
                    return
                } catch let error as EtcdError where error.code == .cancelled {
                    break
                } catch is CancellationError {
                    break
                } catch {
                    if ContinuousClock.now >= expiresAt {
                        var lost = EtcdError.leaseNotFound(id)
                        lost.endpoint = (error as? EtcdError)?.endpoint
                        continuation.finish(throwing: lost)
                        return
                    }
                    try? await Task.sleep(for: .milliseconds(max(50, currentTTL * 1000 / 6)))
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
